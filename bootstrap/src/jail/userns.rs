//! Rootless (step 2 when the host is not root): the sandbox's namespaces are made inside a
//! user namespace of its own, which gives the helper the capabilities to build the jail over
//! everything that namespace owns (its mounts, PID, IPC, UTS and network namespaces) and
//! nothing outside it. An unprivileged user may map exactly one id, its own: it becomes the
//! sandbox's `uid` (and its group the sandbox's `gid`), so files the function writes belong to
//! the user on the host, and the host's root and everyone else are the overflow id inside.
//!
//! Every process of the sandbox then has that one uid; PID 1 and the helper keep their
//! capabilities in the namespace, and the function gives up its own before it runs
//! (`privileges`). A process without capabilities cannot read or trace one that has them
//! (`ptrace_may_access`), so the function cannot reach PID 1 through `/proc`.

use nix::sched::{CloneFlags, unshare};

use super::{BootstrapError, io_step_err, step_err};
use crate::spec::IdMap;

/// Unshares a user namespace together with `namespaces` (which it then owns) and maps the
/// host user to `uid`/`gid` inside it.
pub(crate) fn enter(
    map: &IdMap,
    uid: u32,
    gid: u32,
    namespaces: CloneFlags,
) -> Result<(), BootstrapError> {
    let flags = CloneFlags::CLONE_NEWUSER | namespaces;
    unshare(flags).map_err(step_err("unshare", format!("{flags:?}")))?;
    write_maps(map, uid, gid)
}

/// Writes this process's id maps (one id each). `setgroups` must be denied before an
/// unprivileged process may write its `gid_map`; the function then keeps the host user's
/// supplementary groups (shown as the overflow gid), which it can neither drop nor use for
/// more than reading what those groups may read among the few host files the jail mounts.
pub(crate) fn write_maps(map: &IdMap, uid: u32, gid: u32) -> Result<(), BootstrapError> {
    let write = |file: &'static str, text: String| {
        std::fs::write(file, &text).map_err(io_step_err("write", format!("{file} ({text:?})")))
    };
    write("/proc/self/uid_map", format!("{uid} {} 1", map.outside_uid))?;
    write("/proc/self/setgroups", "deny".into())?;
    write("/proc/self/gid_map", format!("{gid} {} 1", map.outside_gid))
}
