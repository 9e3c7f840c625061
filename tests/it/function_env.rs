//! What a function gets from the caller's environment: AWS credentials from the caller's
//! usual AWS configuration (as Lambda gives its role's), and `--env-file` in SAM's JSON shape
//! or as a `.env` file.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::support::{function_with, lamina, program, test_cache};

/// `lamina ARGS` in `dir`, with `home` as HOME and none of the caller's own AWS variables.
fn lamina_with(dir: &Path, home: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(lamina());
    cmd.current_dir(dir)
        .args(args)
        .env("LAMINA_CACHE_DIR", test_cache())
        .env("HOME", home)
        .stdin(Stdio::null());
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_CONFIG_FILE",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    cmd.output().unwrap()
}

/// The environment the probe reported.
fn env_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    report["env"].clone()
}

fn aws_home() -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join(".aws")).unwrap();
    std::fs::write(
        home.path().join(".aws/credentials"),
        "[default]\naws_access_key_id = AKIADEFAULTKEY\naws_secret_access_key = default-secret\n\n\
         [dev]\naws_access_key_id = AKIADEVKEY\naws_secret_access_key = dev-secret\n\
         aws_session_token = dev-token\n",
    )
    .unwrap();
    std::fs::write(
        home.path().join(".aws/config"),
        "[profile corp]\nsso_session = corp\nsso_account_id = 123456789012\n",
    )
    .unwrap();
    home
}

#[test]
fn functions_get_the_callers_aws_credentials_as_lambda_gives_a_roles() {
    let probe = function_with(&program("probe"));
    let home = aws_home();
    let dir = probe.path().parent().unwrap();
    let code = probe.path().to_str().unwrap();
    let base = ["invoke", code, "--sandbox", "process", "--payload", "{}"];
    let args = |extra: &[&'static str]| -> Vec<&str> {
        base.iter().copied().chain(extra.iter().copied()).collect()
    };

    // The default profile.
    let out = lamina_with(dir, home.path(), &[], &args(&[]));
    let env = env_of(&out);
    assert_eq!(env["AWS_ACCESS_KEY_ID"], "AKIADEFAULTKEY");
    assert_eq!(env["AWS_SECRET_ACCESS_KEY"], "default-secret");
    assert_eq!(env["AWS_SESSION_TOKEN"], Value::Null);
    // Never in lamina's own output.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("default-secret"), "{stderr}");

    // A named profile, with its session token.
    let env = env_of(&lamina_with(
        dir,
        home.path(),
        &[],
        &args(&["--profile", "dev"]),
    ));
    assert_eq!(env["AWS_ACCESS_KEY_ID"], "AKIADEVKEY");
    assert_eq!(env["AWS_SESSION_TOKEN"], "dev-token");
    // AWS_PROFILE names it too.
    let env = env_of(&lamina_with(
        dir,
        home.path(),
        &[("AWS_PROFILE", "dev")],
        &args(&[]),
    ));
    assert_eq!(env["AWS_ACCESS_KEY_ID"], "AKIADEVKEY");

    // The caller's environment variables come first.
    let caller = [
        ("AWS_ACCESS_KEY_ID", "AKIAFROMENV"),
        ("AWS_SECRET_ACCESS_KEY", "env-secret"),
        ("AWS_SESSION_TOKEN", "env-token"),
    ];
    let env = env_of(&lamina_with(dir, home.path(), &caller, &args(&[])));
    assert_eq!(env["AWS_ACCESS_KEY_ID"], "AKIAFROMENV");
    assert_eq!(env["AWS_SESSION_TOKEN"], "env-token");

    // Off.
    let env = env_of(&lamina_with(
        dir,
        home.path(),
        &caller,
        &args(&["--no-credentials"]),
    ));
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    ] {
        assert_eq!(env[var], Value::Null, "{var}");
    }

    // A profile that does not exist, or whose keys come from SSO, is named with the way on.
    let out = lamina_with(dir, home.path(), &[], &args(&["--profile", "nope"]));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--profile nope: no such profile"),
        "{stderr}"
    );
    let out = lamina_with(dir, home.path(), &[], &args(&["--profile", "corp"]));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("sso_session") && stderr.contains("aws configure export-credentials"),
        "{stderr}"
    );

    // No AWS configuration at all: no credentials, and no complaint.
    let bare = tempfile::tempdir().unwrap();
    let env = env_of(&lamina_with(dir, bare.path(), &[], &args(&[])));
    assert_eq!(env["AWS_ACCESS_KEY_ID"], Value::Null);
}

#[test]
fn an_env_file_in_sams_shape_or_dotenv_sets_the_functions_variables() {
    let probe = function_with(&program("probe"));
    let project = tempfile::tempdir().unwrap();
    std::fs::write(
        project.path().join("lamina.toml"),
        format!(
            "[functions.probe]\ncode = {:?}\nenvironment = {{ STAGE = \"toml\", KEEP = \"kept\" }}\n",
            probe.path().display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(
        project.path().join("env.json"),
        r#"{"Parameters": {"STAGE": "from-parameters", "COMMON": "c"},
            "probe": {"OWN": "1", "STAGE": "from-own"},
            "other": {"NOT_MINE": "x"}}"#,
    )
    .unwrap();
    std::fs::write(
        project.path().join(".env"),
        "# a .env file\nSTAGE=from-dotenv\nexport QUOTED=\"a # b\"\n",
    )
    .unwrap();
    let home = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["invoke", "probe", "--sandbox", "process", "--payload", "{}"];
        args.extend_from_slice(extra);
        lamina_with(project.path(), home.path(), &[], &args)
    };
    let env = env_of(&run(&["--env-file", "env.json"]));
    assert_eq!(env["STAGE"], "from-own", "the function's own object wins");
    assert_eq!(env["COMMON"], "c");
    assert_eq!(env["OWN"], "1");
    assert_eq!(env["KEEP"], "kept");
    assert_eq!(env["NOT_MINE"], Value::Null);
    // --env wins over the file.
    let env = env_of(&run(&["--env-file", "env.json", "--env", "STAGE=cli"]));
    assert_eq!(env["STAGE"], "cli");
    let env = env_of(&run(&["--env-file", ".env"]));
    assert_eq!(env["STAGE"], "from-dotenv");
    assert_eq!(env["QUOTED"], "a # b");
    // A broken file is named, with the line.
    std::fs::write(project.path().join("bad.env"), "A=1\nno equals sign\n").unwrap();
    let out = run(&["--env-file", "bad.env"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--env-file bad.env: line 2"), "{stderr}");
    // A reserved variable cannot be set this way either.
    std::fs::write(project.path().join("reserved.env"), "AWS_REGION=mars-1\n").unwrap();
    let out = run(&["--env-file", "reserved.env"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("AWS_REGION"));
}
