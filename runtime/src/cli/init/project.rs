//! What `lamina init` writes, per runtime: the SAM template, the handler, the sample event and
//! the README, as text. Nothing here touches the disk. The handlers are written out in full
//! below, as a user will read them; the only values put into them are the template's (its
//! runtime, paths and the project's name, quoted for YAML), so no name can break the code.

use std::fmt;

use anyhow::Context;

use crate::managed::RuntimeName;
use crate::sample_events::{self, Options};

/// The kind of project, with the runtime version the template names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// `python3.N`: `hello/app.py`.
    Python {
        /// N.
        minor: u32,
    },
    /// `nodejsN.x`: `hello/app.mjs`, an ES module.
    Node {
        /// N.
        major: u32,
    },
    /// `provided.al2023` (or `provided.al2`): `hello/bootstrap`, a shell script.
    Provided {
        /// Whether the template names `provided.al2`.
        al2: bool,
    },
    /// A Cargo project on the official `lambda_runtime` crate, run as `provided.al2023`.
    Rust,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rust => f.write_str("rust"),
            other => f.write_str(&other.runtime()),
        }
    }
}

impl Kind {
    /// The template's `Runtime`.
    fn runtime(self) -> String {
        match self {
            Self::Python { minor } => format!("python3.{minor}"),
            Self::Node { major } => format!("nodejs{major}.x"),
            Self::Provided { al2: true } => "provided.al2".into(),
            Self::Provided { al2: false } | Self::Rust => "provided.al2023".into(),
        }
    }

    /// The managed runtime the template names, if any.
    pub(super) fn managed(self) -> Option<RuntimeName> {
        match self {
            Self::Python { minor } => Some(RuntimeName::Python { minor }),
            Self::Node { major } => Some(RuntimeName::Node { major }),
            Self::Provided { .. } | Self::Rust => None,
        }
    }

    /// The template's `CodeUri`.
    fn code_uri(self) -> &'static str {
        match self {
            // Where `cargo build --release` leaves the binary named `bootstrap`.
            Self::Rust => "target/release/",
            _ => "hello/",
        }
    }

    /// The template's `Handler`.
    fn handler(self) -> &'static str {
        match self {
            Self::Python { .. } => "app.lambda_handler",
            Self::Node { .. } => "app.handler",
            Self::Provided { .. } | Self::Rust => "bootstrap",
        }
    }
}

/// One file of the project.
#[derive(Debug)]
pub(super) struct File {
    /// Its path in the project.
    pub(super) path: &'static str,
    /// Its text.
    pub(super) text: String,
    /// Whether it is executable (a `bootstrap`).
    pub(super) executable: bool,
}

/// A project to write.
#[derive(Debug)]
pub(super) struct Project {
    kind: Kind,
    name: String,
    /// The Rust package's name: `name` as Cargo accepts it.
    package: String,
}

/// The route the template declares and the event is for.
const ROUTE_PATH: &str = "/hello";
const ROUTE_METHOD: &str = "GET";

impl Project {
    pub(super) fn new(kind: Kind, name: &str) -> anyhow::Result<Project> {
        if name.trim().is_empty() || name.chars().any(char::is_control) {
            anyhow::bail!("--name {name:?}: expected a name of one line, not empty");
        }
        Ok(Project {
            kind,
            name: name.to_owned(),
            package: package_name(name),
        })
    }

    pub(super) fn name(&self) -> &str {
        &self.name
    }

    pub(super) fn kind(&self) -> Kind {
        self.kind
    }

    /// `events/event.json`: lamina's own HTTP API sample for the template's route.
    pub(super) fn event(&self) -> anyhow::Result<String> {
        let options = Options {
            path: Some(ROUTE_PATH.into()),
            method: Some(ROUTE_METHOD.into()),
            ..Default::default()
        };
        let mut event =
            sample_events::generate("apigw-v2", &options).context("making the sample event")?;
        // The sample is for the `$default` route; `lamina serve` (as API Gateway) names the
        // route the request matched, and the event should be what the function gets from it.
        let route_key = format!("{ROUTE_METHOD} {ROUTE_PATH}");
        for pointer in ["/routeKey", "/requestContext/routeKey"] {
            if let Some(value) = event.pointer_mut(pointer) {
                *value = route_key.clone().into();
            }
        }
        let mut text = serde_json::to_string_pretty(&event).context("writing the sample event")?;
        text.push('\n');
        Ok(text)
    }

