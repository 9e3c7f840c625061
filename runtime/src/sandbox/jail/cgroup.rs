//! cgroups for one jailed environment: a memory limit of `--memory` MB (no swap), Lambda's
//! 1,024 processes and threads, and a CPU share proportional to memory, as Lambda scales CPU
//! with memory. cgroup v1 (one directory per controller, as on our machines) and v2 (one leaf).
//!
//! The groups live under `lamina/` at the top of each hierarchy, or, when lamina's own v2
//! group was delegated to it (systemd's `Delegate=yes`; for a user, `systemd-run --user --scope
//! -p Delegate=yes`, or anything under `user@UID.service`), under `lamina/` inside that group:
//! lamina then moves itself into a leaf, `lamina-supervisor`, so that the delegated group holds
//! no process of its own and may hand its controllers down (cgroup v2's "no internal
//! processes" rule), and it writes nothing outside the group it was given. A rootless lamina
//! uses a delegated group when it has one, and no cgroup otherwise ([`place`]).

use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

const ROOT: &str = "/sys/fs/cgroup";
/// Lambda's limit on processes and threads per environment.
pub const PIDS_MAX: u32 = 1024;
/// Lambda gives one full vCPU at 1,769 MB.
const MB_PER_VCPU: u64 = 1769;

/// Which cgroup hierarchy the host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Separate hierarchies per controller.
    V1,
    /// The unified hierarchy with the controllers lamina needs.
    V2,
}

/// Where this lamina's environment groups live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The hierarchy.
    pub version: Version,
    /// v2: the group whose children are the environments' groups (`/sys/fs/cgroup/lamina`,
    /// or `lamina` inside the delegated group). v1 uses `<controller>/lamina`.
    v2_base: PathBuf,
    /// The delegated group lamina runs in, when it was given one.
    pub delegated: Option<PathBuf>,
}

/// The leaf a lamina in a delegated group moves itself into.
const SUPERVISOR: &str = "lamina-supervisor";

/// Where environments' groups go on this host: the top of the hierarchy for root (v1, or v2
/// outside any delegated group), a delegated v2 group when lamina runs in one (root or not),
/// `None` when there is no usable hierarchy or, rootless, no delegated group.
pub fn place(rootless: bool) -> Option<Place> {
    let version = detect()?;
    let delegated = (version == Version::V2)
        .then(|| delegated_group(rootless))
        .flatten();
    match (&delegated, rootless, version) {
        (Some(group), _, _) => Some(Place {
            version,
            v2_base: group.join("lamina"),
            delegated: delegated.clone(),
        }),
        (None, true, _) => None,
        (None, false, _) => Some(Place {
            version,
            v2_base: Path::new(ROOT).join("lamina"),
            delegated: None,
        }),
    }
}

/// The v2 group delegated to this process, if it runs in one: its own group (or, once it
/// moved itself into [`SUPERVISOR`], that leaf's parent). Root: systemd marks a delegated
/// group with the `trusted.delegate` attribute. Rootless: the group is this user's, and it may
/// move processes there and hand controllers down.
fn delegated_group(rootless: bool) -> Option<PathBuf> {
    let text = fs::read_to_string("/proc/self/cgroup").ok()?;
    let own = text.lines().find_map(|l| l.strip_prefix("0::"))?.trim();
    let own = own.strip_suffix(&format!("/{SUPERVISOR}")).unwrap_or(own);
    if own == "/" || own.is_empty() {
        return None;
    }
    let group = Path::new(ROOT).join(own.trim_start_matches('/'));
    let delegated = match rootless {
        false => xattr_is_one(&group, "trusted.delegate"),
        true => {
            use std::os::unix::fs::MetadataExt;
            let mine = fs::metadata(&group)
                .is_ok_and(|m| m.uid() == nix::unistd::Uid::effective().as_raw());
            mine && ["cgroup.procs", "cgroup.subtree_control"]
                .iter()
                .all(|f| writable(&group.join(f)).is_ok())
        }
    };
    delegated.then_some(group)
}

/// Whether the extended attribute `name` of `path` is "1".
fn xattr_is_one(path: &Path, name: &str) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let (Ok(path), Ok(name)) = (
        std::ffi::CString::new(path.as_os_str().as_bytes()),
        std::ffi::CString::new(name),
    ) else {
        return false;
    };
    let mut value = [0u8; 8];
    // SAFETY: getxattr reads the two C strings we own and writes at most `value.len()` bytes
    // into `value`.
    let n = unsafe {
        nix::libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    usize::try_from(n).is_ok_and(|n| &value[..n] == b"1")
}

