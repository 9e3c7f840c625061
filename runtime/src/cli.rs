//! The command line: one file per verb. This is the only place (with `main`) that knows the
//! terminal, uses `anyhow`, and decides exit codes: 0 success, 1 the invocation failed, 2 usage
//! or configuration errors, with a one-line message naming what is wrong.

pub mod cache;
pub mod doctor;
pub mod event;
pub mod events;
pub mod init;
pub mod invoke;
pub mod layers;
pub mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// lamina: a self-hosted, AWS-Lambda-compatible function runtime.
#[derive(Debug, Parser)]
#[command(
    name = "lamina",
    version,
    about = "Runs AWS Lambda functions on your own machine, as Lambda runs them: a custom \
             runtime (an executable `bootstrap`) or a WebAssembly module, isolated, invoked once \
             from the command line or served over Lambda's Invoke API and an HTTP front.",
    long_about = None
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one function locally: payload on stdout, Lambda's log lines on stderr.
    Invoke(Box<invoke::InvokeArgs>),
    /// Serve functions over HTTP: the Lambda Invoke API and an API Gateway-style front.
    Serve(Box<serve::ServeArgs>),
    /// Work with layers.
    #[command(subcommand)]
    Layers(layers::LayersCommand),
    /// See and reclaim the cache of extracted archives.
    #[command(subcommand)]
    Cache(cache::CacheCommand),
    /// Show what this host allows and what each backend enforces here (exit 1 if the jail
    /// cannot run).
    Doctor,
    /// Sample events of Lambda's event sources.
    #[command(subcommand)]
    Event(event::EventCommand),
    /// The asynchronous queue of a state directory: list it (also while `lamina serve` runs),
    /// replay failed events, purge queued ones.
    #[command(subcommand)]
    Events(events::EventsCommand),
    /// Start a project: a SAM template, a handler and a sample event, ready for `lamina serve`.
    Init(init::InitArgs),
}

/// Exit code for usage and configuration errors.
pub const EXIT_USAGE: u8 = 2;

