//! Layers: every hostile archive refused with the archive and entry named and nothing written,
//! the content-addressed cache, ordered `/opt` composition (overlay and merged tree agree), and
//! an end-to-end invoke whose runtime, library and handler come from three places.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use lamina_layers::{Cache, Limits, Problems, compose, scan};
use proptest::prelude::*;

use crate::support::{lamina, test_cache};
use crate::zipcraft::{Item, build, patch_bytes, set_mode, write};

fn problems_of(bytes: &[u8], limits: &Limits) -> Problems {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "layer.zip", bytes);
    scan(&path, limits).expect_err("archive must be refused")
}

/// Asserts the archive is refused with a problem at `entry` whose reason contains `reason`.
fn refused(bytes: &[u8], entry: &str, reason: &str) {
    let problems = problems_of(bytes, &Limits::default());
    assert!(
        problems
            .0
            .iter()
            .any(|p| p.entry.as_deref() == Some(entry) && p.reason.contains(reason)),
        "expected {entry:?}: {reason:?} in {problems}"
    );
}

#[test]
fn hostile_paths_are_refused() {
    refused(
        &build(&[Item::File("/etc/cron.d/x", b"x", 0o644)]),
        "/etc/cron.d/x",
        "absolute",
    );
    refused(
        &build(&[Item::File("../escape", b"x", 0o644)]),
        "../escape",
        "`..`",
    );
    refused(
        &build(&[Item::File("a/../../escape", b"x", 0o644)]),
        "a/../../escape",
        "`..`",
    );
    refused(
        &build(&[Item::File("..\\win", b"x", 0o644)]),
        "..\\win",
        "backslash",
    );
    let mut nul = build(&[Item::File("aXb", b"x", 0o644)]);
    patch_bytes(&mut nul, b"aXb", b"a\0b");
    refused(&nul, "a\0b", "NUL");
    // A name flagged as UTF-8 whose bytes are not.
    let mut bad = build(&[Item::File("é.txt", b"x", 0o644)]);
    patch_bytes(&mut bad, "é".as_bytes(), &[0xff, 0xfe]);
    let problems = problems_of(&bad, &Limits::default());
    assert!(
        problems
            .0
            .iter()
            .any(|p| p.reason.contains("not valid UTF-8")),
        "{problems}"
    );
}