/// Detects the hierarchy: v2 when `/sys/fs/cgroup` is cgroup2 with memory and pids enabled,
/// v1 when the memory and pids controllers are mounted separately, else none.
pub fn detect() -> Option<Version> {
    let controllers =
        fs::read_to_string(Path::new(ROOT).join("cgroup.controllers")).unwrap_or_default();
    if controllers.split_whitespace().any(|c| c == "memory")
        && controllers.split_whitespace().any(|c| c == "pids")
    {
        return Some(Version::V2);
    }
    let v1 = ["memory", "pids"]
        .iter()
        .all(|c| Path::new(ROOT).join(c).join("cgroup.procs").exists());
    v1.then_some(Version::V1)
}

/// Creates lamina's parent groups, which also shows that this process may write there. On v2
/// the controllers must be handed down to them: from the root group (whose
/// `cgroup.subtree_control` a fresh system leaves empty) to `lamina/`, and from `lamina/` to
/// each environment's group; a controller that cannot be is named.
pub fn prepare(place: &Place) -> io::Result<()> {
    if let Some(group) = &place.delegated {
        return prepare_delegated(group, &place.v2_base);
    }
    let parents = match place.version {
        Version::V1 => vec![
            Path::new(ROOT).join("memory/lamina"),
            Path::new(ROOT).join("pids/lamina"),
        ],
        Version::V2 => vec![place.v2_base.clone()],
    };
    for dir in parents {
        fs::create_dir_all(&dir)
            .and_then(|()| writable(&dir))
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
    }
    match place.version {
        Version::V2 => {
            hand_down(Path::new(ROOT), &V2_CONTROLLERS)?;
            hand_down(&place.v2_base, &V2_CONTROLLERS)?;
        }
        Version::V1 => {
            if let Err(e) = favor_dynamic_moves() {
                tracing::debug!("cgroup v1 moves stay slow: {e}");
            }
        }
    }
    Ok(())
}

/// The name of the v1 hierarchy whose mount option turns on [`favor_dynamic_moves`].
const DYNMODS_HIERARCHY: &str = "name=lamina-dynmods";

/// On cgroup v1 every move of a process into a cgroup (each sandbox's PID 1 joins its
/// environment's groups) waits for an RCU grace period, 5–16 ms on our machines, because the
/// kernel's threadgroup lock favors forks over moves. The `favordynmods` mount option (Linux
/// ≥ 6.0, v1 and v2) turns that around, for every hierarchy: moves take ~1 ms, forks and exits
/// take a slightly slower path. A root lamina on v1 sets it once per boot by mounting a named,
/// controller-less hierarchy of its own with the option and unmounting it again; the child
/// group it leaves keeps that hierarchy (and with it the mode, on kernels where the mode does
/// not outlive the mount) alive without a mount point, and tells the next lamina it is done.
/// docs/design/001 has the measurements and the trade-off.
pub fn favor_dynamic_moves() -> io::Result<()> {
    if favors_dynamic_moves() {
        return Ok(());
    }
    use nix::mount::{MntFlags, MsFlags, mount, umount2};
    let dir = tempfile::Builder::new()
        .prefix("lamina-dynmods-")
        .tempdir()?;
    let options = format!("none,{DYNMODS_HIERARCHY},favordynmods");
    mount(
        Some("cgroup"),
        dir.path(),
        Some("cgroup"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(options.as_str()),
    )
    .map_err(|e| {
        io::Error::other(format!(
            "mounting a cgroup v1 hierarchy with {options}: {e}"
        ))
    })?;
    let held = fs::create_dir(dir.path().join("held"));
    let unmounted = umount2(dir.path(), MntFlags::MNT_DETACH);
    held?;
    unmounted.map_err(io::Error::from)
}

/// Whether lamina's `favordynmods` hierarchy exists this boot (every process lists every v1
/// hierarchy in `/proc/self/cgroup`, mounted or not).
pub fn favors_dynamic_moves() -> bool {
    fs::read_to_string("/proc/self/cgroup")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(':').nth(1) == Some(DYNMODS_HIERARCHY))
}

/// In a delegated group: lamina moves itself into a leaf of its own, then hands the
/// controllers down to `base` and from it to the environments.
fn prepare_delegated(group: &Path, base: &Path) -> io::Result<()> {
    let named = |path: &Path| {
        let path = path.to_owned();
        move |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()))
    };
    let supervisor = group.join(SUPERVISOR);
    fs::create_dir_all(&supervisor).map_err(named(&supervisor))?;
    let procs = supervisor.join("cgroup.procs");
    fs::write(&procs, std::process::id().to_string()).map_err(named(&procs))?;
    hand_down(group, &V2_CONTROLLERS).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "{e}; other processes share lamina's delegated group {}: give lamina a group of \
                 its own (a service of its own with Delegate=yes, or systemd-run --user --scope \
                 -p Delegate=yes lamina …)",
                group.display()
            ),
        )
    })?;
    fs::create_dir_all(base).map_err(named(base))?;
    hand_down(base, &V2_CONTROLLERS)
}

