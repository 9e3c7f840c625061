//! The `lamina` binary: parse the command line, run it, map the result to an exit code.

use std::process::ExitCode;

fn main() -> ExitCode {
    lamina_runtime::cli::main()
}
