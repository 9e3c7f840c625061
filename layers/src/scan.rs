//! Reads an archive's central directory once and either returns a clean extraction plan or
//! every problem found. Nothing is written here.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use crate::limits::Limits;
use crate::path::normalize;
use crate::problem::{Problem, Problems};

/// What an entry becomes on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file.
    File {
        /// Whether any executable bit was set (it becomes 0o755, else 0o644).
        executable: bool,
        /// Declared uncompressed size.
        size: u64,
    },
    /// A symbolic link whose target stays inside the tree.
    Symlink {
        /// The link's target, as stored.
        target: String,
    },
}

/// One entry of a clean archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its index in the archive.
    pub index: usize,
    /// Its normalized relative path.
    pub path: PathBuf,
    /// What it is.
    pub kind: EntryKind,
}

/// A clean archive's extraction plan: entries deduplicated, in archive order.
#[derive(Debug, Clone)]
pub struct Scan {
    /// The archive.
    pub archive: PathBuf,
    /// Its entries.
    pub entries: Vec<Entry>,
    /// The sum of the declared uncompressed sizes.
    pub total_bytes: u64,
}

const UNIX_TYPE_MASK: u32 = 0o170000;
const UNIX_FILE: u32 = 0o100000;
const UNIX_DIR: u32 = 0o040000;
const UNIX_SYMLINK: u32 = 0o120000;
/// Longest symlink target read from an archive.
const MAX_TARGET_BYTES: u64 = 4096;
/// Symlinks followed through one another before a chain is taken for a loop.
const MAX_LINK_DEPTH: usize = 40;

