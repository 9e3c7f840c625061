//! `lamina doctor`: what this host allows, and what each backend enforces here. It runs the
//! same checks the backends run when they start (the jail's helper tries namespaces, mounts
//! and seccomp for real), adds what the kernel and file systems offer, and ends with one
//! line per backend. Exit 0 when the jail can run, 1 otherwise.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use crate::run_dir::RunDir;
use crate::sandbox::jail::cgroup::{self, Version};
use crate::sandbox::jail::{Helper, JailSandbox};

/// Runs `lamina doctor`.
pub fn run() -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout();
    let uid = nix::unistd::Uid::effective();
    let line =
        |out: &mut std::io::Stdout, what: &str, text: String| writeln!(out, "{what:<22} {text}");
    line(
        &mut out,
        "user",
        match uid.is_root() {
            true => "root".to_owned(),
            false => format!("uid {uid} (not root)"),
        },
    )?;
    line(&mut out, "user namespaces", user_namespaces())?;
    let version = cgroup::detect();
    line(&mut out, "cgroups", cgroups(version))?;
    line(&mut out, "overlayfs", filesystem("overlay"))?;
    line(&mut out, "tmpfs", filesystem("tmpfs"))?;
    line(
        &mut out,
        "kvm",
        match Path::new("/dev/kvm").exists() {
            true => "/dev/kvm present (lamina does not use it yet)".into(),
            false => "no /dev/kvm".into(),
        },
    )?;
    line(
        &mut out,
        "run directory",
        match RunDir::open_default() {
            Ok(dir) => format!("{} (trusted)", dir.path().display()),
            Err(e) => format!("unusable: {e}"),
        },
    )?;
    // The jail's own start-up check: namespaces, mounts and seccomp tried in throwaway
    // children, cgroups prepared, the run directory checked.
    let jail = JailSandbox::new(Helper::this_executable());
    match &jail {
        Ok(jail) => {
            let kind = match jail.is_rootless() {
                true => "rootless jail (user, mount, PID, IPC, UTS, network namespaces",
                false => "root jail (mount, PID, IPC, UTS, network namespaces",
            };
            let limits = match jail.cgroups() {
                Some(place) => {
                    let version = match place.version {
                        Version::V1 => "cgroup v1",
                        Version::V2 => "cgroup v2",
                    };
                    match &place.delegated {
                        Some(group) => format!(
                            "{version} delegated ({}): memory, pids, cpu enforced",
                            group.display()
                        ),
                        None if place.version == Version::V1 => format!(
                            "{version}: memory, pids, cpu enforced; {}",
                            match cgroup::favors_dynamic_moves() {
                                true =>
                                    "moves into cgroups favored (favordynmods, set by lamina \
                                         once per boot)",
                                false =>
                                    "each move into a cgroup waits for an RCU grace \
                                          period (this kernel refused favordynmods; Linux ≥ 6.0 \
                                          has it)",
                            }
                        ),
                        None => format!("{version}: memory, pids, cpu enforced"),
                    }
                }
                None => "no cgroup delegated: memory by lamina's watchdog, processes by \
                         RLIMIT_NPROC, CPU shares not enforced"
                    .into(),
            };
            line(
                &mut out,
                "jail",
                format!("available: {kind}; seccomp; {limits})"),
            )?;
        }
        Err(e) => {
            line(&mut out, "jail", "NOT available here:".into())?;
            for missing in &e.missing {
                writeln!(out, "{:<22}   - {missing}", "")?;
            }
            writeln!(
                out,
                "{:<22} (`--sandbox process` runs native functions without isolation)",
                ""
            )?;
        }
    }
    line(
        &mut out,
        "wasm",
        match uid.is_root() {
            true => "available: wasmtime, a size-limited tmpfs /tmp per environment".into(),
            // What the backend starts with rootless: the tmpfs helper, tried for real.
            false => match crate::sandbox::wasm::tmp::TmpfsHelper::start(
                Helper::this_executable().command(),
            ) {
                Ok(_) => "available: wasmtime, a size-limited tmpfs /tmp per environment \
                          (made in a user namespace)"
                    .into(),
                Err(e) => format!("NOT available here: each environment's /tmp: {e}"),
            },
        },
    )?;
    Ok(match jail {
        Ok(_) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    })
}

/// Whether unprivileged users may create user namespaces (Debian's switch, and the limit).
fn user_namespaces() -> String {
    let read = |p: &str| std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned());
    let max = read("/proc/sys/user/max_user_namespaces");
    let debian = read("/proc/sys/kernel/unprivileged_userns_clone");
    match (max.as_deref(), debian.as_deref()) {
        (Some("0"), _) => "disabled (user.max_user_namespaces = 0)".into(),
        (_, Some("0")) => {
            "unprivileged ones disabled (kernel.unprivileged_userns_clone = 0)".into()
        }
        (Some(max), _) => format!("available (up to {max}; the rootless jail uses them)"),
        (None, _) => "unknown (no /proc/sys/user/max_user_namespaces)".into(),
    }
}

/// The cgroup hierarchy and, on v2, which controllers lamina's group can hand down.
fn cgroups(version: Option<Version>) -> String {
    match version {
        Some(Version::V1) => "v1: memory, pids hierarchies mounted".into(),
        Some(Version::V2) => {
            let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
            format!(
                "v2: controllers [{}], delegated to children [{}]",
                read("/sys/fs/cgroup/cgroup.controllers").trim(),
                read("/sys/fs/cgroup/cgroup.subtree_control").trim()
            )
        }
        None => "none usable (neither v2 with memory and pids, nor v1 memory and pids)".into(),
    }
}

/// Whether the kernel knows a file system type.
fn filesystem(name: &str) -> String {
    let known = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    match known
        .lines()
        .any(|l| l.split_whitespace().last() == Some(name))
    {
        true => "supported".into(),
        false => "not supported by this kernel".into(),
    }
}
