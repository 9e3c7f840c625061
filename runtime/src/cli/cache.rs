//! `lamina cache ls` and `lamina cache prune`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use lamina_layers::Cache;

use crate::run_dir::open_cache;

/// `lamina cache …`
#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// List cached trees with their sizes.
    Ls {
        /// The cache directory.
        #[arg(long, env = "LAMINA_CACHE_DIR")]
        cache_dir: Option<PathBuf>,
    },
    /// Remove every cached tree.
    Prune {
        /// The cache directory.
        #[arg(long, env = "LAMINA_CACHE_DIR")]
        cache_dir: Option<PathBuf>,
    },
}

/// Runs `lamina cache …`.
pub fn run(command: CacheCommand) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout();
    match command {
        CacheCommand::Ls { cache_dir } => {
            let cache = open_cache(&cache_dir.unwrap_or_else(Cache::default_root))?;
            let mut total = 0;
            for (name, bytes) in cache.list()? {
                total += bytes;
                writeln!(stdout, "{bytes:>12}  {name}")?;
            }
            writeln!(stdout, "{total:>12}  total in {}", cache.root().display())?;
        }
        CacheCommand::Prune { cache_dir } => {
            let cache = open_cache(&cache_dir.unwrap_or_else(Cache::default_root))?;
            let removed = cache.prune()?;
            writeln!(
                stdout,
                "removed {removed} cached trees from {}",
                cache.root().display()
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