/// Scans `archive`. Returns the plan, or every problem found.
pub fn scan(archive: &Path, limits: &Limits) -> Result<Scan, Problems> {
    let mut problems = Vec::new();
    let whole = |reason: String| Problem {
        archive: archive.to_owned(),
        entry: None,
        reason,
    };
    let file =
        File::open(archive).map_err(|e| Problems(vec![whole(format!("cannot open: {e}"))]))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| {
        Problems(vec![whole(format!(
            "not a readable zip archive (corrupt or truncated?): {e}"
        ))])
    })?;
    if zip.len() > limits.max_entries {
        return Err(Problems(vec![whole(format!(
            "{} entries, more than the limit of {}",
            zip.len(),
            limits.max_entries
        ))]));
    }
    match zip.has_overlapping_files() {
        Ok(false) => {}
        Ok(true) => problems.push(whole(
            "entries share compressed data (an overlapping zip bomb)".into(),
        )),
        Err(e) => problems.push(whole(format!("corrupt central directory: {e}"))),
    }
    let mut entries: Vec<Entry> = Vec::new();
    let mut seen: HashMap<PathBuf, (usize, u32)> = HashMap::new();
    let mut total: u64 = 0;
    let mut over_total = false;
    for index in 0..zip.len() {
        let raw = match zip.by_index_raw(index) {
            Ok(raw) => raw,
            Err(e) => {
                problems.push(whole(format!("entry #{index} is unreadable: {e}")));
                continue;
            }
        };
        let name = String::from_utf8_lossy(raw.name_raw()).into_owned();
        let problem = |reason: String| Problem {
            archive: archive.to_owned(),
            entry: Some(name.clone()),
            reason,
        };
        // The raw bytes, not the reader's decoding: it falls back to CP437 for names without
        // the UTF-8 flag, which would turn any byte soup into some name.
        let Ok(utf8) = std::str::from_utf8(raw.name_raw()).map(str::to_owned) else {
            problems.push(problem("name is not valid UTF-8".into()));
            continue;
        };
        if utf8.len() > limits.max_path_bytes {
            problems.push(problem(format!(
                "name is longer than {} bytes",
                limits.max_path_bytes
            )));
            continue;
        }
        let path = match normalize(&utf8) {
            Ok(path) => path,
            Err(reason) => {
                problems.push(problem(reason.into()));
                continue;
            }
        };
        let mode = raw.unix_mode();
        let unix_type = mode.map_or(0, |m| m & UNIX_TYPE_MASK);
        let (size, compressed, crc) = (raw.size(), raw.compressed_size(), raw.crc32());
        let is_symlink = raw.is_symlink() || unix_type == UNIX_SYMLINK;
        let is_dir = raw.is_dir() || unix_type == UNIX_DIR;
        drop(raw);
        if !is_symlink && !is_dir && unix_type != 0 && unix_type != UNIX_FILE {
            problems.push(problem("is a device file, FIFO or socket".into()));
            continue;
        }
        if size >= limits.ratio_floor_bytes && size > compressed.saturating_mul(limits.max_ratio) {
            problems.push(problem(format!(
                "compression ratio {}:1 is past the bomb threshold of {}:1",
                size / compressed.max(1),
                limits.max_ratio
            )));
            continue;
        }
        total = total.saturating_add(size);
        if total > limits.max_unzipped_bytes && !over_total {
            over_total = true;
            problems.push(problem(format!(
                "unzipped size passes the limit of {} bytes here",
                limits.max_unzipped_bytes
            )));
        }
        let kind = if is_dir {
            EntryKind::Dir
        } else if is_symlink {
            match read_target(&mut zip, index) {
                Ok(target) => EntryKind::Symlink { target },
                Err(reason) => {
                    problems.push(problem(reason));
                    continue;
                }
            }
        } else {
            // No mode (archives made on Windows): `bootstrap` and `bin/*` must still run.
            let executable = match mode {
                Some(m) if unix_type != 0 || m != 0 => m & 0o111 != 0,
                _ => path == Path::new("bootstrap") || path.parent() == Some(Path::new("bin")),
            };
            EntryKind::File { executable, size }
        };
        // A name stored twice is fine when both agree; extraction keeps the first.
        let signature = match &kind {
            EntryKind::Dir => 0,
            EntryKind::File { .. } => crc ^ 0x5a5a_5a5a,
            EntryKind::Symlink { .. } => crc ^ 0xa5a5_a5a5,
        };
        if let Some(&(first, first_signature)) = seen.get(&path) {
            let agrees = first_signature == signature && entries[first].kind == kind;
            if !agrees {
                problems.push(problem(
                    "duplicate entry that disagrees with an earlier one".into(),
                ));
            }
            continue;
        }
        seen.insert(path.clone(), (entries.len(), signature));
        entries.push(Entry { index, path, kind });
    }
    duplicates_in_directory(archive, &mut problems);
    check_structure(archive, &entries, &mut problems);
    if problems.is_empty() {
        Ok(Scan {
            archive: archive.to_owned(),
            entries,
            total_bytes: total,
        })
    } else {
        Err(Problems(problems))
    }
}

/// The reader indexes entries by name, so a second entry with the same name is invisible
/// through it. The central directory's own records show them: the same name twice is fine when
/// both records agree (CRC and size), refused when they do not.
fn duplicates_in_directory(archive: &Path, problems: &mut Vec<Problem>) {
    let Ok(bytes) = std::fs::read(archive) else {
        return;
    };
    let Some(records) = central_directory(&bytes) else {
        return;
    };
    let mut first: HashMap<&[u8], (u32, u32)> = HashMap::new();
    for (name, crc, size) in records {
        match first.get(name) {
            Some(&seen) if seen != (crc, size) => problems.push(Problem {
                archive: archive.to_owned(),
                entry: Some(String::from_utf8_lossy(name).into_owned()),
                reason: "duplicate entry that disagrees with an earlier one".into(),
            }),
            Some(_) => {}
            None => {
                first.insert(name, (crc, size));
            }
        }
    }
}

