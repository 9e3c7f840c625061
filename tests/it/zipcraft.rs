//! Builds real ZIP archives for tests, including the hostile ones a well-behaved writer refuses
//! to make: the writer produces a valid archive, then the central directory (and local headers)
//! are patched as an attacker would.

use std::io::Write;

use zip::write::SimpleFileOptions;

/// One entry to write.
pub enum Item<'a> {
    File(&'a str, &'a [u8], u32),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
}

/// A valid archive of `items`, in order.
pub fn build(items: &[Item<'_>]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for item in items {
        match item {
            Item::File(name, data, mode) => {
                let options = SimpleFileOptions::default().unix_permissions(*mode);
                zip.start_file(*name, options).unwrap();
                zip.write_all(data).unwrap();
            }
            Item::Dir(name) => zip
                .add_directory(*name, SimpleFileOptions::default())
                .unwrap(),
            Item::Symlink(name, target) => zip
                .add_symlink(*name, *target, SimpleFileOptions::default())
                .unwrap(),
        }
    }
    zip.finish().unwrap().into_inner()
}

/// Sets the full Unix mode (type and all permission bits) of the entry named `name`.
pub fn set_mode(zip: &mut [u8], name: &str, mode: u32) {
    let mut found = false;
    let mut at = 0;
    while let Some(pos) = find(&zip[at..], &[0x50, 0x4b, 0x01, 0x02]) {
        let h = at + pos;
        let name_len = u16::from_le_bytes([zip[h + 28], zip[h + 29]]) as usize;
        if &zip[h + 46..h + 46 + name_len] == name.as_bytes() {
            zip[h + 5] = 3; // made by Unix, so the mode is read
            zip[h + 38..h + 42].copy_from_slice(&(mode << 16).to_le_bytes());
            found = true;
        }
        at = h + 4;
    }
    assert!(found, "no central directory entry named {name}");
}

/// Replaces every occurrence of `from` by `to` (same length): entry names in the local and
/// central headers, to make duplicates or invalid UTF-8.
pub fn patch_bytes(zip: &mut [u8], from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let mut count = 0;
    let mut at = 0;
    while let Some(pos) = find(&zip[at..], from) {
        zip[at + pos..at + pos + to.len()].copy_from_slice(to);
        at += pos + to.len();
        count += 1;
    }
    assert!(count > 0, "nothing to patch");
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Writes `bytes` to `dir/name` and returns the path.
pub fn write(dir: &std::path::Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}
