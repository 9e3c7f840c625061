//! Fuzzes the entry-path rules: whatever bytes a hostile archive names an entry, a path that
//! `normalize` accepts stays under the root, and a symlink destination never climbs out of it.

#![no_main]

use std::path::{Component, Path};

use lamina_layers::path::{normalize, symlink_destination};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (name, target) = text.split_once('|').unwrap_or((&text, ""));
    if let Ok(path) = normalize(name) {
        assert!(path.is_relative());
        assert!(path.components().all(|c| matches!(c, Component::Normal(_))));
        assert!(Path::new("/root").join(&path).starts_with("/root"));
        if let Some(dest) = symlink_destination(&path, target) {
            assert!(dest.components().all(|c| matches!(c, Component::Normal(_))));
        }
    }
});
