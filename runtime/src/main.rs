//! The `lamina` binary: parse the command line, run it, map the result to an exit code.

use std::process::ExitCode;

/// Many small allocations on every core, for every invocation: mimalloc's thread-local heaps
/// take them without glibc's arena locking (see the workspace manifest).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    lamina_runtime::cli::main()
}
