//! A SAM template (`template.yaml`, or JSON) as lamina's configuration: the second front-end
//! beside `lamina.toml` ([`super::file`]), resolving to the same [`Manifest`] of
//! [`FunctionConfig`]s and routes, so that nothing after it knows which was written.
//!
//! Read: `Parameters` (defaults, `--parameter-overrides`, `AllowedValues`), `Mappings`,
//! `Conditions`, `Globals.Function` (merged as SAM merges: the resource's scalars win, maps are
//! merged, lists are the globals' then the resource's), and `Resources`:
//! `AWS::Serverless::Function` (code, handler, runtime, memory, timeout, environment, `/tmp`
//! size, reserved concurrency, architectures, layers, retries, logging (`LoggingConfig`:
//! `template/logging.rs`), events `Api` and `HttpApi` as routes, `SQS` events and destinations
//! with the queues they name: `template/sqs.rs`) and
//! `AWS::Serverless::LayerVersion` (`ContentUri`), with the intrinsic functions of
//! [`intrinsics`]. Everything else in the template is listed once, as a note naming the file,
//! the logical id and the property, never dropped silently; a template error names the same.

pub mod intrinsics;
mod logging;
mod sqs;
pub mod yaml;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::file::{
    AsyncConfig, Destination, EventSourceEntry, FunctionEntry, Manifest, ManifestError,
    PayloadVersion, RouteConfig, ScheduleEntry, ServeSettings,
};
use super::{ACCOUNT_ID, DEFAULT_REGION, FunctionConfig};
use intrinsics::{ExprError, Resource, Scope};

/// The file names a template is found by in the current directory, in order.
pub const FILE_NAMES: [&str; 3] = ["template.yaml", "template.yml", "template.json"];

/// The SAM transform every template with `AWS::Serverless::*` resources declares.
const SAM_TRANSFORM: &str = "AWS::Serverless-2016-10-31";

/// Whether `path` names a template rather than a `lamina.toml`.
pub fn is_template(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
}

/// What the command line adds to a template.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--parameter-overrides`: `Key=Value`, or SAM's `ParameterKey=K,ParameterValue=V`.
    pub parameter_overrides: Vec<String>,
    /// Local paths for layer ARNs the template names (`--layer-arn ARN=PATH`).
    pub layer_arns: Vec<(String, PathBuf)>,
    /// `AWS::Region` [default: us-east-1].
    pub region: Option<String>,
}

/// A template, read: the manifest it stands for, and what in it lamina does not use.
#[derive(Debug)]
pub struct Loaded {
    /// Functions (by logical id) and routes.
    pub manifest: Manifest,
    /// One line per resource or property lamina does not use: `FILE: ID: PROPERTY: why`.
    pub notes: Vec<String>,
}

/// Sections a template may have.
const SECTIONS: &[&str] = &[
    "AWSTemplateFormatVersion",
    "Transform",
    "Description",
    "Metadata",
    "Parameters",
    "Mappings",
    "Conditions",
    "Rules",
    "Globals",
    "Resources",
    "Outputs",
];

/// Function properties that mean nothing on one machine (IAM, VPC, deployment, tracing,
/// tags): listed once, as unused.
const CLOUD_ONLY: &[&str] = &[
    "Role",
    "Policies",
    "PermissionsBoundary",
    "AssumeRolePolicyDocument",
    "RolePath",
    "VpcConfig",
    "Tags",
    "PropagateTags",
    "Tracing",
    "KmsKeyArn",
    "AutoPublishAlias",
    "AutoPublishAliasAllProperties",
    "AutoPublishCodeSha256",
    "VersionDescription",
    "VersionDeletionPolicy",
    "DeploymentPreference",
    "ProvisionedConcurrencyConfig",
    "CodeSigningConfigArn",
    "DeadLetterQueue",
    "FileSystemConfigs",
    "SnapStart",
    "RuntimeManagementConfig",
    "RecursiveLoop",
    "ImageConfig",
    "ImageUri",
    "Capacity",
];

/// Reads the template at `path`.
pub fn load(path: &Path, options: &Options) -> Result<Loaded, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|e| ManifestError {
        problems: vec![format!("{}: {e}", path.display())],
    })?;
    parse(path, &text, options)
}

/// Reads `text`, the template at `path`. An `AWS::SQS::Queue` stands for the queue of its name
/// at the SQS endpoint the environment sets (`AWS_ENDPOINT_URL_SQS`), if any.
pub fn parse(path: &Path, text: &str, options: &Options) -> Result<Loaded, ManifestError> {
    let endpoint = crate::config::sqs_address::endpoint_from_env();
    parse_with_sqs_endpoint(path, text, options, endpoint)
}

