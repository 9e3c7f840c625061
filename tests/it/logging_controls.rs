//! Lambda's advanced logging controls (issue 24): `log_format`, `application_log_level` and
//! `system_log_level` from `lamina.toml`, a SAM template's `LoggingConfig` and `lamina invoke`'s
//! flags; the runtime told through `AWS_LAMBDA_LOG_FORMAT` and `AWS_LAMBDA_LOG_LEVEL`; lamina's
//! platform lines as Lambda's JSON records, filtered by the system level; and AWS's own
//! runtime clients (Python `awslambdaric`, Node.js `aws-lambda-ric`) logging JSON with the
//! request id, at the level asked for, their lines passed through unchanged.

use std::path::Path;
use std::process::{Command, Output};

use bytes::Bytes;
use lamina_runtime::config::logging::{
    ApplicationLogLevel, LogFormat, LoggingConfig, SystemLogLevel,
};
use lamina_runtime::invoke::InvokeRequest;
use serde_json::{Value, json};

use crate::server::{Server, json_of};
use crate::support::{Harness, function_with, lamina_in, program, text};

const ARN_PREFIX: &str = "arn:aws:lambda:us-east-1:000000000000:function:";

/// The JSON records among `lines` (each line that is a JSON object), in order.
fn records<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<Value> {
    lines
        .into_iter()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The records of `kind` about `request_id`.
fn of_kind<'a>(records: &'a [Value], kind: &str, request_id: &str) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| r["type"] == kind && r["record"]["requestId"] == request_id)
        .collect()
}

