//! SAM templates as a user's project has them: `lamina invoke` and `lamina serve` read
//! `template.yaml` as it is (parameters, conditions, globals, layers, intrinsic functions,
//! managed runtimes, API events), name every part they do not use, and refuse a broken one
//! naming the file, logical id and property. Every template here is first put to AWS's own SAM
//! translator: lamina must never accept what SAM rejects. (Serving one is in `serve.rs`.)

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::support::{lamina_in, sam_translates, text};

/// A SAM project: a Python function with a layer, a Node.js function, globals, parameters,
/// conditions, and intrinsic functions in every place they are commonly written.
pub const PROJECT_TEMPLATE: &str = r#"
AWSTemplateFormatVersion: '2010-09-09'
Transform: AWS::Serverless-2016-10-31
Description: a project as `sam init` leaves it, grown a little
Parameters:
  Stage:
    Type: String
    Default: dev
    AllowedValues: [dev, prod]
  Names:
    Type: CommaDelimitedList
    Default: "first,second"
Mappings:
  Sizes:
    dev: {Memory: 256}
    prod: {Memory: 1024}
Conditions:
  IsProd: !Equals [!Ref Stage, prod]
  IsDev: !Not [!Condition IsProd]
Globals:
  Function:
    Timeout: 5
    Runtime: python3.11
    Environment:
      Variables:
        STAGE: !Ref Stage
        SHARED: from-globals
Resources:
  Greeting:
    Type: AWS::Serverless::LayerVersion
    Properties:
      ContentUri: layer/
      CompatibleRuntimes: [python3.11]
  HelloFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: hello/
      Handler: app.handler
      MemorySize: !FindInMap [Sizes, !Ref Stage, Memory]
      Layers: [!Ref Greeting]
      Policies: [AWSLambdaBasicExecutionRole]
      Tracing: Active
      EphemeralStorage:
        Size: 1024
      ReservedConcurrentExecutions: 2
      Architectures: [x86_64]
      LoggingConfig:
        LogFormat: Text
      EventInvokeConfig:
        MaximumRetryAttempts: 1
        MaximumEventAgeInSeconds: 600
        DestinationConfig:
          OnSuccess:
            Type: Lambda
            Destination: !GetAtt NodeFunction.Arn
          OnFailure:
            Type: SQS
            Destination: !GetAtt Jobs.Arn
      Environment:
        Variables:
          SHARED: from-the-function
          SECOND: !Select [1, !Ref Names]
          JOINED: !Join ["-", [!Ref "AWS::Region", !Ref Stage]]
          SUBBED: !Sub "${AWS::StackName}:${Stage}:${!literal}"
          NODE_ARN: !GetAtt NodeFunction.Arn
          MODE: !If [IsProd, production, development]
          TABLE: !Ref Table
          OPTIONAL: !If [IsDev, !Ref "AWS::NoValue", set]
          SPLIT: !Select [1, !Split [",", "x,y,z"]]
          ENCODED: !Base64 hi
          ZONE: !Select [0, !GetAZs ""]
          LONG_FORM:
            Fn::Join: ["/", [{"Ref": "Stage"}, {"Fn::Sub": "${AWS::AccountId}"}]]
      Events:
        Rest:
          Type: Api
          Properties:
            Path: /hello/{name}
            Method: get
        Http:
          Type: HttpApi
          Properties:
            Path: /v2/hello
            Method: POST
        Nightly:
          Type: Schedule
          Properties:
            Schedule: rate(1 day)
        Jobs:
          Type: SQS
          Properties:
            Queue: !GetAtt Jobs.Arn
  NodeFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: node/
      Handler: index.handler
      Runtime: !Sub "nodejs${NodeMajor}.x"
      FunctionName: !Sub "${AWS::StackName}-node-${Stage}"
      FunctionUrlConfig:
        AuthType: NONE
      Events:
        Everything:
          Type: HttpApi
  Table:
    Type: AWS::Serverless::SimpleTable
  Jobs:
    Type: AWS::SQS::Queue
Outputs:
  Api:
    Value: !Sub "https://${ServerlessRestApi}.execute-api.${AWS::Region}.amazonaws.com/Prod/"
"#;

const PYTHON_APP: &str = r#"
import json, os, greeting