fn parse_with_sqs_endpoint(
    path: &Path,
    text: &str,
    options: &Options,
    sqs_endpoint: Option<String>,
) -> Result<Loaded, ManifestError> {
    let file = path.display().to_string();
    let root = yaml::parse(text).map_err(|e| ManifestError {
        problems: vec![format!("{file}: {e}")],
    })?;
    let mut reader = Reader {
        file: file.clone(),
        base: path.parent().unwrap_or(Path::new(".")).to_owned(),
        problems: Vec::new(),
        notes: Vec::new(),
        scope: Scope::default(),
        sqs_endpoint,
        event_sources: Vec::new(),
    };
    let functions_and_routes = reader.read(&root, options);
    if !reader.problems.is_empty() {
        return Err(ManifestError {
            problems: reader.problems,
        });
    }
    let (functions, routes) = functions_and_routes;
    Ok(Loaded {
        manifest: Manifest {
            path: path.to_owned(),
            function_urls: functions
                .values()
                .filter(|e| e.function_url)
                .filter_map(|e| e.config.name.clone())
                .collect(),
            functions,
            routes,
            event_sources: reader.event_sources,
            serve: ServeSettings::default(),
        },
        notes: reader.notes,
    })
}

struct Reader {
    file: String,
    base: PathBuf,
    problems: Vec<String>,
    notes: Vec<String>,
    scope: Scope,
    /// Where the template's `AWS::SQS::Queue`s are (`AWS_ENDPOINT_URL_SQS`).
    sqs_endpoint: Option<String>,
    /// Its functions' `SQS` events.
    event_sources: Vec<EventSourceEntry>,
}

type Functions = BTreeMap<String, FunctionEntry>;

impl Reader {
    fn problem(&mut self, at: &str, what: impl std::fmt::Display) {
        self.problems.push(format!("{}: {at}: {what}", self.file));
    }

    fn note(&mut self, at: &str, what: impl std::fmt::Display) {
        self.notes.push(format!("{}: {at}: {what}", self.file));
    }

