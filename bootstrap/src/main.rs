//! `lamina-bootstrap`: reads a [`lamina_bootstrap::JailSpec`] as JSON on stdin, builds the
//! jail and runs the function in it, then exits the way the function did. Exit 125 means the
//! jail itself could not be built (the message on stderr names the step).

use std::io::Read;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut bytes = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut bytes) {
        eprintln!("lamina-bootstrap: reading the jail spec from stdin: {e}");
        return ExitCode::from(125);
    }
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