def handler(event, context):
    names = ["STAGE", "SHARED", "SECOND", "JOINED", "SUBBED", "NODE_ARN", "MODE", "TABLE", "OPTIONAL",
             "SPLIT", "ENCODED", "ZONE", "LONG_FORM"]
    tmp = os.statvfs("/tmp")
    return {"statusCode": 200, "headers": {"content-type": "application/json"},
            "body": json.dumps({"env": {n: os.environ.get(n) for n in names},
                                "greeting": greeting.TEXT,
                                "memory": context.memory_limit_in_mb,
                                "tmp_mb": tmp.f_blocks * tmp.f_frsize // (1024 * 1024),
                                "function": context.function_name,
                                "version": event.get("version"),
                                "method": event.get("httpMethod"),
                                "name": (event.get("pathParameters") or {}).get("name")})}
"#;

const NODE_APP: &str = r#"
export const handler = async (event, context) => ({
  statusCode: 200,
  body: JSON.stringify({ node: true, function: context.functionName, route: event.routeKey,
                         path: event.rawPath ?? null }),
});
"#;

/// This host's Node.js major version, which the template's `NodeMajor` parameter is given.
pub fn node_major() -> String {
    let out = Command::new("node")
        .args(["-p", "process.versions.node.split('.')[0]"])
        .output()
        .expect("node runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The project in a fresh directory, its template with a `NodeMajor` parameter added (a
/// Node.js runtime this host can run), after AWS's SAM translator has accepted it.
pub fn project() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("hello/app.py", PYTHON_APP);
    write("layer/python/greeting.py", "TEXT = 'from the layer'\n");
    write("node/index.mjs", NODE_APP);
    let template = PROJECT_TEMPLATE.replace(
        "Parameters:\n",
        &format!(
            "Parameters:\n  NodeMajor:\n    Type: String\n    Default: \"{}\"\n",
            node_major()
        ),
    );
    write("template.yaml", &template);
    sam_accepts(&dir.path().join("template.yaml"));
    dir
}

/// Asserts that AWS's SAM translator accepts the template.
pub fn sam_accepts(path: &Path) {
    if let Err(why) = sam_translates(path, "{}") {
        panic!("AWS's SAM translator rejects {}: {why}", path.display());
    }
}

/// The JSON body of an API Gateway-shaped answer.
fn body_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{:?}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    serde_json::from_str(answer["body"].as_str().unwrap()).unwrap()
}

#[test]
fn lamina_invoke_runs_a_templates_function_as_sam_describes_it() {
    let dir = project();
    // template.yaml is found in the current directory, the function by its logical id.
    let out = lamina_in(dir.path(), &["invoke", "HelloFunction", "--payload", "{}"]);
    let body = body_of(&out);
    assert_eq!(
        body["env"],
        json!({
            "STAGE": "dev",
            "SHARED": "from-the-function",
            "SECOND": "second",
            "JOINED": "us-east-1-dev",
            "SUBBED": "lamina:dev:${literal}",
            "NODE_ARN": "arn:aws:lambda:us-east-1:000000000000:function:lamina-node-dev",
            "MODE": "development",
            "TABLE": "",
            "OPTIONAL": null,
            "SPLIT": "y",
            "ENCODED": "aGk=",
            "ZONE": "us-east-1a",
            "LONG_FORM": "dev/000000000000",
        })
    );
    assert_eq!(body["tmp_mb"], 1024, "EphemeralStorage.Size");
    assert_eq!(body["greeting"], "from the layer");
    assert_eq!(body["memory"], "256");
    assert_eq!(body["function"], "HelloFunction");
    // What lamina does not use is said, once each, naming the file, resource and property.
    let stderr = text(&out.stderr);
    for note in [
        "template.yaml: Resources.HelloFunction: not used by lamina (AWS account settings): Policies, Tracing",
        "template.yaml: Resources.HelloFunction.Properties.Environment.Variables.TABLE: Ref Table: Table is an AWS::Serverless::SimpleTable",
        "template.yaml: Resources.HelloFunction.Properties.Events.Jobs: SQS: Fn::GetAtt Jobs.Arn: Jobs is an AWS::SQS::Queue, which lamina does not create; not polled",
        "template.yaml: Resources.Table: AWS::Serverless::SimpleTable: not created by lamina",
        "template.yaml: Resources.Jobs: AWS::SQS::Queue: not created by lamina",
        "template.yaml: Resources.HelloFunction.Properties.EventInvokeConfig.DestinationConfig.OnFailure: SQS: Fn::GetAtt Jobs.Arn: Jobs is an AWS::SQS::Queue, which lamina does not create; not delivered to",
    ] {
        assert_eq!(
            stderr.matches(note).count(),
            1,
            "{note:?} once in:\n{stderr}"
        );
    }

    // Parameters overridden, in both of SAM's spellings; a function found by its
    // FunctionName too; --template names the file.
    let template = dir.path().join("template.yaml");
    let out = lamina_in(
        Path::new("/"),
        &[
            "invoke",
            "--template",
            template.to_str().unwrap(),
            "HelloFunction",
            "--parameter-overrides",
            "Stage=prod",
            "ParameterKey=Names,ParameterValue=a,b,c",
        ],
    );
    let body = body_of(&out);
    assert_eq!(body["env"]["STAGE"], "prod");
    assert_eq!(body["env"]["SECOND"], "b");
    assert_eq!(body["env"]["MODE"], "production");
    assert_eq!(body["env"]["OPTIONAL"], "set");
    assert_eq!(body["memory"], "1024");
    let out = lamina_in(
        dir.path(),
        &[
            "invoke",
            "lamina-node-dev",
            "--payload",
            r#"{"routeKey":"x"}"#,
        ],
    );
    let body = body_of(&out);
    assert_eq!(
        body,
        json!({"node": true, "function": "lamina-node-dev", "route": "x", "path": null})
    );
}