/// Checks the `platform.start` and `platform.report` records of a successful cold invocation
/// of `function` with 128 MB, and that Lambda's text lines are not there.
fn assert_platform_records(records: &[Value], lines: &str, function: &str, request_id: &str) {
    let start = of_kind(records, "platform.start", request_id);
    assert_eq!(
        start.len(),
        1,
        "one platform.start for {request_id}:\n{lines}"
    );
    assert_eq!(
        start[0]["record"],
        json!({
            "requestId": request_id,
            "functionArn": format!("{ARN_PREFIX}{function}"),
            "version": "$LATEST",
        })
    );
    let time = start[0]["time"].as_str().unwrap();
    assert!(
        time.ends_with('Z') && time.len() == "2026-10-08T07:30:28.235Z".len(),
        "{time}"
    );
    let report = of_kind(records, "platform.report", request_id);
    assert_eq!(report.len(), 1, "one platform.report:\n{lines}");
    let record = &report[0]["record"];
    assert_eq!(record["status"], "success", "{record}");
    assert!(record.get("errorType").is_none(), "{record}");
    let metrics = &record["metrics"];
    assert!(metrics["durationMs"].as_f64().unwrap() > 0.0, "{metrics}");
    assert!(
        metrics["billedDurationMs"].as_u64().unwrap() >= 1,
        "{metrics}"
    );
    assert_eq!(metrics["memorySizeMB"], 128, "{metrics}");
    assert!(metrics["maxMemoryUsedMB"].is_u64(), "{metrics}");
    assert!(
        metrics["initDurationMs"].as_f64().unwrap() > 0.0,
        "a cold start: {metrics}"
    );
    for text_line in ["START RequestId", "END RequestId", "REPORT RequestId"] {
        assert!(!lines.contains(text_line), "{text_line} in:\n{lines}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_runtime_is_told_the_format_and_the_records_are_json_in_the_log_and_its_tail() {
    // JSON, everything kept.
    let h = Harness::probe(|c| {
        c.logging = LoggingConfig {
            log_format: Some(LogFormat::Json),
            application_log_level: Some(ApplicationLogLevel::Debug),
            system_log_level: Some(SystemLogLevel::Debug),
        };
    });
    let done = h
        .invoke_request(InvokeRequest {
            payload: Bytes::from_static(br#"{"action":"log"}"#),
            log_tail: true,
            ..Default::default()
        })
        .await;
    assert_eq!(&done.body()[..], b"\"logged\"");
    let (_, report) = h.invoke_json("{}").await;
    assert_eq!(report["env"]["AWS_LAMBDA_LOG_FORMAT"], "JSON");
    assert_eq!(report["env"]["AWS_LAMBDA_LOG_LEVEL"], "DEBUG");
    // The tail (X-Amz-Log-Type: Tail) is the log as written: JSON records, the runtime's lines.
    let tail = String::from_utf8(done.log_tail.clone().unwrap().to_vec()).unwrap();
    let tail_records = records(tail.lines());
    let id = done.request_id.as_str();
    for kind in ["platform.start", "platform.runtimeDone", "platform.report"] {
        assert_eq!(
            of_kind(&tail_records, kind, id).len(),
            1,
            "{kind} in:\n{tail}"
        );
    }
    assert!(tail.contains("probe stdout line\n"), "{tail}");
    let lines = h.finish().await;
    let all = lines.join("\n");
    let logged = records(lines.iter().map(String::as_str));
    assert_platform_records(&logged, &all, "probe", id);
    // runtimeDone (DEBUG) comes between start and report, with the runtime's outcome.
    let done_record = of_kind(&logged, "platform.runtimeDone", id);
    assert_eq!(done_record[0]["record"]["status"], "success");
    assert!(done_record[0]["record"]["metrics"]["durationMs"].is_f64());
    let kinds: Vec<&str> = logged
        .iter()
        .filter(|r| r["record"]["requestId"] == id)
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["platform.start", "platform.runtimeDone", "platform.report"]
    );
    // The runtime's own lines pass unchanged, in their place.
    assert!(lines.iter().any(|l| l == "probe stdout line"), "{all}");
    assert!(lines.iter().any(|l| l == "probe stderr line"), "{all}");

    // Text, the default: the format is said, no level; the lines are Lambda's text lines.
    let h = Harness::probe(|_| {});
    let (done, report) = h.invoke_json("{}").await;
    assert_eq!(report["env"]["AWS_LAMBDA_LOG_FORMAT"], "Text");
    assert!(report["env"].get("AWS_LAMBDA_LOG_LEVEL").is_none());
    let lines = h.finish().await;
    let id = &done.request_id;
    assert!(
        lines.contains(&format!("START RequestId: {id} Version: $LATEST"))
            && lines.contains(&format!("END RequestId: {id}"))
            && lines
                .iter()
                .any(|l| l.starts_with(&format!("REPORT RequestId: {id}\tDuration: "))),
        "{lines:?}"
    );
    assert!(records(lines.iter().map(String::as_str)).is_empty());
}

/// A Python handler that logs at DEBUG and INFO through the standard `logging` module, and
/// prints.
const PYTHON_APP: &str = r#"
import logging, os
logger = logging.getLogger()

def handler(event, context):
    logger.debug("py debug line")
    logger.info("py info line")
    print("py plain print")
    return {
        "request_id": context.aws_request_id,
        "format": os.environ.get("AWS_LAMBDA_LOG_FORMAT"),
        "level": os.environ.get("AWS_LAMBDA_LOG_LEVEL"),
    }
"#;

/// The same in Node.js, through `console`.
const NODE_APP: &str = r#"
export const handler = async (event, context) => {
  console.debug("js debug line");
  console.info("js info line");
  return {
    request_id: context.awsRequestId,
    format: process.env.AWS_LAMBDA_LOG_FORMAT,
    level: process.env.AWS_LAMBDA_LOG_LEVEL,
  };
};
"#;

#[tokio::test(flavor = "multi_thread")]
async fn awss_python_and_node_clients_log_json_with_the_request_id_at_the_level_asked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("py")).unwrap();
    std::fs::write(dir.path().join("py/app.py"), PYTHON_APP).unwrap();
    std::fs::create_dir(dir.path().join("js")).unwrap();
    std::fs::write(dir.path().join("js/index.mjs"), NODE_APP).unwrap();
    let node = Command::new("node")
        .args(["-p", "process.versions.node.split('.')[0]"])
        .output()
        .unwrap();
    let major = String::from_utf8_lossy(&node.stdout).trim().to_owned();
    // Lambda's spellings in any case.
    let config = format!(
        "[functions.py_info]\ncode = \"py\"\nruntime = \"python3.11\"\nhandler = \"app.handler\"\n\
         log_format = \"JSON\"\n\n\
         [functions.py_debug]\ncode = \"py\"\nruntime = \"python3.11\"\nhandler = \"app.handler\"\n\
         log_format = \"json\"\napplication_log_level = \"debug\"\nsystem_log_level = \"debug\"\n\n\
         [functions.js_info]\ncode = \"js\"\nruntime = \"nodejs{major}.x\"\n\
         log_format = \"JSON\"\napplication_log_level = \"INFO\"\n\n\
         [functions.js_debug]\ncode = \"js\"\nruntime = \"nodejs{major}.x\"\n\
         log_format = \"JSON\"\napplication_log_level = \"DEBUG\"\n"
    );
    std::fs::write(dir.path().join("lamina.toml"), config).unwrap();
    // The clients are installed into the tests' cache once; Node's builds a native addon,
    // longer than the server's start-up is given. `lamina invoke` waits for it.
    for function in ["py_info", "js_info"] {
        let out = lamina_in(dir.path(), &["invoke", function]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let server = Server::start_in(dir, &[]);
    let cases = [
        ("py_info", "py", "INFO", false, false),
        ("py_debug", "py", "DEBUG", true, true),
        ("js_info", "js", "INFO", false, false),
        ("js_debug", "js", "DEBUG", true, false),
    ];
    for (function, lang, level, app_debug, system_debug) in cases {
        let r = server.invoke(function, &[], "{}").await;
        assert_eq!(r.status(), 200, "{function}: {}", server.logs());
        let got = json_of(&r);
        assert_eq!(got["format"], "JSON", "{function}: {got}");
        assert_eq!(got["level"], level, "{function}: {got}");
        let id = got["request_id"].as_str().unwrap().to_owned();
        let logs = server.wait_for_log(
            &format!("\"type\":\"platform.report\",\"record\":{{\"requestId\":\"{id}\""),
            1,
        );
        let prefix = format!("[{function}] ");
        let own: Vec<&str> = logs
            .lines()
            .filter_map(|l| l.strip_prefix(prefix.as_str()))
            .collect();
        let all = own.join("\n");
        let found = records(own.iter().copied());
        assert_platform_records(&found, &all, function, &id);
        assert_eq!(
            of_kind(&found, "platform.runtimeDone", &id).len(),
            usize::from(system_debug),
            "{function}: runtimeDone is a DEBUG record:\n{all}"
        );
        // The client's own JSON lines, with the request id, as the client wrote them.
        let app = |message: &str| -> Vec<&Value> {
            found.iter().filter(|r| r["message"] == message).collect()
        };
        let info = app(&format!("{lang} info line"));
        assert_eq!(info.len(), 1, "{function}:\n{all}");
        assert_eq!(info[0]["requestId"], id.as_str(), "{function}: {}", info[0]);
        assert_eq!(info[0]["level"], "INFO", "{function}: {}", info[0]);
        assert!(info[0]["timestamp"].is_string(), "{function}: {}", info[0]);
        let debug = app(&format!("{lang} debug line"));
        assert_eq!(
            debug.len(),
            usize::from(app_debug),
            "{function}: the debug line at {level}:\n{all}"
        );
        if app_debug {
            assert_eq!(debug[0]["level"], "DEBUG");
            assert_eq!(debug[0]["requestId"], id.as_str());
        }
        if lang == "py" {
            // A print is not the logging module's: it passes as it was written.
            assert!(own.contains(&"py plain print"), "{function}:\n{all}");
        }
    }
    // GetFunctionConfiguration answers the settings as Lambda does: the levels with JSON only.
    let r = server
        .get("/2015-03-31/functions/py_debug/configuration")
        .await;
    assert_eq!(
        json_of(&r)["LoggingConfig"],
        json!({
            "LogFormat": "JSON",
            "ApplicationLogLevel": "DEBUG",
            "SystemLogLevel": "DEBUG",
            "LogGroup": "/aws/lambda/py_debug",
        })
    );
    let (clean, logs) = server.stop();
    assert!(clean, "{logs}");
}

/// `lamina invoke ARGS` in the current directory.
fn invoke(args: &[&str]) -> Output {
    let argv: Vec<&str> = std::iter::once("invoke")
        .chain(args.iter().copied())
        .collect();
    lamina_in(Path::new("."), &argv)
}

#[test]
fn lamina_invoke_log_format_json_prints_json_platform_records_on_stderr() {
    let code = function_with(&program("probe"));
    let dir = code.path().to_str().unwrap();
    let out = invoke(&[
        dir,
        "--name",
        "probe",
        "--log-format",
        "JSON",
        "--system-log-level",
        "debug",
        "--payload",
        r#"{"action":"log"}"#,
    ]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(text(&out.stdout), "\"logged\"");
    let found = records(stderr.lines());
    let id = found[0]["record"]["requestId"].as_str().unwrap().to_owned();
    assert_platform_records(&found, &stderr, "probe", &id);
    assert_eq!(of_kind(&found, "platform.runtimeDone", &id).len(), 1);
    assert!(stderr.lines().any(|l| l == "probe stdout line"), "{stderr}");

    // A timeout: the records say so; there is no line of its own in JSON.
    let out = invoke(&[
        dir,
        "--log-format",
        "JSON",
        "--timeout",
        "1",
        "--payload",
        r#"{"action":"sleep","ms":5000}"#,
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(json_body(&out)["errorType"], "Sandbox.Timedout", "{stderr}");
    let found = records(stderr.lines());
    let report: Vec<&Value> = found
        .iter()
        .filter(|r| r["type"] == "platform.report")
        .collect();
    assert_eq!(report.len(), 1, "{stderr}");
    assert_eq!(report[0]["record"]["status"], "timeout", "{stderr}");
    assert!(!stderr.contains("Task timed out"), "{stderr}");

    // WARN keeps none of the invocation's records.
    let out = invoke(&[dir, "--log-format", "json", "--system-log-level", "WARN"]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(records(stderr.lines()).is_empty(), "{stderr}");
    assert!(!stderr.contains("RequestId"), "{stderr}");

    // A level without the JSON format is refused, as Lambda refuses it; so is a level that is
    // not one.
    let out = invoke(&[dir, "--application-log-level", "DEBUG"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("application-log-level") && stderr.contains("JSON"),
        "{stderr}"
    );
    let out = invoke(&[
        dir,
        "--log-format",
        "JSON",
        "--application-log-level",
        "LOUD",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("LOUD"), "{stderr}");
}

fn json_body(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)))
}

#[test]
fn a_lamina_toml_with_a_bad_level_or_a_level_with_text_is_refused_naming_the_key() {
    let code = function_with(&program("probe"));
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[functions.loud]\ncode = {code:?}\nlog_format = \"JSON\"\napplication_log_level = \"LOUD\"\n\n\
         [functions.text]\ncode = {code:?}\nlog_format = \"Text\"\nsystem_log_level = \"INFO\"\n\n\
         [functions.fine]\ncode = {code:?}\nlog_format = \"JSON\"\nsystem_log_level = \"DEBUG\"\n",
        code = code.path().display().to_string(),
    );
    std::fs::write(dir.path().join("lamina.toml"), config).unwrap();
    let out = lamina_in(dir.path(), &["invoke", "fine"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for problem in [
        "lamina.toml: functions.loud.application_log_level: \"LOUD\" is not an application log \
         level: TRACE, DEBUG, INFO, WARN, ERROR or FATAL",
        "lamina.toml: functions.text.system_log_level: needs log_format = \"JSON\"",
    ] {
        assert!(stderr.contains(problem), "{problem:?} not in:\n{stderr}");
    }
    assert!(!stderr.contains("functions.fine"), "{stderr}");
}

#[test]
fn a_templates_logging_config_is_used_with_its_globals() {
    let project = tempfile::tempdir().unwrap();
    let code = project.path().join("probe");
    std::fs::create_dir(&code).unwrap();
    std::fs::copy(program("probe"), code.join("bootstrap")).unwrap();
    let template = "\
Transform: AWS::Serverless-2016-10-31
Globals:
  Function:
    LoggingConfig:
      LogFormat: JSON
      LogGroup: /custom/group
Resources:
  Probe:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: probe/
      Runtime: provided.al2023
      Handler: bootstrap
      LoggingConfig:
        ApplicationLogLevel: warn
        SystemLogLevel: DEBUG
";
    std::fs::write(project.path().join("template.yaml"), template).unwrap();
    let out = lamina_in(
        project.path(),
        &["invoke", "Probe", "--template", "template.yaml"],
    );
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let env = &json_body(&out)["env"];
    assert_eq!(env["AWS_LAMBDA_LOG_FORMAT"], "JSON");
    assert_eq!(env["AWS_LAMBDA_LOG_LEVEL"], "WARN");
    let found = records(stderr.lines());
    let id = json_body(&out)["headers"]["lambda-runtime-aws-request-id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_platform_records(&found, &stderr, "Probe", &id);
    assert_eq!(
        of_kind(&found, "platform.runtimeDone", &id).len(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "template.yaml: Resources.Probe.Properties.LoggingConfig.LogGroup: not used by lamina"
        ),
        "{stderr}"
    );

    // A level without LogFormat: JSON is refused, naming the property.
    std::fs::write(
        project.path().join("template.yaml"),
        template.replace("      LogFormat: JSON\n", ""),
    )
    .unwrap();
    let out = lamina_in(
        project.path(),
        &["invoke", "Probe", "--template", "template.yaml"],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "template.yaml: Resources.Probe.Properties.LoggingConfig.ApplicationLogLevel: needs \
             LogFormat: JSON"
        ),
        "{stderr}"
    );
}
