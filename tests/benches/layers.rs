//! Layer extraction benchmark: a realistic large layer (NumPy and SciPy installed with pip
//! into `python/`, as a Lambda Python layer is laid out) extracted cold by lamina (scan, then
//! every core decompressing) and by `unzip -q`, on the same file in the same run; then the
//! cost of a cached lookup. Run with `cargo bench -p lamina-tests --bench layers`; the layer
//! is built once and kept under the target directory. Figures go in SPECIFICATION.md.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use lamina_layers::{Cache, Limits};

#[path = "../shared.rs"]
#[allow(dead_code, reason = "the benchmark uses part of the shared helpers")]
mod shared;

use shared::target_dir;

/// Builds (once) `layer.zip`: NumPy and SciPy under `python/`, deflated.
fn layer_zip() -> PathBuf {
    let data = target_dir().join("bench-data");
    let zip_path = data.join("numpy-scipy-layer.zip");
    if zip_path.exists() {
        return zip_path;
    }
    let tree = data.join("numpy-scipy-layer");
    let _ = std::fs::remove_dir_all(&tree);
    shared::pip_install(
        Path::new("python3"),
        &tree.join("python"),
        &["numpy==2.3.*", "scipy==1.16.*"],
    );
    let tmp = zip_path.with_extension("tmp");
    shared::zip_dir(std::fs::File::create(&tmp).unwrap(), &tree, "");
    std::fs::rename(&tmp, &zip_path).unwrap();
    zip_path
}

fn drop_caches() {
    // Cold-ish runs: flush dirty pages so one run's writeback does not land in the next.
    let _ = Command::new("sync").status();
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let zip_path = layer_zip();
    let scratch = tempfile::tempdir_in(target_dir()).unwrap();
    let mut unzip_times = Vec::new();
    let mut lamina_times = Vec::new();
    let mut unzipped = 0;
    for run in 0..runs {
        let out = scratch.path().join(format!("unzip-{run}"));
        drop_caches();
        let t = Instant::now();
        let status = Command::new("unzip")
            .arg("-q")
            .arg(&zip_path)
            .arg("-d")
            .arg(&out)
            .status()
            .expect("unzip");
        unzip_times.push(t.elapsed());
        assert!(status.success());

        let cache_root = scratch.path().join(format!("cache-{run}"));
        drop_caches();
        let t = Instant::now();
        let cache = Cache::open(&cache_root).unwrap();
        let entry = cache
            .extract(&zip_path, &Limits::default(), &|_, _| {})
            .unwrap();
        lamina_times.push(t.elapsed());
        unzipped = entry.bytes;
        let _ = std::fs::remove_dir_all(&out);
        let _ = cache.prune();
    }
    let (u, l) = (median(unzip_times), median(lamina_times));
    let zipped = std::fs::metadata(&zip_path).unwrap().len();
    println!(
        "layer  {:.1} MB zipped, {:.1} MB unzipped (NumPy + SciPy under python/)",
        zipped as f64 / 1e6,
        unzipped as f64 / 1e6
    );
    println!(
        "cold   unzip -q: {:.0} ms   lamina (hash + scan + extract): {:.0} ms   ratio {:.2}× unzip  (median of {runs})",
        u.as_secs_f64() * 1e3,
        l.as_secs_f64() * 1e3,
        l.as_secs_f64() / u.as_secs_f64()
    );

    // Cached: the hash memo makes a second use a stat, a memo read and a directory check.
    let cache = Cache::open(scratch.path().join("cache-warm")).unwrap();
    cache
        .extract(&zip_path, &Limits::default(), &|_, _| {})
        .unwrap();
    let mut warm = Vec::new();
    for _ in 0..1000 {
        let t = Instant::now();
        cache
            .extract(&zip_path, &Limits::default(), &|_, _| {})
            .unwrap();
        warm.push(t.elapsed());
    }
    println!(
        "cached lookup (memoized hash): p50 {:.1} µs",
        median(warm).as_secs_f64() * 1e6
    );
}