/// Parses the command line, runs it, and returns the process's exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("lamina: error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Invoke(args) => invoke::run(*args).await,
            Command::Serve(args) => serve::run(*args).await,
            Command::Layers(command) => layers::run(command),
            Command::Cache(command) => cache::run(command),
            Command::Doctor => doctor::run(),
            Command::Event(command) => event::run(command),
            Command::Events(command) => events::run(command).await,
            Command::Init(args) => init::run(args),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lamina: error: {e:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// lamina's own diagnostics go to stderr, quiet by default (`RUST_LOG=debug` for more), so that
/// they never mix into the function's payload on stdout.
fn init_tracing() {
    // Refused requests are logged at `info`, shown by default: an operator should see why a
    // client got a 404 or a 429 without turning on debugging.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("warn,{}=info", crate::serve::REQUEST_LOG))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// `1 route`, `2 routes`: counts in the messages read as English.
pub(crate) fn plural(n: usize, one: &str, many: &str) -> String {
    match n {
        1 => format!("1 {one}"),
        n => format!("{n} {many}"),
    }
}

/// The bundled examples' configuration, used when there is no `lamina.toml` and lamina was
/// started by `cargo run` in its own source tree (cargo then sets `CARGO_MANIFEST_DIR` to the
/// directory lamina was built from). A binary copied or installed elsewhere has no examples
/// beside it, and must not find a source tree's by a path compiled into it.
fn bundled_examples() -> Option<std::path::PathBuf> {
    let built_from = env!("CARGO_MANIFEST_DIR");
    let run_by_cargo = std::env::var_os("CARGO_MANIFEST_DIR").is_some_and(|d| d == built_from);
    let examples = std::path::Path::new(built_from).join("../examples/lamina.toml");
    (run_by_cargo && examples.is_file()).then_some(examples)
}

/// The configuration `--config` (or `--template`) names, else `./lamina.toml`, else a SAM
/// template in the current directory (`template.yaml`, `template.yml`, `template.json`), else
/// (under `cargo run`) the bundled examples.
pub fn find_config(given: Option<&std::path::Path>) -> anyhow::Result<std::path::PathBuf> {
    use crate::config::file::FILE_NAME;
    if let Some(path) = given {
        return Ok(path.to_owned());
    }
    let here = std::path::Path::new(FILE_NAME);
    if here.is_file() {
        return Ok(here.to_owned());
    }
    if let Some(template) = crate::config::template::FILE_NAMES
        .iter()
        .map(std::path::Path::new)
        .find(|p| p.is_file())
    {
        return Ok(template.to_owned());
    }
    if let Some(examples) = bundled_examples() {
        return Ok(examples);
    }
    let cwd = std::env::current_dir().map_or_else(|_| ".".into(), |d| d.display().to_string());
    anyhow::bail!(
        "no configuration: no --config or --template was given and there is no {FILE_NAME} or \
         template.yaml in {cwd} (the bundled examples are served only by `cargo run` in \
         lamina's source tree)"
    )
}

/// How a template is read: the flags `lamina serve` and `lamina invoke` share.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TemplateArgs {
    /// A SAM template to run instead of lamina.toml [default: ./template.yaml when there is no
    /// lamina.toml]
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    pub template: Option<std::path::PathBuf>,
    /// The template's parameters: `Key=Value` (or SAM's `ParameterKey=K,ParameterValue=V`),
    /// one or more.
    #[arg(long, value_name = "KEY=VALUE", num_args = 1..)]
    pub parameter_overrides: Vec<String>,
    /// A local directory or .zip standing for a layer ARN the template names; repeatable.
    #[arg(long = "layer-arn", value_name = "ARN=PATH")]
    pub layer_arns: Vec<String>,
}

/// A configuration read: `lamina.toml`, or a SAM template (whose notes, one per resource or
/// property lamina does not use, are printed here, once).
pub fn load_config(
    path: &std::path::Path,
    template: &TemplateArgs,
    region: Option<&str>,
) -> anyhow::Result<crate::config::file::Manifest> {
    use crate::config::template;
    if !template::is_template(path) {
        return Ok(crate::config::file::Manifest::load(path)?);
    }
    let mut layer_arns = Vec::new();
    for pair in &template.layer_arns {
        match pair.rsplit_once('=') {
            Some((arn, p)) if !arn.is_empty() && !p.is_empty() => {
                layer_arns.push((arn.to_owned(), std::path::PathBuf::from(p)));
            }
            _ => anyhow::bail!("--layer-arn {pair:?}: expected ARN=PATH"),
        }
    }
    let loaded = template::load(
        path,
        &template::Options {
            parameter_overrides: template.parameter_overrides.clone(),
            layer_arns,
            region: region.map(str::to_owned),
        },
    )?;
    for note in &loaded.notes {
        eprintln!("lamina: note: {note}");
    }
    Ok(loaded.manifest)
}

/// What the functions get from the caller's environment: the flags `lamina serve` and
/// `lamina invoke` share.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EnvArgs {
    /// Environment variables for the functions: SAM's `--env-vars` JSON
    /// (`{"FunctionId": {"K": "v"}, "Parameters": {"K": "v"}}`) or a `.env` file of
    /// `KEY=VALUE` lines; its values win over the configuration's.
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<std::path::PathBuf>,
    /// The AWS profile whose credentials the functions get (from ~/.aws/credentials or
    /// ~/.aws/config) [default: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY from the
    /// environment, else AWS_PROFILE, else the default profile]
    #[arg(long, value_name = "NAME", conflicts_with = "no_credentials")]
    pub profile: Option<String>,
    /// Give the functions no AWS credentials.
    #[arg(long)]
    pub no_credentials: bool,
}

impl EnvArgs {
    /// The env file, read.
    pub fn env_file(&self) -> anyhow::Result<Option<crate::config::env_file::EnvFile>> {
        Ok(match &self.env_file {
            Some(path) => Some(crate::config::env_file::EnvFile::load(path)?),
            None => None,
        })
    }

    /// The caller's credentials, unless turned off.
    pub fn credentials(&self) -> anyhow::Result<Option<crate::config::credentials::Credentials>> {
        use crate::config::credentials;
        if self.no_credentials {
            return Ok(None);
        }
        Ok(credentials::from_caller(
            self.profile.as_deref(),
            &credentials::Sources::of_this_process(),
        )?)
    }
}
