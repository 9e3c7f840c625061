//! The `lamina` binary: parse the command line, run it, map the result to an exit code. The
//! same binary is the native jail's sandbox helper (`lamina __sandbox`, see
//! `lamina_bootstrap::entry`).

use std::process::ExitCode;

/// Many small allocations on every core, for every invocation: mimalloc's thread-local heaps
/// take them without glibc's arena locking (see the workspace manifest).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // The sandbox helper first, before anything (an async runtime above all) starts threads.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if lamina_bootstrap::entry::is_helper_invocation(&args) {
        return lamina_bootstrap::entry::main(&args[2..]);
    }
    lamina_runtime::cli::main()
}
