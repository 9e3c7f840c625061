//! The sandbox helper (`lamina __sandbox`) refuses a spec it cannot use, with exit 125 and a
//! message naming the problem, before touching anything.

use std::io::Write;
use std::process::{Command, Stdio};

fn run(input: &[u8]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lamina"))
        .arg(lamina_bootstrap::entry::HELPER_ARG)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(&u32::try_from(input.len()).unwrap().to_le_bytes())
        .unwrap();
    stdin.write_all(input).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn malformed_and_wrong_version_specs_are_refused() {
    let (code, stderr) = run(b"{not json");
    assert_eq!(code, Some(125));
    assert!(stderr.contains("reading the jail spec"), "{stderr}");
    let spec = lamina_bootstrap::ShellSpec {
        version: 99,
        root: "/nonexistent".into(),
        uid: 993,
        gid: 990,
        hostname: "x".into(),
        cgroups: vec![],
        function_cgroups: vec![],
        network: lamina_bootstrap::Network::Host,
        user_namespace: None,
        max_processes: None,
    };
    let (code, stderr) = run(&serde_json::to_vec(&spec).unwrap());
    assert_eq!(code, Some(125));
    assert!(
        stderr.contains(&format!(
            "version 99 is not the supported {}",
            lamina_bootstrap::spec::SPEC_VERSION
        )),
        "{stderr}"
    );
}
