//! `lamina-bootstrap`: reads a [`lamina_bootstrap::JailSpec`] as length-prefixed JSON on stdin
//! (a Unix socket that stays open as the host's control channel), builds the jail and runs the
//! function in it, then exits the way the function did. `lamina-bootstrap --check` instead
//! reports what the host lets the jail do, one line per capability. Exit 125 means the
//! jail itself could not be built (the message on stderr names the step).

use std::process::ExitCode;

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("--check") {
        // One line per capability; exit 1 if the jail cannot run here.
        let findings = lamina_bootstrap::check::run();
        for finding in &findings {
            println!("{finding}");
        }
        return if findings.iter().all(|f| f.problem.is_none()) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    // The first frame of the spec (see `lamina_bootstrap::spec`): read unbuffered, since PID 1
    // reads the second one from the same socket later.
    use std::os::fd::FromRawFd;
    // SAFETY: fd 0 is our stdin, open for the life of the process; ManuallyDrop keeps this
    // handle from closing it.
    let stdin = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(0) });
    let bytes = match lamina_bootstrap::spec::read_frame(&*stdin) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => {
            eprintln!("lamina-bootstrap: reading the jail spec from stdin: nothing was sent");
            return ExitCode::from(125);
        }
        Err(e) => {
            eprintln!("lamina-bootstrap: reading the jail spec from stdin: {e}");
            return ExitCode::from(125);
        }
    };
    let outcome = lamina_bootstrap::jail::parse_spec(&bytes)
        .and_then(|spec| lamina_bootstrap::jail::run(&spec));
    match outcome {
        Ok(lamina_bootstrap::jail::ExitReport::Code(code)) => {
            ExitCode::from(u8::try_from(code).unwrap_or(255))
        }
        Ok(lamina_bootstrap::jail::ExitReport::Signal(signal)) => {
            // Die of the same signal, so the host sees what the function saw.
            // SAFETY: restoring the default action and raising a signal at ourselves.
            unsafe {
                libc::signal(signal, libc::SIG_DFL);
                libc::raise(signal);
            }
            ExitCode::from(128u8.saturating_add(u8::try_from(signal).unwrap_or(127)))
        }
        Err(e) => {
            eprintln!("lamina-bootstrap: {e}");
            ExitCode::from(125)
        }
    }
}
