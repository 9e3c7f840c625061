//! `lamina layers check`: validate archives without extracting them.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use lamina_layers::{Limits, scan};

/// `lamina layers …`
#[derive(Debug, Subcommand)]
pub enum LayersCommand {
    /// Check layer or package archives: list every problem; exit 1 if there is any.
    Check {
        /// The archives (.zip) to check.
        #[arg(required = true)]
        archives: Vec<PathBuf>,
    },
}

/// Runs `lamina layers …`.
pub fn run(command: LayersCommand) -> anyhow::Result<ExitCode> {
    let LayersCommand::Check { archives } = command;
    let limits = Limits::default();
    let mut stdout = std::io::stdout();
    let mut problems = 0;
    for archive in &archives {
        match scan(archive, &limits) {
            Ok(plan) => writeln!(
                stdout,
                "{}: ok ({} entries, {} bytes unzipped)",
                archive.display(),
                plan.entries.len(),
                plan.total_bytes
            )?,
            Err(found) => {
                problems += found.0.len();
                for problem in &found.0 {
                    writeln!(stdout, "{problem}")?;
                }
            }
        }
    }
    Ok(if problems == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