    /// Every file, in the order they are listed to the user; `event` is [`Self::event`]'s.
    pub(super) fn files(&self, event: &str) -> Vec<File> {
        let file = |path, text: String| File {
            path,
            text,
            executable: false,
        };
        let mut files = vec![file("template.yaml", self.template())];
        match self.kind {
            Kind::Python { .. } => files.push(file("hello/app.py", PYTHON_APP.into())),
            Kind::Node { .. } => files.push(file("hello/app.mjs", NODE_APP.into())),
            Kind::Provided { .. } => files.push(File {
                path: "hello/bootstrap",
                text: SHELL_BOOTSTRAP.into(),
                executable: true,
            }),
            Kind::Rust => {
                files.push(file("Cargo.toml", self.cargo_toml()));
                files.push(file("src/main.rs", RUST_MAIN.into()));
                files.push(file(".gitignore", "/target\n".into()));
            }
        }
        files.push(file("events/event.json", event.to_owned()));
        files.push(file("README.md", self.readme()));
        files
    }

    /// The commands to run next, each with what it does.
    pub(super) fn next_commands(&self) -> Vec<(&'static str, &'static str)> {
        let mut commands = Vec::new();
        if self.kind == Kind::Rust {
            commands.push((
                "cargo build --release",
                "first: builds target/release/bootstrap",
            ));
        }
        commands.extend([
            ("lamina serve", "serves template.yaml on 127.0.0.1:9000"),
            ("curl localhost:9000/hello", "from another shell"),
            (
                "lamina invoke HelloFunction --event events/event.json",
                "one invocation, no server",
            ),
            (
                "lamina serve --watch",
                "serves, reloading as the code changes",
            ),
        ]);
        commands
    }

    fn template(&self) -> String {
        let metadata = if self.kind == Kind::Rust {
            "    # `sam build` builds this function with cargo-lambda (CodeUri then names the Cargo\n\
             \x20   # project: ./). lamina runs what `cargo build --release` leaves in target/release.\n\
             \x20   Metadata:\n\
             \x20     BuildMethod: rust-cargolambda\n"
        } else {
            ""
        };
        // A JSON string is a YAML double-quoted scalar too: any name is quoted safely.
        let description = serde_json::Value::String(format!(
            "{}: a hello-world function, made by lamina init",
            self.name
        ));
        TEMPLATE
            .replace("@DESCRIPTION@", &description.to_string())
            .replace("@METADATA@", metadata)
            .replace("@CODE_URI@", self.kind.code_uri())
            .replace("@HANDLER@", self.kind.handler())
            .replace("@RUNTIME@", &self.kind.runtime())
            .replace("@PATH@", ROUTE_PATH)
            .replace("@METHOD@", ROUTE_METHOD)
    }

    fn cargo_toml(&self) -> String {
        CARGO_TOML.replace("@PACKAGE@", &self.package)
    }

    fn readme(&self) -> String {
        let handler = match self.kind {
            Kind::Python { .. } => "| `hello/app.py` | The handler, `app.lambda_handler` |\n",
            Kind::Node { .. } => {
                "| `hello/app.mjs` | The handler, `app.handler` (an ES module) |\n"
            }
            Kind::Provided { .. } => {
                "| `hello/bootstrap` | The function: a custom runtime in shell, speaking the \
                 Lambda Runtime API with curl |\n"
            }
            Kind::Rust => {
                "| `Cargo.toml`, `src/main.rs` | The function, on the official `lambda_runtime` \
                 crate; `cargo build --release` makes `target/release/bootstrap`, which the \
                 template runs |\n"
            }
        };
        let mut commands = String::new();
        for (command, comment) in self.next_commands() {
            commands.push_str(&format!("{command:<54}# {comment}\n"));
        }
        README
            .replace("@NAME@", &self.name)
            .replace("@RUNTIME@", &self.kind.to_string())
            .replace("@HANDLER_ROW@", handler)
            .replace("@COMMANDS@", &commands)
    }
}