#[test]
fn symlinks_leaving_the_root_or_written_through_are_refused() {
    refused(
        &build(&[Item::Symlink("etc", "/etc")]),
        "etc",
        "leaves the layer's root",
    );
    refused(
        &build(&[Item::Symlink("up", "../..")]),
        "up",
        "leaves the layer's root",
    );
    refused(
        &build(&[Item::Dir("d/"), Item::Symlink("d/up", "../..")]),
        "d/up",
        "leaves",
    );
    // Each link looks fine alone; followed as the kernel follows them, `p` climbs out.
    refused(
        &build(&[Item::Symlink("q", "."), Item::Symlink("p", "q/../x")]),
        "p",
        "leaves",
    );
    // An entry written through a link the archive itself created.
    refused(
        &build(&[
            Item::Dir("real/"),
            Item::Symlink("link", "real"),
            Item::File("link/file", b"x", 0o644),
        ]),
        "link/file",
        "through the symlink",
    );
    // Links that stay inside are fine.
    let ok = build(&[
        Item::Dir("lib/"),
        Item::File("lib/libx.so.1", b"elf", 0o755),
        Item::Symlink("lib/libx.so", "libx.so.1"),
        Item::Symlink("bin", "lib"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    assert!(scan(&write(dir.path(), "ok.zip", &ok), &Limits::default()).is_ok());
}

#[test]
fn special_files_are_refused_and_special_bits_masked() {
    let mut fifo = build(&[Item::File("pipe", b"", 0o644)]);
    set_mode(&mut fifo, "pipe", 0o010644);
    refused(&fifo, "pipe", "device file, FIFO or socket");
    let mut device = build(&[Item::File("dev/sda", b"", 0o644)]);
    set_mode(&mut device, "dev/sda", 0o060660);
    refused(&device, "dev/sda", "device file");

    let mut suid = build(&[
        Item::File("bootstrap", b"#!/bin/sh\n", 0o755),
        Item::File("data", b"x", 0o644),
    ]);
    set_mode(&mut suid, "bootstrap", 0o106755);
    set_mode(&mut suid, "data", 0o103666);
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path().join("cache")).unwrap();
    let entry = cache
        .extract(
            &write(dir.path(), "suid.zip", &suid),
            &Limits::default(),
            &|_, _| {},
        )
        .unwrap();
    let mode = |name: &str| {
        std::fs::metadata(entry.tree.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(
        mode("bootstrap"),
        0o555,
        "setuid/setgid dropped, executable kept, read-only"
    );
    assert_eq!(mode("data"), 0o444, "sticky and write bits dropped");
}

#[test]
fn size_count_and_ratio_limits_are_enforced() {
    let small = Limits {
        max_unzipped_bytes: 1000,
        ..Limits::default()
    };
    let problems = problems_of(&build(&[Item::File("big", &[7u8; 2000], 0o644)]), &small);
    assert!(
        problems.0[0].reason.contains("limit of 1000 bytes"),
        "{problems}"
    );
    let few = Limits {
        max_entries: 3,
        ..Limits::default()
    };
    let many: Vec<String> = (0..5).map(|i| format!("f{i}")).collect();
    let items: Vec<Item> = many.iter().map(|n| Item::File(n, b"x", 0o644)).collect();
    let problems = problems_of(&build(&items), &few);
    assert!(
        problems.0[0]
            .reason
            .contains("5 entries, more than the limit of 3"),
        "{problems}"
    );
    // 4 MB of zeros deflate to a few KB: a bomb by ratio, refused before anything is written.
    let zeros = vec![0u8; 4 * 1024 * 1024];
    refused(
        &build(&[Item::File("zeros", &zeros, 0o644)]),
        "zeros",
        "compression ratio",
    );
}

#[test]
fn corrupt_truncated_and_disagreeing_duplicates_are_refused() {
    let good = build(&[Item::File("a.txt", &b"hello world, ".repeat(100), 0o644)]);
    let problems = problems_of(&good[..good.len() / 2], &Limits::default());
    assert!(
        problems.0[0].reason.contains("not a readable zip archive"),
        "{problems}"
    );

    let mut dupes = build(&[
        Item::File("aaaa", b"one", 0o644),
        Item::File("aaab", b"two", 0o644),
    ]);
    patch_bytes(&mut dupes, b"aaab", b"aaaa");
    refused(&dupes, "aaaa", "duplicate entry that disagrees");

    // Flipped bytes in the compressed data: caught by the CRC while extracting, and the
    // refused archive leaves nothing in the cache.
    let mut corrupt = build(&[Item::File(
        "data.txt",
        &b"lorem ipsum dolor ".repeat(4000),
        0o644,
    )]);
    let middle = corrupt.len() / 3;
    for b in &mut corrupt[middle..middle + 8] {
        *b ^= 0x55;
    }
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path().join("cache")).unwrap();
    let err = cache.extract(
        &write(dir.path(), "corrupt.zip", &corrupt),
        &Limits::default(),
        &|_, _| {},
    );
    let err = err.expect_err("corrupt data must be refused").to_string();
    assert!(
        err.contains("corrupt.zip") && err.contains("data.txt"),
        "{err}"
    );
    for sub in ["trees", "tmp", "opt"] {
        assert_eq!(
            std::fs::read_dir(dir.path().join("cache").join(sub))
                .unwrap()
                .count(),
            0,
            "{sub} not empty"
        );
    }
}

#[test]
fn layers_check_lists_every_problem_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let mut fifo_too = build(&[
        Item::File("../one", b"x", 0o644),
        Item::Symlink("two", "/etc/shadow"),
        Item::File("three", b"", 0o644),
        Item::File("fine.txt", b"ok", 0o644),
    ]);
    set_mode(&mut fifo_too, "three", 0o010644);
    let bad = write(dir.path(), "bad.zip", &fifo_too);
    let good = write(
        dir.path(),
        "good.zip",
        &build(&[Item::File("fine.txt", b"ok", 0o644)]),
    );
    let out = std::process::Command::new(lamina())
        .args(["layers", "check"])
        .arg(&bad)
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    for entry in ["\"../one\"", "\"two\"", "\"three\""] {
        assert!(
            stdout
                .lines()
                .any(|l| l.contains("bad.zip") && l.contains(entry)),
            "{entry} missing: {stdout}"
        );
    }
    assert!(stdout.contains("good.zip: ok (1 entry, "), "{stdout}");
    let out = std::process::Command::new(lamina())
        .args(["layers", "check"])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn a_cached_archive_is_not_extracted_again_and_concurrent_extraction_is_safe() {
    let dir = tempfile::tempdir().unwrap();
    let zip = write(
        dir.path(),
        "layer.zip",
        &build(&[Item::File("lib/x.txt", b"x", 0o644)]),
    );
    let root = dir.path().join("cache");
    // Two extractions of the same archive at once, each with its own handle on the cache.
    let entries: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (root, zip) = (root.clone(), zip.clone());
                s.spawn(move || {
                    Cache::open(root)
                        .unwrap()
                        .extract(&zip, &Limits::default(), &|_, _| {})
                        .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(entries.iter().all(|e| e == &entries[0]));
    assert_eq!(std::fs::read_dir(root.join("trees")).unwrap().count(), 1);
    assert_eq!(
        std::fs::read_dir(root.join("tmp")).unwrap().count(),
        0,
        "losers' work is gone"
    );
    // A second use is a lookup: the same tree, not a new one.
    let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    let before = inode(&entries[0].tree);
    let again = Cache::open(&root)
        .unwrap()
        .extract(&zip, &Limits::default(), &|_, _| {})
        .unwrap();
    assert_eq!(inode(&again.tree), before);
    assert_eq!(again.digest.len(), 64);
    // ls and prune.
    let out = std::process::Command::new(lamina())
        .args(["cache", "ls", "--cache-dir"])
        .arg(&root)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains(&format!("trees/{}…", &again.digest[..16])),
        "{listing}"
    );
    let out = std::process::Command::new(lamina())
        .args(["cache", "prune", "--cache-dir"])
        .arg(&root)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(std::fs::read_dir(root.join("trees")).unwrap().count(), 0);
}

/// Every path under `root` with what it is: file content, link target, or directory.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().to_owned();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.file_type().is_symlink() {
                out.insert(
                    rel,
                    format!("link {}", std::fs::read_link(&path).unwrap().display()),
                );
            } else if meta.is_dir() {
                out.insert(rel, "dir".into());
                walk(root, &path, out);
            } else {
                let mode = meta.permissions().mode() & 0o777;
                out.insert(
                    rel,
                    format!(
                        "file {mode:o} {}",
                        String::from_utf8_lossy(&std::fs::read(&path).unwrap())
                    ),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// The layer trees of `layers` (each a list of (path, kind) items) in a fresh cache.
fn cached_layers(cache: &Cache, dir: &Path, layers: &[Vec<Item<'_>>]) -> Vec<(String, PathBuf)> {
    layers
        .iter()
        .enumerate()
        .map(|(i, items)| {
            let zip = write(dir, &format!("layer{i}.zip"), &build(items));
            let entry = cache.extract(&zip, &Limits::default(), &|_, _| {}).unwrap();
            (entry.digest, entry.tree)
        })
        .collect()
}

#[test]
fn overlay_mount_and_merged_tree_show_the_same_opt() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path().join("cache")).unwrap();
    let layers = cached_layers(
        &cache,
        dir.path(),
        &[
            vec![
                Item::File("bootstrap", b"runtime v1", 0o755),
                Item::File("python/lib/a.py", b"a1", 0o644),
                Item::File("python/lib/b.py", b"b1", 0o644),
                Item::File("shadowed/file", b"dir in 1", 0o644),
                Item::Symlink("current", "python"),
            ],
            vec![
                Item::File("python/lib/b.py", b"b2", 0o644),
                Item::File("python/lib/c.py", b"c2", 0o644),
                Item::File("shadowed", b"file in 2 hides dir of 1", 0o644),
            ],
            vec![
                Item::File("bootstrap", b"runtime v3", 0o755),
                Item::Symlink("python/lib/a.py", "b.py"),
            ],
        ],
    );
    let composed = compose(&cache, &layers).unwrap();
    let mountpoint = dir.path().join("mnt");
    std::fs::create_dir(&mountpoint).unwrap();
    let lower = composed
        .lowerdirs
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let status = std::process::Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!("ro,lowerdir={lower}"))
        .arg(&mountpoint)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "mounting overlayfs (the tests run as root on our machines)"
    );
    let overlay = snapshot(&mountpoint);
    let _ = std::process::Command::new("umount")
        .arg(&mountpoint)
        .status();
    let merged = snapshot(&composed.merged);
    assert_eq!(overlay, merged);
    assert_eq!(
        merged[Path::new("bootstrap")],
        "file 555 runtime v3",
        "later layer wins"
    );
    assert_eq!(merged[Path::new("python/lib/b.py")], "file 444 b2");
    assert_eq!(merged[Path::new("python/lib/a.py")], "link b.py");
    assert_eq!(
        merged[Path::new("shadowed")],
        "file 444 file in 2 hides dir of 1"
    );
    assert!(!merged.contains_key(Path::new("shadowed/file")));
    // The merged tree is hard links into the cache, not copies.
    let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    assert_eq!(
        ino(&composed.merged.join("python/lib/c.py")),
        ino(&layers[1].1.join("python/lib/c.py"))
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    // For random layer sets, the merged tree is what "later layer wins, directories merge"
    // says it is: computed here by a model that knows nothing of the implementation.
    #[test]
    fn merged_tree_follows_layer_order(
        layers in proptest::collection::vec(
            proptest::collection::btree_map("[ab](/[ab]){0,2}", 0u8..3, 1..5), 1..5)
    ) {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path().join("cache")).unwrap();
        let contents: Vec<Vec<(String, String)>> = layers
            .iter()
            .enumerate()
            .map(|(i, files)| files.keys().map(|p| (p.clone(), format!("layer {i} {p}"))).collect())
            .collect();
        // Within one layer a path cannot be both a file and a directory: drop files that are
        // a prefix of another of the same layer's files.
        let contents: Vec<Vec<(String, String)>> = contents
            .into_iter()
            .map(|files| {
                let names: Vec<String> = files.iter().map(|(p, _)| p.clone()).collect();
                files.into_iter().filter(|(p, _)| !names.iter().any(|n| n.starts_with(&format!("{p}/")))).collect()
            })
            .collect();
        let items: Vec<Vec<Item>> = contents
            .iter()
            .map(|files| files.iter().map(|(p, c)| Item::File(p, c.as_bytes(), 0o644)).collect())
            .collect();
        let trees = cached_layers(&cache, dir.path(), &items);
        let merged = snapshot(&compose(&cache, &trees).unwrap().merged);
        // The model: apply layers in order; a file replaces whatever was at its path or below;
        // a file's parents become directories, replacing a file that stood there.
        let mut model: BTreeMap<PathBuf, String> = BTreeMap::new();
        for files in &contents {
            for (p, c) in files {
                let path = PathBuf::from(p);
                model.retain(|k, _| !k.starts_with(&path));
                for parent in path.ancestors().skip(1).filter(|a| !a.as_os_str().is_empty()) {
                    model.insert(parent.to_owned(), "dir".into());
                }
                model.insert(path, format!("file 444 {c}"));
            }
        }
        prop_assert_eq!(merged, model);
    }
}

#[test]
fn more_than_five_layers_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let layer = dir.path().join("layer");
    std::fs::create_dir(&layer).unwrap();
    let mut cmd = std::process::Command::new(lamina());
    cmd.arg("invoke")
        .arg(dir.path())
        .env("LAMINA_CACHE_DIR", test_cache());
    for _ in 0..6 {
        cmd.arg("--layer").arg(&layer);
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("6 layers, more than Lambda's 5"));
}

const RUNTIME_BOOTSTRAP: &str = r#"#!/bin/sh
# A shell runtime shipped as a layer: it finds its libraries beside itself in /opt.
opt=$(dirname "$0")
. "$opt/lib/greeting.sh"
. "$LAMBDA_TASK_ROOT/handler.sh"
api="http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime"
while :; do
  headers=$(mktemp)
  event=$(curl -sS -D "$headers" "$api/invocation/next")
  id=$(sed -n 's/^[Ll]ambda-[Rr]untime-[Aa]ws-[Rr]equest-[Ii]d: *\([^[:space:]]*\).*/\1/p' "$headers")
  rm -f "$headers"
  curl -sS -X POST "$api/invocation/$id/response" --data-binary "$(handle "$event")" >/dev/null
done
"#;

#[test]
fn a_runtime_layer_runs_a_handler_with_a_library_from_a_second_layer() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = write(
        dir.path(),
        "runtime.zip",
        &build(&[
            Item::File("bootstrap", RUNTIME_BOOTSTRAP.as_bytes(), 0o755),
            Item::File("lib/greeting.sh", b"greeting() { echo old; }\n", 0o644),
        ]),
    );
    let library = write(
        dir.path(),
        "library.zip",
        &build(&[Item::File(
            "lib/greeting.sh",
            b"greeting() { printf 'hello from layer 2'; }\n",
            0o644,
        )]),
    );
    let function = write(
        dir.path(),
        "function.zip",
        &build(&[Item::File(
            "handler.sh",
            b"handle() { printf '{\"greeting\":\"%s\",\"event\":%s}' \"$(greeting)\" \"$1\"; }\n",
            0o644,
        )]),
    );
    let cache = dir.path().join("cache");
    let out = std::process::Command::new(lamina())
        .arg("invoke")
        .arg(&function)
        .arg("--layer")
        .arg(&runtime)
        .arg("--layer")
        .arg(&library)
        .args(["--payload", r#"{"n":1}"#, "--cache-dir"])
        .arg(&cache)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"greeting": "hello from layer 2", "event": {"n": 1}})
    );
    // Three archives extracted once, one merged /opt.
    assert_eq!(std::fs::read_dir(cache.join("trees")).unwrap().count(), 3);
    assert_eq!(std::fs::read_dir(cache.join("opt")).unwrap().count(), 1);
}

#[test]
fn two_processes_extracting_the_same_package_at_once_agree() {
    let dir = tempfile::tempdir().unwrap();
    let probe = std::fs::read(crate::support::program("probe")).unwrap();
    // Incompressible, so that extraction takes a while and the two runs overlap.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let filler: Vec<u8> = (0..3 * 1024 * 1024)
        .map(|_| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 56) as u8
        })
        .collect();
    let zip = write(
        dir.path(),
        "fn.zip",
        &build(&[
            Item::File("bootstrap", &probe, 0o755),
            Item::File("data/filler.bin", &filler, 0o644),
        ]),
    );
    let cache = dir.path().join("cache");
    let spawn = || {
        std::process::Command::new(lamina())
            .arg("invoke")
            .arg(&zip)
            .args(["--payload", r#"{"action":"echo"}"#, "--cache-dir"])
            .arg(&cache)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, br#"{"action":"echo"}"#);
    }
    assert_eq!(std::fs::read_dir(cache.join("trees")).unwrap().count(), 1);
    assert_eq!(std::fs::read_dir(cache.join("tmp")).unwrap().count(), 0);
}