/// The v2 controllers an environment's group needs: `memory` and `pids` for its limits, `cpu`
/// for its share (best effort: without it only the share is lost).
const V2_CONTROLLERS: [(&str, bool); 3] = [("memory", true), ("pids", true), ("cpu", false)];

/// Enables `controllers` for `dir`'s children (`+name` in its `cgroup.subtree_control`), each
/// on its own so that one refused does not hide the others; fails naming a required one that
/// could not be.
fn hand_down(dir: &Path, controllers: &[(&str, bool)]) -> io::Result<()> {
    let control = dir.join("cgroup.subtree_control");
    let enabled = |name: &str| {
        fs::read_to_string(&control).is_ok_and(|text| text.split_whitespace().any(|c| c == name))
    };
    for (name, required) in controllers {
        if enabled(name) {
            continue;
        }
        if let Err(e) = fs::write(&control, format!("+{name}")) {
            if *required {
                return Err(io::Error::new(
                    e.kind(),
                    format!(
                        "cannot hand the {name} controller down from {} ({e}): {}",
                        dir.display(),
                        match nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0)) {
                            // The "no internal processes" rule: a group with processes of its
                            // own cannot also give controllers to children.
                            nix::errno::Errno::EBUSY => "the group has processes of its own",
                            nix::errno::Errno::ENOENT => "the controller is not available in it",
                            _ => "lamina needs to write its cgroup.subtree_control",
                        }
                    ),
                ));
            }
            tracing::debug!(
                "cgroup v2: {name} not handed down from {}: {e}",
                dir.display()
            );
        }
    }
    Ok(())
}

/// Removes the groups of lamina processes that are gone (killed before they could remove
/// them, as by `kill -9`): `lamina/<pid>-<n>` in each hierarchy whose pid no longer runs.
/// Groups of live lamina processes are never touched. A process still in such a group (none
/// should be: a sandbox's PID 1 ends when its host does) is killed first. Returns what could
/// not be removed, with why.
pub fn sweep_dead(place: &Place) -> Vec<String> {
    let parents: Vec<PathBuf> = match place.version {
        Version::V1 => ["memory", "pids", "cpu"]
            .iter()
            .map(|c| Path::new(ROOT).join(c).join("lamina"))
            .collect(),
        Version::V2 => vec![place.v2_base.clone()],
    };
    let mut notes = Vec::new();
    for parent in parents {
        let Ok(entries) = fs::read_dir(&parent) else {
            continue;
        };
        for entry in entries.flatten() {
            if crate::run_dir::dead_owner(&entry.file_name()).is_none() {
                continue;
            }
            let group = entry.path();
            if let Err(e) = remove_group(&group) {
                notes.push(format!("{}: {e}", group.display()));
            }
        }
    }
    notes
}

/// Kills whatever is left in `group` (and below) and removes it, children first.
fn remove_group(group: &Path) -> io::Result<()> {
    // Not through links: cgroupfs has none, and anything else is not a group of ours.
    if fs::symlink_metadata(group)?.file_type().is_symlink() {
        return Err(io::Error::other("a link, not a cgroup; left alone"));
    }
    for child in fs::read_dir(group)?.flatten() {
        if child.file_type().is_ok_and(|t| t.is_dir()) {
            remove_group(&child.path())?;
        }
    }
    for _ in 0..50 {
        let procs = fs::read_to_string(group.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        match fs::remove_dir(group) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            // Busy while a killed process is still leaving.
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(2)),
        }
    }
    fs::remove_dir(group)
}

/// Whether this process may create entries in `dir` (an existing directory passes
/// `create_dir_all` whoever owns it).
pub(crate) fn writable(dir: &Path) -> io::Result<()> {
    nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).map_err(io::Error::from)
}

/// The cgroups of one environment. Removed with [`Cgroups::remove`] once its processes are gone.
#[derive(Debug)]
pub struct Cgroups {
    version: Version,
    /// Directories the whole sandbox joins (processes, CPU).
    pub sandbox_dirs: Vec<PathBuf>,
    /// Directories only the function's processes join (memory).
    pub function_dirs: Vec<PathBuf>,
    memory: PathBuf,
    cpu: Option<PathBuf>,
    /// The peak-memory file, opened at its first read and kept: REPORT reads it after every
    /// invocation, and one `pread` is a fifth of the syscalls of opening it each time.
    peak: Mutex<Option<fs::File>>,
}

