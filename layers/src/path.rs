//! Pure path rules for archive entries: no I/O, so they can be fuzzed and property-tested.

use std::path::{Component, Path, PathBuf};

/// Turns an entry name into a relative path of normal components, or says why it cannot be.
/// Refuses NUL bytes, backslashes (Windows separators smuggling `..`), absolute paths and
/// any `..` component, even one that would stay inside.
pub fn normalize(name: &str) -> Result<PathBuf, &'static str> {
    if name.contains('\0') {
        return Err("name contains a NUL byte");
    }
    if name.contains('\\') {
        return Err("name contains a backslash");
    }
    let mut out = PathBuf::new();
    for component in Path::new(name).components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err("name contains a `..` component"),
            Component::RootDir | Component::Prefix(_) => return Err("name is an absolute path"),
        }
    }
    if out.as_os_str().is_empty() {
        return Err("name is empty");
    }
    Ok(out)
}

/// Resolves a symlink at `link` (a normalized relative path) pointing at `target`, lexically,
/// and returns where it lands relative to the layer root, or `None` when it leaves the root or
/// is absolute. An empty result means the root itself.
pub fn symlink_destination(link: &Path, target: &str) -> Option<PathBuf> {
    if target.is_empty() || target.contains('\0') || target.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&std::ffi::OsStr> = link.parent()?.iter().collect();
    for component in Path::new(target).components() {
        match component {
            Component::Normal(part) => parts.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names() {
        assert_eq!(
            normalize("a/./b/c.txt").unwrap(),
            PathBuf::from("a/b/c.txt")
        );
        assert_eq!(normalize("bin/").unwrap(), PathBuf::from("bin"));
        for bad in [
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/../b",
            "a\0b",
            "..\\x",
            "",
            "./",
            "//x",
        ] {
            assert!(normalize(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn symlink_targets() {
        let at = |link: &str, target: &str| symlink_destination(Path::new(link), target);
        assert_eq!(
            at("lib/libfoo.so", "libfoo.so.1"),
            Some(PathBuf::from("lib/libfoo.so.1"))
        );
        assert_eq!(
            at("bin/python", "../python/bin/python3"),
            Some(PathBuf::from("python/bin/python3"))
        );
        assert_eq!(at("a", "."), Some(PathBuf::new()));
        assert_eq!(at("a", ".."), None, "leaves the root");
        assert_eq!(at("a/b", "../../x"), None);
        assert_eq!(at("a", "/etc/passwd"), None, "absolute");
        assert_eq!(at("a", ""), None);
    }

    proptest! {
        // Whatever the name, a normalized path is relative, has only normal components, and
        // joined onto a root stays under it.
        #[test]
        fn normalized_paths_never_escape(name in "[a-z./\\\\\u{0}]{0,24}") {
            if let Ok(path) = normalize(&name) {
                prop_assert!(path.is_relative());
                prop_assert!(path.components().all(|c| matches!(c, Component::Normal(_))));
                prop_assert!(Path::new("/root").join(&path).starts_with("/root"));
            }
        }

        #[test]
        fn symlink_destinations_stay_inside(link in "[a-z]{1,3}(/[a-z]{1,3}){0,3}", target in "(\\.\\.|\\.|[a-z]{1,2})(/(\\.\\.|\\.|[a-z]{1,2})){0,5}") {
            if let Some(dest) = symlink_destination(Path::new(&link), &target) {
                prop_assert!(dest.components().all(|c| matches!(c, Component::Normal(_))));
            }
        }
    }
}