/// (name, crc32, uncompressed size) of every record in a classic (non-Zip64) central
/// directory; `None` when it is Zip64 or cannot be read (the reader has judged it already).
fn central_directory(bytes: &[u8]) -> Option<Vec<(&[u8], u32, u32)>> {
    let u16_at = |at: usize| Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
    // The end record is in the last 64 KiB + 22 bytes (its comment is at most 65535 bytes).
    let search_from = bytes.len().saturating_sub(22 + 65_535);
    let end = (search_from..=bytes.len().checked_sub(22)?)
        .rev()
        .find(|&i| u32_at(i) == Some(0x0605_4b50))?;
    let count = usize::from(u16_at(end + 10)?);
    let offset = u32_at(end + 16)?;
    if count == 0xffff || offset == 0xffff_ffff {
        return None;
    }
    let mut at = usize::try_from(offset).ok()?;
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        if u32_at(at)? != 0x0201_4b50 {
            return None;
        }
        let (crc, size) = (u32_at(at + 16)?, u32_at(at + 24)?);
        let name_len = usize::from(u16_at(at + 28)?);
        let extra_len = usize::from(u16_at(at + 30)?);
        let comment_len = usize::from(u16_at(at + 32)?);
        records.push((bytes.get(at + 46..at + 46 + name_len)?, crc, size));
        at += 46 + name_len + extra_len + comment_len;
    }
    Some(records)
}

fn read_target(zip: &mut zip::ZipArchive<File>, index: usize) -> Result<String, String> {
    let entry = zip
        .by_index(index)
        .map_err(|e| format!("unreadable symlink: {e}"))?;
    let mut target = String::new();
    entry
        .take(MAX_TARGET_BYTES + 1)
        .read_to_string(&mut target)
        .map_err(|e| format!("symlink target is unreadable or not UTF-8: {e}"))?;
    if target.len() as u64 > MAX_TARGET_BYTES {
        return Err("symlink target is too long".into());
    }
    Ok(target)
}

/// Checks what only the whole set of entries shows: writes through symlinks, files where a
/// directory is needed, and symlinks whose target leaves the tree (following chains).
fn check_structure(archive: &Path, entries: &[Entry], problems: &mut Vec<Problem>) {
    let kinds: HashMap<&Path, &EntryKind> = entries
        .iter()
        .map(|e| (e.path.as_path(), &e.kind))
        .collect();
    let links: HashMap<&Path, &str> = entries
        .iter()
        .filter_map(|e| match &e.kind {
            EntryKind::Symlink { target } => Some((e.path.as_path(), target.as_str())),
            _ => None,
        })
        .collect();
    for entry in entries {
        let mut problem = |reason: String| {
            problems.push(Problem {
                archive: archive.to_owned(),
                entry: Some(entry.path.display().to_string()),
                reason,
            })
        };
        for ancestor in entry.path.ancestors().skip(1) {
            match kinds.get(ancestor) {
                Some(EntryKind::Symlink { .. }) => {
                    problem(format!(
                        "would be written through the symlink {:?}",
                        ancestor.display().to_string()
                    ));
                    break;
                }
                Some(EntryKind::File { .. }) => {
                    problem(format!(
                        "the file {:?} stands where a directory is needed",
                        ancestor.display().to_string()
                    ));
                    break;
                }
                _ => {}
            }
        }
        if let EntryKind::Symlink { target } = &entry.kind
            && resolve_link(&entry.path, target, &links, 0).is_none()
        {
            problem(format!("symlink target {target:?} leaves the layer's root"));
        }
    }
}

/// Follows the link at `link` to `target` the way the kernel would, component by component,
/// following the archive's own links as they are met (so `q/..` with `q -> .` climbs from the
/// root, not from `q`'s directory). `None` when it leaves the root, is absolute or loops.
fn resolve_link(
    link: &Path,
    target: &str,
    links: &HashMap<&Path, &str>,
    depth: usize,
) -> Option<PathBuf> {
    if depth > MAX_LINK_DEPTH || target.is_empty() || target.starts_with('/') {
        return None;
    }
    let mut at: PathBuf = link.parent()?.to_owned();
    for component in Path::new(target).components() {
        match component {
            Component::Normal(part) => {
                at.push(part);
                if let Some(next) = links.get(at.as_path()) {
                    at = resolve_link(&at, next, links, depth + 1)?;
                }
            }
            Component::CurDir => {}
            Component::ParentDir => {
                if !at.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(at)
}
