//! `lamina init`: a new project. (Being written.)

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

/// Arguments of `lamina init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The directory to create [default: the current directory].
    pub dir: Option<PathBuf>,
    /// The runtime: python3.12, nodejs20.x, provided.al2023 or rust.
    #[arg(long, default_value = "python3.12")]
    pub runtime: String,
}

/// Runs `lamina init`.
pub fn run(args: InitArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("lamina init --runtime {}: not written yet", args.runtime)
}
