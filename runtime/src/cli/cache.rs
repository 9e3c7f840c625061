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
    /// List cached trees: size (hard links counted once), last use, and what each came from.
    Ls {
        /// The cache directory.
        #[arg(long, env = "LAMINA_CACHE_DIR")]
        cache_dir: Option<PathBuf>,
    },
    /// Remove cached trees: those not used for a while (`--older-than 7d`), else every one.
    Prune {
        /// The cache directory.
        #[arg(long, env = "LAMINA_CACHE_DIR")]
        cache_dir: Option<PathBuf>,
        /// Only trees not used for this long (`7d`, `12h`, `30m`).
        #[arg(long, value_name = "AGE", value_parser = humantime::parse_duration)]
        older_than: Option<std::time::Duration>,
    },
}

/// Runs `lamina cache …`.
pub fn run(command: CacheCommand) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout();
    match command {
        CacheCommand::Ls { cache_dir } => {
            let cache = open_cache(&cache_dir.unwrap_or_else(Cache::default_root))?;
            let entries = cache.list()?;
            writeln!(
                stdout,
                "{:>9}  {:<20}  {:<24}  FROM",
                "SIZE", "LAST USED", "ENTRY"
            )?;
            let mut total = 0;
            for entry in &entries {
                total += entry.bytes;
                let name = shorten(&entry.name);
                writeln!(
                    stdout,
                    "{:>9}  {:<20}  {name:<24}  {}",
                    human_bytes(entry.bytes),
                    entry.last_used.map_or_else(
                        || "unknown".to_owned(),
                        |t| humantime::format_rfc3339_seconds(t).to_string()
                    ),
                    entry.origin.as_deref().unwrap_or("(not recorded)")
                )?;
            }
            writeln!(
                stdout,
                "{:>9}  in {} ({}, each file counted once)",
                human_bytes(total),
                cache.root().display(),
                super::plural(entries.len(), "entry", "entries"),
            )?;
        }
        CacheCommand::Prune {
            cache_dir,
            older_than,
        } => {
            let cache = open_cache(&cache_dir.unwrap_or_else(Cache::default_root))?;
            match older_than {
                None => {
                    let removed = cache.prune()?;
                    writeln!(
                        stdout,
                        "removed {} from {}",
                        super::plural(removed, "cached tree", "cached trees"),
                        cache.root().display()
                    )?;
                }
                Some(age) => {
                    let cutoff = std::time::SystemTime::now()
                        .checked_sub(age)
                        .unwrap_or(std::time::UNIX_EPOCH);
                    let removed = cache.prune_unused_since(cutoff)?;
                    for entry in &removed {
                        writeln!(
                            stdout,
                            "removed {} ({}, {})",
                            entry.name,
                            human_bytes(entry.bytes),
                            entry.origin.as_deref().unwrap_or("origin not recorded")
                        )?;
                    }
                    writeln!(
                        stdout,
                        "removed {} not used for {} from {}",
                        super::plural(removed.len(), "cached tree", "cached trees"),
                        humantime::format_duration(age),
                        cache.root().display()
                    )?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `trees/<64 hex digits>` → `trees/<first 12>…`: enough to tell entries apart.
fn shorten(name: &str) -> String {
    match name.split_once('/') {
        Some((kind, id)) if id.len() > 16 => {
            let cut = id.char_indices().nth(16).map_or(id.len(), |(i, _)| i);
            format!("{kind}/{}…", &id[..cut])
        }
        _ => name.to_owned(),
    }
}

/// Bytes in binary units with one decimal: `512 B`, `1.5 KiB`, `21.0 MiB`.
pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes} B"),
        _ => format!("{value:.1} {}", UNITS[unit]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(21 * 1024 * 1024), "21.0 MiB");
        assert_eq!(
            shorten("trees/0123456789abcdef0123"),
            "trees/0123456789abcdef…"
        );
        assert_eq!(shorten("opt/short"), "opt/short");
    }
}