fn write(dir: &Path, file: &str, value: impl ToString) -> io::Result<()> {
    let path = dir.join(file);
    fs::write(&path, value.to_string())
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

impl Cgroups {
    /// Creates the environment's groups (limits follow with [`Cgroups::set_limits`]; until
    /// then the process limit holds and memory is capped at Lambda's smallest size). A group
    /// made before a later step failed is removed again.
    pub fn create(place: &Place, name: &str) -> io::Result<Self> {
        let version = place.version;
        let cgroups = match version {
            Version::V1 => {
                let dir =
                    |controller: &str| Path::new(ROOT).join(controller).join("lamina").join(name);
                let (memory, pids, cpu) = (dir("memory"), dir("pids"), dir("cpu"));
                fs::create_dir_all(&memory)?;
                if let Err(e) = fs::create_dir_all(&pids) {
                    let _ = fs::remove_dir(&memory);
                    return Err(e);
                }
                let mut sandbox_dirs = vec![pids.clone()];
                let cpu = fs::create_dir_all(&cpu).is_ok().then_some(cpu);
                sandbox_dirs.extend(cpu.clone());
                Self {
                    version,
                    sandbox_dirs,
                    function_dirs: vec![memory.clone()],
                    memory,
                    cpu,
                    peak: Mutex::new(None),
                }
            }
            Version::V2 => {
                // `prepare` handed the controllers down to `lamina/`'s children.
                let leaf = place.v2_base.join(name);
                fs::create_dir_all(&leaf)?;
                // One leaf holds every controller in v2: the helpers share the function's memory
                // group there (they are small, and PID 1 keeps reporting unless it is chosen).
                Self {
                    version,
                    sandbox_dirs: vec![leaf.clone()],
                    function_dirs: Vec::new(),
                    memory: leaf.clone(),
                    cpu: Some(leaf),
                    peak: Mutex::new(None),
                }
            }
        };
        let pids = match version {
            Version::V1 => &cgroups.sandbox_dirs[0],
            Version::V2 => &cgroups.memory,
        };
        if let Err(e) = write(pids, "pids.max", PIDS_MAX).and_then(|()| cgroups.set_limits(128)) {
            cgroups.remove();
            return Err(e);
        }
        Ok(cgroups)
    }

    /// Sets the memory limit (`memory_mb`, no swap) and the CPU share that goes with it.
    pub fn set_limits(&self, memory_mb: u32) -> io::Result<()> {
        let bytes = u64::from(memory_mb) * 1024 * 1024;
        let shares = (1024 * u64::from(memory_mb) / MB_PER_VCPU).max(2);
        match self.version {
            Version::V1 => {
                // memsw (memory + swap) may never be below the memory limit: raised first when
                // growing, lowered last when shrinking. Without swap accounting it is absent.
                let _ = write(&self.memory, "memory.memsw.limit_in_bytes", bytes);
                write(&self.memory, "memory.limit_in_bytes", bytes)?;
                let _ = write(&self.memory, "memory.memsw.limit_in_bytes", bytes);
                if let Some(cpu) = &self.cpu {
                    let _ = write(cpu, "cpu.shares", shares);
                }
            }
            Version::V2 => {
                write(&self.memory, "memory.max", bytes)?;
                let _ = write(&self.memory, "memory.swap.max", 0);
                if let Some(cpu) = &self.cpu {
                    let _ = write(cpu, "cpu.weight", (shares * 100 / 1024).clamp(1, 10_000));
                }
            }
        }
        Ok(())
    }

    /// Peak memory use of the environment, bytes.
    pub fn max_memory_bytes(&self) -> Option<u64> {
        let file = match self.version {
            Version::V1 => "memory.max_usage_in_bytes",
            Version::V2 => "memory.peak",
        };
        let mut peak = self.peak.lock().unwrap_or_else(PoisonError::into_inner);
        if peak.is_none() {
            *peak = fs::File::open(self.memory.join(file)).ok();
        }
        // A decimal u64 and a newline.
        let mut text = [0u8; 24];
        let n = peak.as_ref()?.read_at(&mut text, 0).ok()?;
        std::str::from_utf8(&text[..n]).ok()?.trim().parse().ok()
    }

    /// Whether the kernel's OOM killer has killed anything in the environment.
    pub fn oom_killed(&self) -> bool {
        let (file, key) = match self.version {
            Version::V1 => ("memory.oom_control", "oom_kill"),
            Version::V2 => ("memory.events", "oom_kill"),
        };
        let text = fs::read_to_string(self.memory.join(file)).unwrap_or_default();
        text.lines()
            .filter_map(|l| l.split_once(' '))
            .any(|(k, v)| k == key && v.trim().parse::<u64>().is_ok_and(|n| n > 0))
    }

    /// Removes the groups (they must be empty: call once the sandbox's processes are gone).
    pub fn remove(&self) {
        self.peak
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        for dir in self.function_dirs.iter().chain(&self.sandbox_dirs) {
            // A just-killed process may take a moment to leave; a few tries cover it.
            for _ in 0..50 {
                if fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
    }
}