/// `name` as a Cargo package name: lower-case letters, digits, `-` and `_`, starting with a
/// letter (`My app` is `my-app`: Cargo warns of upper case); `hello` when nothing is left.
fn package_name(name: &str) -> String {
    let replaced: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = replaced
        .trim_start_matches(|c: char| !c.is_ascii_alphabetic())
        .trim_end_matches('-');
    match trimmed {
        "" => "hello".to_owned(),
        name => name.to_owned(),
    }
}

/// `template.yaml`, as `sam init`'s hello-world has it. `@KEY@` marks what [`Project::template`]
/// fills in (not `format!`, whose braces would have to be doubled everywhere else).
const TEMPLATE: &str = r#"AWSTemplateFormatVersion: '2010-09-09'
Transform: AWS::Serverless-2016-10-31
Description: @DESCRIPTION@

# What every function in this template has unless it says otherwise.
Globals:
  Function:
    Timeout: 3

Resources:
  HelloFunction:
    Type: AWS::Serverless::Function
@METADATA@    Properties:
      CodeUri: @CODE_URI@
      Handler: @HANDLER@
      Runtime: @RUNTIME@
      MemorySize: 128
      Environment:
        Variables:
          GREETING: hello world
      Events:
        Hello:
          # An HTTP API route: `lamina serve` answers it on its HTTP front.
          Type: HttpApi
          Properties:
            Path: @PATH@
            Method: @METHOD@

Outputs:
  HelloApi:
    Description: The route's URL once deployed with `sam deploy`
    Value: !Sub "https://${ServerlessHttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}@PATH@"
"#;

const PYTHON_APP: &str = r#""""The function behind GET /hello.

