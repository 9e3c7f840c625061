//! The sandbox helper's entry point. There is no separate helper binary: `lamina` itself is
//! the helper, started by the host as `lamina __sandbox` (see [`HELPER_ARG`]), so one binary
//! is all a user builds, copies or installs, and the helper always matches the host.
//!
//! As the helper, the process reads a [`crate::ShellSpec`] as length-prefixed JSON on stdin
//! (a Unix socket that stays open as the host's control channel), builds the jail and runs the
//! function in it, then exits the way the function did. With `--check` it instead reports what
//! the host lets the jail do, one line per capability. Exit 125 means the jail itself could
//! not be built (the message on stderr names the step).

use std::ffi::OsString;
use std::process::ExitCode;

/// The first argument that makes `lamina` the sandbox helper. Not a subcommand users see: the
/// host passes it, and `lamina`'s `main` checks it before anything else runs (the helper must
/// stay single-threaded, so no async runtime may have started).
pub const HELPER_ARG: &str = "__sandbox";

/// Whether `args` (the whole command line, program name first) ask for the helper.
pub fn is_helper_invocation(args: &[OsString]) -> bool {
    args.get(1).is_some_and(|a| a == HELPER_ARG)
}

/// Runs the helper with the arguments after [`HELPER_ARG`]; returns the process's exit code.
pub fn main(args: &[OsString]) -> ExitCode {
    if args.first().is_some_and(|a| a == crate::tmpfs::TMPFS_ARG) {
        return ExitCode::from(u8::try_from(crate::tmpfs::serve()).unwrap_or(125));
    }
    if args.first().is_some_and(|a| a == "--check") {
        // One line per capability; exit 1 if the jail cannot run here.
        let findings = crate::check::run();
        for finding in &findings {
            println!("{finding}");
        }
        return if findings.iter().all(|f| f.problem.is_none()) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    // The first frame of the spec (see `crate::spec`): read unbuffered, since PID 1
    // reads the second one from the same socket later.
    use std::os::fd::FromRawFd;
    // SAFETY: fd 0 is our stdin, open for the life of the process; ManuallyDrop keeps this
    // handle from closing it.
    let stdin = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(0) });
    let bytes = match crate::spec::read_frame(&*stdin) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => {
            eprintln!("lamina sandbox helper: reading the jail spec from stdin: nothing was sent");
            return ExitCode::from(125);
        }
        Err(e) => {
            eprintln!("lamina sandbox helper: reading the jail spec from stdin: {e}");
            return ExitCode::from(125);
        }
    };
    let outcome = crate::jail::parse_spec(&bytes).and_then(|spec| crate::jail::run(&spec));
    match outcome {
        Ok(crate::jail::ExitReport::Code(code)) => {
            ExitCode::from(u8::try_from(code).unwrap_or(255))
        }
        Ok(crate::jail::ExitReport::Signal(signal)) => {
            // Die of the same signal, so the host sees what the function saw.
            // SAFETY: restoring the default action and raising a signal at ourselves.
            unsafe {
                libc::signal(signal, libc::SIG_DFL);
                libc::raise(signal);
            }
            ExitCode::from(128u8.saturating_add(u8::try_from(signal).unwrap_or(127)))
        }
        Err(e) => {
            eprintln!("lamina sandbox helper: {e}");
            ExitCode::from(125)
        }
    }
}