/// Writes `template` (with the project's code beside it) and returns lamina's and SAM's
/// verdicts.
fn verdicts(dir: &Path, template: &str, args: &[&str]) -> (Output, Result<(), String>) {
    let path = dir.join("broken.yaml");
    std::fs::write(&path, template).unwrap();
    let mut argv = vec!["invoke", "--template", "broken.yaml", "HelloFunction"];
    argv.extend_from_slice(args);
    (lamina_in(dir, &argv), sam_translates(&path, "{}"))
}

#[test]
fn a_broken_template_is_refused_naming_file_resource_and_property() {
    let dir = project();
    let base = std::fs::read_to_string(dir.path().join("template.yaml")).unwrap();
    // Broken for SAM too: lamina refuses what SAM refuses.
    let sam_refuses = [(
        base.replace("            Method: get\n", ""),
        "broken.yaml: Resources.HelloFunction.Properties.Events.Rest: Api events need Path and Method",
    )];
    for (template, expected) in &sam_refuses {
        let (out, sam) = verdicts(dir.path(), template, &[]);
        assert!(sam.is_err(), "SAM accepts what this test calls broken");
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains(expected),
            "{expected:?} not in:\n{}",
            text(&out.stderr)
        );
    }
    // Accepted by SAM's translator (it is the transform itself) but not by CloudFormation,
    // or not runnable here: named precisely.
    let lamina_refuses = [
        (
            base.replace("Transform: AWS::Serverless-2016-10-31\n", ""),
            vec![],
            "broken.yaml: Transform: AWS::Serverless::* resources need",
        ),
        (
            base.replace("Architectures: [x86_64]", "Architectures: [arm64]"),
            vec![],
            "broken.yaml: Resources.HelloFunction.Properties.Architectures: arm64: this host runs x86_64 functions only",
        ),
        (
            base.replace("Timeout: 5", "Timeout: 901"),
            vec![],
            "broken.yaml: Resources.HelloFunction.Properties.Timeout: 901 s is outside Lambda's 1–900 s",
        ),
        (
            base.replace("CodeUri: hello/", "CodeUri: missing/"),
            vec![],
            "broken.yaml: Resources.HelloFunction.Properties.CodeUri:",
        ),
        (
            base.replace(
                "!Ref Greeting]",
                "arn:aws:lambda:us-east-1:123456789012:layer:elsewhere:3]",
            ),
            vec![],
            "--layer-arn arn:aws:lambda:us-east-1:123456789012:layer:elsewhere:3=PATH",
        ),
        (
            base.clone(),
            vec!["--parameter-overrides", "Stage=staging"],
            "broken.yaml: Parameters.Stage: \"staging\" is not one of its AllowedValues",
        ),
        (
            base.clone(),
            vec!["--parameter-overrides", "Nope=1"],
            "--parameter-overrides: Nope: the template has no such parameter",
        ),
    ];
    for (template, args, expected) in &lamina_refuses {
        let (out, sam) = verdicts(dir.path(), template, args);
        if args.is_empty() {
            assert_eq!(sam, Ok(()), "the case is SAM-valid");
        }
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains(expected),
            "{expected:?} not in:\n{}",
            text(&out.stderr)
        );
    }
    // A layer ARN mapped to a local directory runs.
    let elsewhere = base.replace(
        "!Ref Greeting]",
        "arn:aws:lambda:us-east-1:123456789012:layer:elsewhere:3]",
    );
    let layer = dir.path().join("layer");
    let mapping = format!(
        "arn:aws:lambda:us-east-1:123456789012:layer:elsewhere:3={}",
        layer.display()
    );
    let (out, _) = verdicts(dir.path(), &elsewhere, &["--layer-arn", &mapping]);
    assert_eq!(body_of(&out)["greeting"], "from the layer");
}