Lambda (and lamina) call lambda_handler with the event, here an HTTP API request (payload
format 2.0), and the context; what it returns is an API Gateway proxy response: the HTTP
answer's status, headers and body.
"""

import json
import os


def lambda_handler(event, context):
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({"message": os.environ.get("GREETING", "hello")}),
    }
"#;

const NODE_APP: &str = r#"// The function behind GET /hello.
//
// Lambda (and lamina) call `handler` with the event, here an HTTP API request (payload format
// 2.0), and the context; what it returns is an API Gateway proxy response: the HTTP answer's
// status, headers and body.

export const handler = async (event, context) => ({
  statusCode: 200,
  headers: { "content-type": "application/json" },
  body: JSON.stringify({ message: process.env.GREETING ?? "hello" }),
});
"#;

const SHELL_BOOTSTRAP: &str = r#"#!/bin/sh
# The function behind GET /hello, as a custom runtime with no SDK. Lambda (and lamina) start
# this executable once per execution environment; it asks the Lambda Runtime API for one event
# at a time, with curl, and posts back its answer: an API Gateway proxy response.
# https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html
set -u
api="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
headers=$(mktemp) || exit 1
event=$(mktemp) || exit 1
trap 'rm -f "$headers" "$event"' EXIT
# The environment is stopped with SIGTERM. A shell runs its traps only between commands, so
# curl waits for the next event in the background: `wait` is interrupted by the signal.
trap 'exit 0' TERM

# $1 as the inside of a JSON string (one line: enough for a greeting).
json_string() {
  printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g'
}

# The answer to the event in the file $1.
handle() {
  body="{\"message\":\"$(json_string "${GREETING:-hello}")\"}"
  printf '{"statusCode":200,"headers":{"content-type":"application/json"},"body":"%s"}' \
    "$(json_string "$body")"
}

while :; do
  curl -sS -D "$headers" -o "$event" "$api/invocation/next" &
  wait $! || exit 1
  # The request id, from the response's headers (their names in any case).
  id=$(sed -n 's/^[Ll]ambda-[Rr]untime-[Aa]ws-[Rr]equest-[Ii]d:[[:space:]]*\([^[:space:]]*\).*/\1/p' "$headers")
  if response=$(handle "$event"); then
    curl -sS -o /dev/null -X POST "$api/invocation/$id/response" --data-binary "$response"
  else
    curl -sS -o /dev/null -X POST "$api/invocation/$id/error" \
      -H 'Lambda-Runtime-Function-Error-Type: Unhandled' \
      --data-binary '{"errorType":"HandlerFailed","errorMessage":"the handler failed"}'
  fi
done
"#;

/// The Rust project's manifest. The versions are the current releases' (`lambda_runtime` 1.5,
/// `aws_lambda_events` 1.2), the ones lamina's own tests run.
const CARGO_TOML: &str = r#"[package]
name = "@PACKAGE@"
version = "0.1.0"
edition = "2024"

# Lambda's custom runtimes run an executable named `bootstrap`.
[[bin]]
name = "bootstrap"
path = "src/main.rs"

[dependencies]
aws_lambda_events = { version = "1.2", default-features = false, features = ["apigw"] }
lambda_runtime = "1.5"
serde_json = "1"
tokio = { version = "1", features = ["macros", "rt-multi-thread"] }
"#;

const RUST_MAIN: &str = r#"//! The function behind GET /hello: the official runtime client (`lambda_runtime`) asks the
//! Lambda Runtime API for each event, here an HTTP API request (payload format 2.0), and
//! posts back what `hello` returns: an API Gateway proxy response.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::HeaderValue;
use aws_lambda_events::http::header::CONTENT_TYPE;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::json;

async fn hello(
    _event: LambdaEvent<ApiGatewayV2httpRequest>,
) -> Result<ApiGatewayV2httpResponse, Error> {
    let greeting = std::env::var("GREETING").unwrap_or_else(|_| "hello".to_owned());
    // The response type is non-exhaustive: it is built from its default.
    let mut response = ApiGatewayV2httpResponse::default();
    response.status_code = 200;
    response
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response.body = Some(Body::Text(json!({ "message": greeting }).to_string()));
    Ok(response)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(hello)).await
}
"#;

const README: &str = r#"# @NAME@

A Lambda function made by `lamina init` (runtime @RUNTIME@): `HelloFunction` answers
`GET /hello` with `{"message": "hello world"}`.

| File | What it is |
|---|---|
| `template.yaml` | The SAM template: the function's code, handler, runtime, memory, timeout, environment, and its HTTP API route |
@HANDLER_ROW@| `events/event.json` | A sample HTTP API event (payload format 2.0) for `GET /hello` |

## Run it

```sh
@COMMANDS@```

`lamina event generate apigw-v2 --path /hello` makes a fresh event, and
`lamina invoke HelloFunction --event-template apigw-v2` sends one without a file.
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_becomes_a_cargo_package_name() {
        assert_eq!(package_name("my-app"), "my-app");
        assert_eq!(package_name("My app.v2"), "my-app-v2");
        assert_eq!(package_name("2fast_"), "fast_");
        assert_eq!(package_name("..."), "hello");
    }

    #[test]
    fn the_template_quotes_the_name_and_names_the_runtime() {
        let project = Project::new(Kind::Node { major: 22 }, "say \"hi\": now").unwrap();
        let template = project.template();
        assert!(
            template.contains(
                r#"Description: "say \"hi\": now: a hello-world function, made by lamina init""#
            ),
            "{template}"
        );
        assert!(
            template.contains("      Runtime: nodejs22.x\n"),
            "{template}"
        );
        assert!(
            template.contains("      Handler: app.handler\n"),
            "{template}"
        );
        assert!(!template.contains('@'), "{template}");
        let rust = Project::new(Kind::Rust, "r").unwrap().template();
        assert!(
            rust.contains("    Metadata:\n      BuildMethod: rust-cargolambda\n    Properties:\n"),
            "{rust}"
        );
        assert!(Project::new(Kind::Rust, "two\nlines").is_err());
    }
}
