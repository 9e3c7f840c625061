//! An ordered list of layer trees becomes `/opt`: later layers win file by file, directories
//! merge, a file or link in a later layer hides whatever an earlier one had at that path (and a
//! directory hides an earlier file), which is what overlayfs shows for the same lower
//! directories. Two forms, one view:
//! - `lowerdirs`, for a read-only overlayfs mount (`lowerdir=` takes the topmost first, so this
//!   is the layer order reversed);
//! - `merged`, one tree of hard links into the layer trees, for backends without overlayfs.
//!   Never copies of file contents when the layers are cached; keyed by a chain hash of the
//!   ordered layers and itself cached.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::cache::{Cache, CacheError, hex, publish};

/// A composed `/opt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Composed {
    /// Overlay lower directories, topmost (last layer) first.
    pub lowerdirs: Vec<PathBuf>,
    /// The merged tree.
    pub merged: PathBuf,
}

/// Composes `layers` (trees, in Lambda's order) into `/opt`. The merged tree is cached under a
/// chain hash of the layers' identities (`ids`, one per layer: a digest for cached archives).
pub fn compose(cache: &Cache, layers: &[(String, PathBuf)]) -> Result<Composed, CacheError> {
    let mut chain = Sha256::new();
    for (id, _) in layers {
        chain.update(id.as_bytes());
        chain.update(b" ");
    }
    let merged = cache.opt_dir(&hex(&chain.finalize()));
    if !merged.is_dir() {
        let work = cache.tmp_dir()?;
        let staged = work.path().join("opt");
        fs::create_dir(&staged).map_err(|source| CacheError::Io {
            path: staged.clone(),
            source,
        })?;
        for (_, tree) in layers {
            overlay_into(tree, &staged).map_err(|source| CacheError::Io {
                path: tree.clone(),
                source,
            })?;
        }
        publish(&staged, &merged)?;
    }
    let name = merged
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let origin = layers
        .iter()
        .map(|(_, tree)| tree.display().to_string())
        .collect::<Vec<_>>()
        .join(" + ");
    cache.record_use(&format!("opt-{name}"), &format!("/opt of {origin}"));
    Ok(Composed {
        lowerdirs: layers.iter().rev().map(|(_, tree)| tree.clone()).collect(),
        merged,
    })
}

/// Lays `layer` over `dest`: later wins, directories merge.
fn overlay_into(layer: &Path, dest: &Path) -> io::Result<()> {
    for entry in fs::read_dir(layer)? {
        let entry = entry?;
        let from = entry.path();
        let to = dest.join(entry.file_name());
        let kind = entry.file_type()?;
        let existing = fs::symlink_metadata(&to).ok();
        if kind.is_dir() {
            match existing {
                Some(m) if m.is_dir() => {}
                Some(_) => {
                    fs::remove_file(&to)?;
                    fs::create_dir(&to)?;
                }
                None => fs::create_dir(&to)?,
            }
            overlay_into(&from, &to)?;
            continue;
        }
        match existing {
            Some(m) if m.is_dir() => fs::remove_dir_all(&to)?,
            Some(_) => fs::remove_file(&to)?,
            None => {}
        }
        if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
        } else {
            match fs::hard_link(&from, &to) {
                // A directory layer on another file system cannot be linked: copy that file.
                Err(e) if e.raw_os_error() == Some(18 /* EXDEV */) => {
                    fs::copy(&from, &to)?;
                }
                other => other?,
            }
        }
    }
    Ok(())
}
