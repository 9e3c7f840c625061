//! `lamina layers check`: validate archives without extracting them.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use lamina_layers::{EntryKind, Limits, Scan, scan};

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
            Ok(plan) => {
                writeln!(
                    stdout,
                    "{}: ok ({}, {} bytes unzipped)",
                    archive.display(),
                    super::plural(plan.entries.len(), "entry", "entries"),
                    plan.total_bytes
                )?;
                for warning in not_executable(&plan) {
                    writeln!(stdout, "{}: warning: {warning}", archive.display())?;
                }
            }
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

/// Files that must run but will not: a `bootstrap` at the top (a function's or a runtime
/// layer's) or an extension in `extensions/`, stored without execute permission. They extract
/// read-only and not executable, and the function then fails to start. A warning, not a
/// problem: the archive itself is sound.
fn not_executable(plan: &Scan) -> Vec<String> {
    plan.entries
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                EntryKind::File {
                    executable: false,
                    ..
                }
            )
        })
        .filter(|e| {
            e.path == std::path::Path::new("bootstrap")
                || e.path.parent() == Some(std::path::Path::new("extensions"))
        })
        .map(|e| {
            format!(
                "{} is not executable: it cannot be started once extracted; make it executable \
                 (chmod +x) and zip it again with a tool that keeps Unix permissions",
                e.path.display()
            )
        })
        .collect()
}
