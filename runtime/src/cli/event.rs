//! `lamina event generate NAME` prints a sample event of an event source on stdout, as its
//! service sends it to a function; `lamina event list` names the sources there are samples of.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::sample_events::{self, Options};

/// `lamina event …`.
#[derive(Debug, Subcommand)]
pub enum EventCommand {
    /// Print a sample event of an event source, as pretty JSON (`lamina invoke
    /// --event-template NAME` sends the same, with default options).
    Generate(GenerateArgs),
    /// List the event sources there are samples of, each with a one-line description.
    List,
}

/// Arguments of `lamina event generate`. An option the event does not take is refused.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// The event source: apigw-v2, apigw-v1, alb, sqs, sns, s3, dynamodb, eventbridge,
    /// schedule, s3-object-lambda, kinesis.
    pub name: String,
    /// HTTP events (apigw-v2, apigw-v1, alb): the request path, with an optional `?query`
    /// [default: /]
    #[arg(long)]
    pub path: Option<String>,
    /// HTTP events: the request method [default: GET, or POST with --body]
    #[arg(long)]
    pub method: Option<String>,
    /// HTTP events: the request body; sqs, sns: the message; kinesis: the record's data;
    /// eventbridge: the detail, a JSON object.
    #[arg(long)]
    pub body: Option<String>,
    /// s3, s3-object-lambda: the bucket [default: example-bucket]
    #[arg(long)]
    pub bucket: Option<String>,
    /// s3, s3-object-lambda: the object key, unencoded (the event has it encoded as S3
    /// encodes it) [default: example/hello.txt]
    #[arg(long)]
    pub key: Option<String>,
    /// The region in the event's ARNs, host names and `awsRegion`.
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
}

/// Runs `lamina event …`.
pub fn run(command: EventCommand) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    match command {
        EventCommand::Generate(args) => {
            let options = Options {
                path: args.path,
                method: args.method,
                body: args.body,
                bucket: args.bucket,
                key: args.key,
                region: Some(args.region),
            };
            let event = sample_events::generate(&args.name, &options)?;
            writeln!(stdout, "{}", serde_json::to_string_pretty(&event)?)
                .context("writing the event to stdout")?;
        }
        EventCommand::List => {
            for name in sample_events::NAMES {
                let description = sample_events::description(name).unwrap_or_default();
                writeln!(stdout, "{name:<18}{description}").context("writing to stdout")?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