    fn read(&mut self, root: &Value, options: &Options) -> (Functions, Vec<RouteConfig>) {
        let mut functions = BTreeMap::new();
        let mut routes = Vec::new();
        let Some(root) = root.as_object() else {
            self.problem("template", "expected a mapping of sections");
            return (functions, routes);
        };
        for key in root.keys() {
            if !SECTIONS.contains(&key.as_str()) {
                self.problem(key, "not a template section");
            }
        }
        let empty = Map::new();
        let section = |name: &str| root.get(name).and_then(Value::as_object).unwrap_or(&empty);
        let resources = section("Resources");
        if resources.is_empty() {
            self.problem(
                "Resources",
                "missing or empty: a template declares at least one resource",
            );
        }
        let serverless = resources.values().any(|r| {
            r.get("Type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.starts_with("AWS::Serverless::"))
        });
        let transforms: Vec<&str> = match root.get("Transform") {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if serverless && !transforms.contains(&SAM_TRANSFORM) {
            self.problem(
                "Transform",
                format!("AWS::Serverless::* resources need \"Transform: {SAM_TRANSFORM}\""),
            );
        }
        for other in transforms.iter().filter(|t| **t != SAM_TRANSFORM) {
            self.note("Transform", format!("{other}: not applied by lamina"));
        }

        let region = options
            .region
            .clone()
            .unwrap_or_else(|| DEFAULT_REGION.to_owned());
        self.scope.region = region.clone();
        self.scope.mappings = root.get("Mappings").cloned().unwrap_or(Value::Null);
        self.parameters(section("Parameters"), options, &region);
        if let Err((name, e)) =
            intrinsics::evaluate_conditions(&mut self.scope, section("Conditions"))
        {
            self.problem(&format!("Conditions.{name}"), e);
        }
        for (id, resource) in resources {
            self.declare(id, resource, &region);
        }
        let layers = self.layers(resources, options);
        let globals = section("Globals");
        for (name, value) in globals {
            match name.as_str() {
                "Function" => {}
                other => {
                    let keys: Vec<&str> = value
                        .as_object()
                        .map(|m| m.keys().map(String::as_str).collect())
                        .unwrap_or_default();
                    self.note(
                        &format!("Globals.{other}"),
                        format!("not used by lamina ({})", keys.join(", ")),
                    );
                }
            }
        }
        let global_function = globals
            .get("Function")
            .cloned()
            .unwrap_or(Value::Object(Map::new()));
        for (id, resource) in resources {
            if !self.active(id, resource) {
                continue;
            }
            let kind = resource
                .get("Type")
                .and_then(Value::as_str)
                .unwrap_or_default();
            match kind {
                "AWS::Serverless::Function" => {
                    let properties = resource
                        .get("Properties")
                        .cloned()
                        .unwrap_or(Value::Object(Map::new()));
                    let merged = merge_globals(&global_function, &properties);
                    if let Some((entry, mut function_routes)) = self.function(id, &merged, &layers)
                    {
                        routes.append(&mut function_routes);
                        functions.insert(id.clone(), entry);
                    }
                }
                "AWS::Serverless::LayerVersion" => {}
                "AWS::SQS::Queue" => self.note_sqs_queue(id),
                "" => self.problem(&format!("Resources.{id}"), "no Type"),
                other => self.note(
                    &format!("Resources.{id}"),
                    format!("{other}: not created by lamina"),
                ),
            }
        }
        self.no_route_twice(&routes);
        (functions, routes)
    }

    /// Whether a resource's `Condition` (if any) holds.
    fn active(&mut self, id: &str, resource: &Value) -> bool {
        match resource.get("Condition").and_then(Value::as_str) {
            Some(condition) => match self.scope.condition(condition) {
                Ok(holds) => holds,
                Err(e) => {
                    self.problem(&format!("Resources.{id}.Condition"), e);
                    false
                }
            },
            None => true,
        }
    }

    fn parameters(&mut self, declared: &Map<String, Value>, options: &Options, region: &str) {
        let mut overrides = BTreeMap::new();
        for text in &options.parameter_overrides {
            match parse_override(text) {
                Some((k, v)) => {
                    overrides.insert(k, v);
                }
                None => self.problem(
                    "--parameter-overrides",
                    format!(
                        "{text:?}: expected Key=Value or ParameterKey=Key,ParameterValue=Value"
                    ),
                ),
            }
        }
        for key in overrides.keys() {
            if !declared.contains_key(key) {
                self.problem(
                    "--parameter-overrides",
                    format!("{key}: the template has no such parameter"),
                );
            }
        }
        let pseudo = [
            ("AWS::Region", Value::String(region.to_owned())),
            ("AWS::AccountId", Value::String(ACCOUNT_ID.to_owned())),
            ("AWS::Partition", Value::String("aws".into())),
            ("AWS::URLSuffix", Value::String("amazonaws.com".into())),
            ("AWS::StackName", Value::String("lamina".into())),
            (
                "AWS::StackId",
                Value::String(format!(
                    "arn:aws:cloudformation:{region}:{ACCOUNT_ID}:stack/lamina/00000000-0000-0000-0000-000000000000"
                )),
            ),
            ("AWS::NotificationARNs", Value::Array(Vec::new())),
        ];
        for (name, value) in pseudo {
            self.scope.parameters.insert(name.to_owned(), value);
        }
        for (name, spec) in declared {
            let at = format!("Parameters.{name}");
            let kind = spec.get("Type").and_then(Value::as_str).unwrap_or("String");
            let given = overrides
                .get(name)
                .cloned()
                .or_else(|| match spec.get("Default") {
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(Value::Number(n)) => Some(n.to_string()),
                    Some(Value::Bool(b)) => Some(b.to_string()),
                    Some(Value::Array(list)) => Some(
                        list.iter()
                            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                            .collect::<Vec<_>>()
                            .join(","),
                    ),
                    _ => None,
                });
            let Some(text) = given else {
                self.problem(
                    &at,
                    format!("no Default, and no --parameter-overrides {name}=VALUE"),
                );
                continue;
            };
            if let Some(allowed) = spec.get("AllowedValues").and_then(Value::as_array) {
                let ok = allowed
                    .iter()
                    .any(|a| a.as_str().map_or_else(|| a.to_string(), str::to_owned) == text);
                if !ok {
                    self.problem(
                        &at,
                        format!(
                            "{text:?} is not one of its AllowedValues {}",
                            Value::Array(allowed.clone())
                        ),
                    );
                    continue;
                }
            }
            if kind == "Number" && text.parse::<f64>().is_err() {
                self.problem(&at, format!("{text:?} is not a Number"));
                continue;
            }
            if kind.starts_with("AWS::SSM::Parameter::Value") && !overrides.contains_key(name) {
                self.problem(
                    &at,
                    format!("{kind}: read from AWS Systems Manager, which lamina does not reach; give it with --parameter-overrides {name}=VALUE"),
                );
                continue;
            }
            let value = if kind == "CommaDelimitedList" || kind.starts_with("List<") {
                Value::Array(
                    text.split(',')
                        .map(|s| Value::String(s.trim().to_owned()))
                        .collect(),
                )
            } else {
                Value::String(text)
            };
            self.scope.parameters.insert(name.clone(), value);
        }
    }

    /// Makes a resource known to `Ref` and `Fn::GetAtt`.
    fn declare(&mut self, id: &str, resource: &Value, region: &str) {
        let kind = resource
            .get("Type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let properties = resource.get("Properties");
        let named = |key: &str, scope: &Scope| {
            properties
                .and_then(|p| p.get(key))
                .and_then(|v| scope.string(v).ok())
        };
        let entry = match kind.as_str() {
            "AWS::Serverless::Function" | "AWS::Lambda::Function" => {
                let name = named("FunctionName", &self.scope).unwrap_or_else(|| id.to_owned());
                let arn = super::function_arn(region, &name, None);
                Resource {
                    kind,
                    reference: Some(name),
                    attributes: [("Arn".to_owned(), arn)].into(),
                }
            }
            "AWS::Serverless::LayerVersion" | "AWS::Lambda::LayerVersion" => {
                let name = named("LayerName", &self.scope).unwrap_or_else(|| id.to_owned());
                Resource {
                    kind,
                    reference: Some(format!(
                        "arn:aws:lambda:{region}:{ACCOUNT_ID}:layer:{name}:1"
                    )),
                    attributes: BTreeMap::new(),
                }
            }
            "AWS::SQS::Queue" => match self.sqs_queue(id, properties, region) {
                Some(queue) => queue,
                None => Resource {
                    kind,
                    ..Default::default()
                },
            },
            _ => Resource {
                kind,
                ..Default::default()
            },
        };
        self.scope.resources.insert(id.to_owned(), entry);
    }

    /// Every layer's local content, by the ARN its `Ref` gives, with the command line's
    /// `--layer-arn` mappings.
    fn layers(
        &mut self,
        resources: &Map<String, Value>,
        options: &Options,
    ) -> BTreeMap<String, PathBuf> {
        let mut layers: BTreeMap<String, PathBuf> = options.layer_arns.iter().cloned().collect();
        for (id, resource) in resources {
            if resource.get("Type").and_then(Value::as_str) != Some("AWS::Serverless::LayerVersion")
                || !self.active(id, resource)
            {
                continue;
            }
            let at = format!("Resources.{id}.Properties.ContentUri");
            let content = resource.get("Properties").and_then(|p| p.get("ContentUri"));
            let Some(content) = content else {
                self.problem(&at, "missing: the layer's directory or .zip");
                continue;
            };
            let Some(path) = self.local_path(&at, content) else {
                continue;
            };
            let properties = resource.get("Properties").and_then(Value::as_object);
            for key in properties.into_iter().flat_map(|p| p.keys()) {
                if !matches!(
                    key.as_str(),
                    "ContentUri"
                        | "LayerName"
                        | "Description"
                        | "CompatibleRuntimes"
                        | "CompatibleArchitectures"
                        | "LicenseInfo"
                        | "RetentionPolicy"
                ) {
                    self.note(
                        &format!("Resources.{id}.Properties.{key}"),
                        "not used by lamina",
                    );
                }
            }
            if let Some(arn) = self
                .scope
                .resources
                .get(id)
                .and_then(|r| r.reference.clone())
            {
                layers.insert(arn, path);
            }
        }
        layers
    }

    /// A local directory or `.zip` named by `CodeUri` or `ContentUri`, relative to the template.
    fn local_path(&mut self, at: &str, value: &Value) -> Option<PathBuf> {
        let text = match self.scope.resolve(value) {
            Ok(Some(Value::String(s))) => s,
            Ok(Some(other)) if other.is_object() => {
                self.problem(at, "an S3 location: lamina runs local code; give a directory or .zip (as `sam build` leaves in .aws-sam/build)");
                return None;
            }
            Ok(_) => {
                self.problem(at, "expected a path");
                return None;
            }
            Err(e) => {
                self.problem(at, e);
                return None;
            }
        };
        if text.starts_with("s3://") {
            self.problem(
                at,
                format!("{text}: an S3 location: lamina runs local code; give a directory or .zip"),
            );
            return None;
        }
        let path = self.base.join(&text);
        if !path.exists() {
            self.problem(at, format!("{} does not exist", path.display()));
            return None;
        }
        Some(path)
    }

    /// One `AWS::Serverless::Function`, Globals merged in.
    fn function(
        &mut self,
        id: &str,
        properties: &Value,
        layers: &BTreeMap<String, PathBuf>,
    ) -> Option<(FunctionEntry, Vec<RouteConfig>)> {
        let before = self.problems.len();
        let empty = Map::new();
        let props = properties.as_object().unwrap_or(&empty);
        let at = |key: &str| format!("Resources.{id}.Properties.{key}");
        let mut unused = Vec::new();
        for key in props.keys() {
            let known = matches!(
                key.as_str(),
                "CodeUri"
                    | "Handler"
                    | "Runtime"
                    | "MemorySize"
                    | "Timeout"
                    | "Environment"
                    | "EphemeralStorage"
                    | "ReservedConcurrentExecutions"
                    | "Architectures"
                    | "Layers"
                    | "Events"
                    | "FunctionName"
                    | "LoggingConfig"
                    | "EventInvokeConfig"
                    | "FunctionUrlConfig"
                    | "PackageType"
                    | "Description"
                    | "InlineCode"
            );
            if !known {
                unused.push(key.as_str());
            }
        }
        if !unused.is_empty() {
            let cloud: Vec<&str> = unused
                .iter()
                .copied()
                .filter(|k| CLOUD_ONLY.contains(k))
                .collect();
            let other: Vec<&str> = unused
                .iter()
                .copied()
                .filter(|k| !CLOUD_ONLY.contains(k))
                .collect();
            if !cloud.is_empty() {
                self.note(
                    &format!("Resources.{id}"),
                    format!(
                        "not used by lamina (AWS account settings): {}",
                        cloud.join(", ")
                    ),
                );
            }
            for key in other {
                self.note(&at(key), "not a property lamina knows; ignored");
            }
        }
        // Each property evaluated on its own, so that a problem names it.
        let get = |this: &mut Self, key: &str| -> Option<Value> {
            let value = props.get(key)?;
            match this.scope.resolve(value) {
                Ok(v) => v,
                Err(e) => {
                    this.problem(&at(key), e);
                    None
                }
            }
        };
        if let Some(kind) = get(self, "PackageType").and_then(|v| v.as_str().map(str::to_owned))
            && kind != "Zip"
        {
            self.problem(
                &at("PackageType"),
                format!("{kind}: lamina runs Zip functions (no container images)"),
            );
        }
        if props.contains_key("InlineCode") {
            self.problem(&at("InlineCode"), "not supported: give the code as CodeUri");
        }
        let code = match props.get("CodeUri") {
            Some(v) => self.local_path(&at("CodeUri"), v),
            None => {
                self.problem(&at("CodeUri"), "missing: the function's directory or .zip");
                None
            }
        };
        let string = |this: &mut Self, key: &str| -> Option<String> {
            match get(this, key)? {
                Value::String(s) => Some(s),
                Value::Number(n) => Some(n.to_string()),
                other => {
                    this.problem(&at(key), format!("expected a string, found {other}"));
                    None
                }
            }
        };
        let number = |this: &mut Self, key: &str, v: Option<Value>| -> Option<u32> {
            let v = v?;
            let n = match &v {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.parse().ok(),
                _ => None,
            };
            match n.and_then(|n| u32::try_from(n).ok()) {
                Some(n) => Some(n),
                None => {
                    this.problem(&at(key), format!("expected a whole number, found {v}"));
                    None
                }
            }
        };
        let handler = string(self, "Handler");
        let runtime = string(self, "Runtime");
        let name = string(self, "FunctionName");
        let memory = get(self, "MemorySize");
        let memory_mb = number(self, "MemorySize", memory);
        let timeout = get(self, "Timeout");
        let timeout_secs = number(self, "Timeout", timeout);
        let reserved = get(self, "ReservedConcurrentExecutions");
        let concurrency = number(self, "ReservedConcurrentExecutions", reserved);
        if concurrency == Some(0) {
            self.problem(
                &at("ReservedConcurrentExecutions"),
                "0 stops every invocation of the function; lamina needs at least 1",
            );
        }
        let storage = get(self, "EphemeralStorage").and_then(|v| v.get("Size").cloned());
        let ephemeral_storage_mb = number(self, "EphemeralStorage.Size", storage);
        if let Some(archs) = get(self, "Architectures") {
            let host = match std::env::consts::ARCH {
                "aarch64" => "arm64",
                other => other,
            };
            for arch in archs.as_array().into_iter().flatten() {
                let arch = arch.as_str().unwrap_or_default();
                if arch != host {
                    self.problem(
                        &at("Architectures"),
                        format!("{arch}: this host runs {host} functions only"),
                    );
                }
            }
        }
        let environment = self.environment(id, props.get("Environment"));
        let function_layers = self.function_layers(id, props.get("Layers"), layers);
        // Field by field: a destination lamina does not deliver to may name a resource only
        // an AWS account has.
        let asynchronous = match props.get("EventInvokeConfig") {
            Some(config) => self.event_invoke_config(id, config),
            None => AsyncConfig::default(),
        };
        let logging = match get(self, "LoggingConfig") {
            Some(logging) => self.logging_config(id, &logging),
            None => Default::default(),
        };
        let function_url = match get(self, "FunctionUrlConfig") {
            Some(url) => {
                match url.get("AuthType").and_then(Value::as_str) {
                    Some("NONE") => {}
                    Some("AWS_IAM") => self.note(
                        &at("FunctionUrlConfig.AuthType"),
                        "AWS_IAM: lamina checks no signatures; the URL is open to whoever reaches it",
                    ),
                    other => self.problem(
                        &at("FunctionUrlConfig.AuthType"),
                        format!("{}: expected NONE or AWS_IAM", other.unwrap_or("missing")),
                    ),
                }
                if url.get("InvokeMode").and_then(Value::as_str) == Some("RESPONSE_STREAM") {
                    self.note(
                        &at("FunctionUrlConfig.InvokeMode"),
                        "RESPONSE_STREAM: not yet; answered buffered",
                    );
                }
                for key in url.as_object().into_iter().flat_map(|m| m.keys()) {
                    if !matches!(key.as_str(), "AuthType" | "InvokeMode") {
                        self.note(
                            &at(&format!("FunctionUrlConfig.{key}")),
                            "not used by lamina",
                        );
                    }
                }
                true
            }
            None => false,
        };
        let function_name = name.clone().unwrap_or_else(|| id.to_owned());
        let (routes, schedules) = self.events(id, &function_name, props.get("Events"));
        if self.problems.len() > before {
            return None;
        }
        let config = FunctionConfig {
            name: Some(function_name),
            code: code?,
            handler,
            memory_mb,
            timeout_secs,
            environment,
            concurrency,
            layers: function_layers,
            ephemeral_storage_mb,
            runtime,
            logging,
            ..Default::default()
        };
        if let Err(e) = config.check_values() {
            let text = e.to_string();
            let property = match &e {
                super::ConfigError::Invalid { field, .. } => match field.as_str() {
                    "memory" => "MemorySize".to_owned(),
                    "timeout" => "Timeout".to_owned(),
                    "ephemeral-storage" => "EphemeralStorage.Size".to_owned(),
                    "concurrency" => "ReservedConcurrentExecutions".to_owned(),
                    "name" => "FunctionName".to_owned(),
                    "runtime" => "Runtime".to_owned(),
                    "layer" => "Layers".to_owned(),
                    "application-log-level" => "LoggingConfig.ApplicationLogLevel".to_owned(),
                    "system-log-level" => "LoggingConfig.SystemLogLevel".to_owned(),
                    env if env.starts_with("env ") => {
                        format!("Environment.Variables.{}", &env[4..])
                    }
                    _ => "Properties".to_owned(),
                },
                _ => "Properties".to_owned(),
            };
            // The message's own field name is lamina's; the template's property leads.
            let reason = text.split_once(": ").map_or(text.as_str(), |(_, r)| r);
            self.problem(&at(&property), reason);
            return None;
        }
        Some((
            FunctionEntry {
                config,
                asynchronous,
                schedules,
                function_url,
            },
            routes,
        ))
    }

    /// `EventInvokeConfig`: retries, the event age, and destinations (functions; the other
    /// destination types are noted).
    fn event_invoke_config(&mut self, id: &str, config: &Value) -> AsyncConfig {
        let at = |key: &str| format!("Resources.{id}.Properties.EventInvokeConfig.{key}");
        let mut out = AsyncConfig::default();
        let number = |v: Option<&Value>| match v {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.parse().ok(),
            _ => None,
        };
        for (key, written) in config.as_object().into_iter().flatten() {
            let value = &match key.as_str() {
                "DestinationConfig" => written.clone(),
                _ => match self.scope.resolve(written) {
                    Ok(v) => v.unwrap_or(Value::Null),
                    Err(e) => {
                        self.problem(&at(key), e);
                        continue;
                    }
                },
            };
            match key.as_str() {
                "MaximumRetryAttempts" => match number(Some(value)).filter(|r| *r <= 2) {
                    Some(r) => out.maximum_retry_attempts = u32::try_from(r).unwrap_or(2),
                    None => self.problem(&at(key), format!("{value}: expected Lambda's 0–2")),
                },
                "MaximumEventAgeInSeconds" => match number(Some(value))
                    .filter(|a| (60..=super::file::MAX_EVENT_AGE_SECS).contains(a))
                {
                    Some(a) => out.maximum_event_age = std::time::Duration::from_secs(a),
                    None => {
                        self.problem(&at(key), format!("{value}: expected Lambda's 60–21600 s"))
                    }
                },
                "DestinationConfig" => {
                    for (which, target) in value.as_object().into_iter().flatten() {
                        let here = at(&format!("DestinationConfig.{which}"));
                        let kind = target
                            .get("Type")
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        let arn = match kind {
                            "Lambda" | "SQS" => {
                                match target.get("Destination").map(|d| self.scope.string(d)) {
                                    Some(Ok(arn)) => Some(arn),
                                    Some(Err(ExprError::Unknowable(why))) if kind == "SQS" => {
                                        self.note_unknown_queue(&here, &why, "not delivered to");
                                        continue;
                                    }
                                    Some(Err(e)) => {
                                        self.problem(&here, e);
                                        continue;
                                    }
                                    None => None,
                                }
                            }
                            _ => None,
                        };
                        let arn = arn.as_deref();
                        let destination = match (kind, arn) {
                            ("Lambda", Some(arn)) => match Destination::parse(arn, &self.base) {
                                Ok(d) => Some(d),
                                Err(e) => {
                                    self.problem(&here, e);
                                    None
                                }
                            },
                            ("Lambda" | "SQS", None) => {
                                self.problem(
                                    &here,
                                    format!("a {kind} destination needs Destination"),
                                );
                                None
                            }
                            ("SQS", Some(text)) => self.sqs_destination(&here, text),
                            (other, _) => {
                                self.note(
                                    &here,
                                    format!(
                                        "{other}: not yet; lamina delivers to functions, files and SQS queues"
                                    ),
                                );
                                None
                            }
                        };
                        match which.as_str() {
                            "OnSuccess" => out.on_success = destination,
                            "OnFailure" => out.on_failure = destination,
                            other => self.problem(
                                &here,
                                format!("{other}: expected OnSuccess or OnFailure"),
                            ),
                        }
                    }
                }
                other => self.note(&at(other), "not used by lamina"),
            }
        }
        out
    }

    /// `Environment.Variables`: values that cannot be known here (another resource's
    /// attribute, an import) become "" with a note, as SAM local does.
    fn environment(&mut self, id: &str, value: Option<&Value>) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let Some(value) = value else {
            return out;
        };
        let at = format!("Resources.{id}.Properties.Environment");
        let variables = value.get("Variables");
        let Some(variables) = variables.and_then(Value::as_object) else {
            if variables.is_some() {
                self.problem(
                    &format!("{at}.Variables"),
                    "expected a mapping of names to values",
                );
            }
            return out;
        };
        for (key, v) in variables {
            let at = format!("{at}.Variables.{key}");
            match self.scope.resolve(v) {
                Ok(None) => {}
                Ok(Some(Value::String(s))) => out.push((key.clone(), s)),
                Ok(Some(Value::Number(n))) => out.push((key.clone(), n.to_string())),
                Ok(Some(Value::Bool(b))) => out.push((key.clone(), b.to_string())),
                Ok(Some(other)) => self.problem(&at, format!("expected a string, found {other}")),
                Err(ExprError::Unknowable(why)) => {
                    self.note(
                        &at,
                        format!("{why}; set to \"\" (give a value with --env-file)"),
                    );
                    out.push((key.clone(), String::new()));
                }
                Err(e) => self.problem(&at, e),
            }
        }
        out
    }

    /// `Layers`: ARNs (a `Ref` to a layer of this template gives its own), each mapped to a
    /// local path.
    fn function_layers(
        &mut self,
        id: &str,
        value: Option<&Value>,
        layers: &BTreeMap<String, PathBuf>,
    ) -> Vec<PathBuf> {
        let at = format!("Resources.{id}.Properties.Layers");
        let Some(value) = value else {
            return Vec::new();
        };
        let list = match self.scope.resolve(value) {
            Ok(Some(Value::Array(list))) => list,
            Ok(None) => return Vec::new(),
            Ok(Some(other)) => {
                self.problem(&at, format!("expected a list of layer ARNs, found {other}"));
                return Vec::new();
            }
            Err(e) => {
                self.problem(&at, e);
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for (i, arn) in list.iter().enumerate() {
            let Some(arn) = arn.as_str() else {
                self.problem(
                    &format!("{at}[{i}]"),
                    format!("expected an ARN, found {arn}"),
                );
                continue;
            };
            match layers.get(arn) {
                Some(path) => out.push(path.clone()),
                None => self.problem(
                    &format!("{at}[{i}]"),
                    format!("{arn}: a layer lamina has no copy of; map it to a local directory or .zip with --layer-arn {arn}=PATH"),
                ),
            }
        }
        out
    }

    /// `Events`: `Api` and `HttpApi` become routes; the rest is noted.
    fn events(
        &mut self,
        id: &str,
        function: &str,
        value: Option<&Value>,
    ) -> (Vec<RouteConfig>, Vec<ScheduleEntry>) {
        let mut routes = Vec::new();
        let mut schedules = Vec::new();
        let Some(events) = value else {
            return (routes, schedules);
        };
        let Some(events) = events.as_object() else {
            self.problem(
                &format!("Resources.{id}.Properties.Events"),
                "expected a mapping of events",
            );
            return (routes, schedules);
        };
        for (name, event) in events {
            let at = format!("Resources.{id}.Properties.Events.{name}");
            let kind = event
                .get("Type")
                .and_then(Value::as_str)
                .unwrap_or_default();
            match kind {
                "Api" | "HttpApi" => {
                    // Only the events lamina runs are evaluated: the others may name
                    // resources (a queue's ARN) that exist only in an AWS account.
                    let Some(properties) = self.event_properties(&at, event) else {
                        continue;
                    };
                    let text = |key: &str| {
                        properties
                            .get(key)
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                    };
                    let (path, method) = (text("Path"), text("Method"));
                    let payload = match (kind, text("PayloadFormatVersion").as_deref()) {
                        ("Api", _) | (_, Some("1.0")) => PayloadVersion::V1,
                        _ => PayloadVersion::V2,
                    };
                    let (path, method) = match (path, method) {
                        (Some(path), Some(method)) => (path, method),
                        // An HttpApi event with neither is the API's catch-all.
                        (None, None) if kind == "HttpApi" => {
                            ("$default".to_owned(), "ANY".to_owned())
                        }
                        _ => {
                            self.problem(&at, format!("{kind} events need Path and Method"));
                            continue;
                        }
                    };
                    let method = match method.to_ascii_uppercase().as_str() {
                        "X-AMAZON-APIGATEWAY-ANY-METHOD" => "ANY".to_owned(),
                        m => m.to_owned(),
                    };
                    if !path.starts_with('/') && path != "$default" {
                        self.problem(
                            &format!("{at}.Properties.Path"),
                            format!("{path:?} must start with /"),
                        );
                        continue;
                    }
                    for key in properties.as_object().into_iter().flat_map(|m| m.keys()) {
                        if !matches!(key.as_str(), "Path" | "Method" | "PayloadFormatVersion") {
                            self.note(
                                &format!("{at}.Properties.{key}"),
                                "not used by lamina (one front serves every API)",
                            );
                        }
                    }
                    routes.push(RouteConfig {
                        method,
                        path,
                        function: function.to_owned(),
                        payload,
                    });
                }
                "SQS" => {
                    if let Some(source) = self.sqs_event(&at, function, event) {
                        self.event_sources.push(source);
                    }
                }
                "Schedule" | "ScheduleV2" => {
                    if let Some(schedule) = self.schedule(&at, kind, function, name, event) {
                        schedules.push(schedule);
                    }
                }
                "" => self.problem(&format!("{at}.Type"), "missing"),
                other => self.note(&at, format!("{other}: an event source lamina does not run")),
            }
        }
        (routes, schedules)
    }

    /// An event's `Properties`, evaluated; `None` (a problem reported) when they cannot be.
    fn event_properties(&mut self, at: &str, event: &Value) -> Option<Value> {
        match self
            .scope
            .resolve(event.get("Properties").unwrap_or(&Value::Null))
        {
            Ok(p) => Some(p.unwrap_or(Value::Null)),
            Err(e) => {
                self.problem(&format!("{at}.Properties"), e);
                None
            }
        }
    }

    /// A `Schedule` (EventBridge rule) or `ScheduleV2` (EventBridge Scheduler) event.
    fn schedule(
        &mut self,
        at: &str,
        kind: &str,
        function: &str,
        event_name: &str,
        event: &Value,
    ) -> Option<ScheduleEntry> {
        let properties = self.event_properties(at, event)?;
        let text = |key: &str| {
            properties
                .get(key)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let expression_key = match kind {
            "Schedule" => "Schedule",
            _ => "ScheduleExpression",
        };
        let Some(expression) = text(expression_key) else {
            self.problem(&format!("{at}.Properties.{expression_key}"), "missing");
            return None;
        };
        let disabled = properties.get("Enabled") == Some(&Value::Bool(false))
            || text("State").as_deref() == Some("DISABLED");
        if disabled {
            self.note(at, format!("{kind}: disabled, so not run"));
            return None;
        }
        for key in properties.as_object().into_iter().flat_map(|m| m.keys()) {
            let used = matches!(
                key.as_str(),
                "Schedule"
                    | "ScheduleExpression"
                    | "Input"
                    | "Name"
                    | "Description"
                    | "Enabled"
                    | "State"
            );
            let utc = key == "ScheduleExpressionTimezone" && text(key).as_deref() == Some("UTC");
            if !used && !utc {
                self.note(
                    &format!("{at}.Properties.{key}"),
                    "not used by lamina (schedules run in UTC, once per firing)",
                );
            }
        }
        Some(ScheduleEntry {
            name: text("Name").unwrap_or_else(|| format!("{function}-{event_name}")),
            expression,
            input: text("Input"),
            at: format!("{}: {at}", self.file),
        })
    }

    fn no_route_twice(&mut self, routes: &[RouteConfig]) {
        let mut seen = BTreeMap::new();
        for route in routes {
            if let Some(first) = seen.insert(route.key(), route.function.clone()) {
                self.problem(
                    "Events",
                    format!(
                        "route {} is declared by {first} and by {}; lamina serves one front",
                        route.key(),
                        route.function
                    ),
                );
            }
        }
    }
}

/// `Key=Value`, or SAM's `ParameterKey=Key,ParameterValue=Value`.
fn parse_override(text: &str) -> Option<(String, String)> {
    if let Some(rest) = text.strip_prefix("ParameterKey=") {
        let (key, value) = rest.split_once(",ParameterValue=")?;
        return Some((key.to_owned(), value.to_owned()));
    }
    let (key, value) = text.split_once('=')?;
    (!key.is_empty()).then(|| (key.to_owned(), value.to_owned()))
}

/// SAM's merge of `Globals.Function` into a function's properties: the resource's scalars
/// win, maps merge (recursively, the resource winning), lists are the globals' then the
/// resource's.
pub fn merge_globals(globals: &Value, resource: &Value) -> Value {
    match (globals, resource) {
        (Value::Object(g), Value::Object(r)) => {
            let mut out = g.clone();
            for (k, v) in r {
                let merged = match out.get(k) {
                    Some(existing) => merge_globals(existing, v),
                    None => v.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(g), Value::Array(r)) => Value::Array(g.iter().chain(r).cloned().collect()),
        (_, r) => r.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn globals_merge_as_sam_merges() {
        let merged = merge_globals(
            &json!({"Timeout": 10, "Runtime": "python3.12", "Environment": {"Variables": {"A": "g", "B": "g"}}, "Layers": ["g"]}),
            &json!({"Timeout": 20, "Environment": {"Variables": {"B": "r"}}, "Layers": ["r"]}),
        );
        assert_eq!(
            merged,
            json!({"Timeout": 20, "Runtime": "python3.12", "Environment": {"Variables": {"A": "g", "B": "r"}}, "Layers": ["g", "r"]})
        );
    }

    #[test]
    fn overrides_take_both_spellings() {
        assert_eq!(
            parse_override("Stage=prod"),
            Some(("Stage".into(), "prod".into()))
        );
        assert_eq!(
            parse_override("ParameterKey=Stage,ParameterValue=a=b"),
            Some(("Stage".into(), "a=b".into()))
        );
        assert_eq!(parse_override("=x"), None);
    }
}
