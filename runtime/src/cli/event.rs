//! `lamina event generate NAME`: a sample event on stdout. (Being written.)

use std::process::ExitCode;

use clap::Subcommand;

/// `lamina event …`.
#[derive(Debug, Subcommand)]
pub enum EventCommand {
    /// Print a sample event of an event source.
    Generate {
        /// The event source.
        name: String,
    },
}

/// Runs `lamina event …`.
pub fn run(command: EventCommand) -> anyhow::Result<ExitCode> {
    match command {
        EventCommand::Generate { name } => {
            let event = crate::sample_events::generate(&name, &Default::default())?;
            println!("{}", serde_json::to_string_pretty(&event)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}
