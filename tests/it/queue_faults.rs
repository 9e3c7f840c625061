//! The asynchronous queue when its disk is full: an `Event` invocation that cannot be kept is
//! refused (Lambda's `ServiceException`, naming the store), never answered `202` and lost;
//! synchronous invocations go on; once there is room again, events are accepted and run.
//! The disk is a real one: a 1 MiB tmpfs mounted over the state directory (the tests run as
//! root, as `scripts/test` does).

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::server::{Server, header, json_of, send_events, wait_all_ended};

/// A tmpfs mounted at a path, unmounted on drop.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_refuses_events_by_name_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("echo")).unwrap();
    std::fs::write(
        dir.path().join("echo/app.py"),
        "def handler(event, context):\n    return event\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("lamina.toml"),
        "[functions.echo]\ncode = \"echo\"\nruntime = \"python3.11\"\nhandler = \"app.handler\"\n",
    )
    .unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m,mode=0700", "lamina-test-full"])
        .arg(&state)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount a tmpfs (the tests run as root)");
    let _mount = Mounted(state.clone());
    let server = Server::start_in(dir, &["--sandbox", "process"]);
    let ok = send_events(&server, "echo", 1, "{}").await;
    wait_all_ended(&server, "", &ok);
    // Fill the disk.
    let filler = state.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let block = vec![0u8; 16 * 1024];
    while file.write_all(&block).is_ok() {}
    let _ = file.sync_all();
    drop(file);
    // An event bigger than any room the store's log may still have.
    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(200 * 1024));
    let r = server
        .invoke("echo", &[("x-amz-invocation-type", "Event")], big.clone())
        .await;
    assert_eq!(r.status(), 500, "{}", server.logs());
    assert_eq!(header(&r, "x-amzn-ErrorType"), Some("ServiceException"));
    let message = json_of(&r)["Message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains("the event was not accepted") && message.contains("events.sqlite3"),
        "{message}"
    );
    assert!(message.contains("full"), "{message}");
    // Synchronous invocations do not need the store.
    let r = server.invoke("echo", &[], r#"{"sync": 1}"#).await;
    assert_eq!(r.status(), 200, "{}", server.logs());
    // Room again: accepted and run.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let id = loop {
        let r = server
            .invoke("echo", &[("x-amz-invocation-type", "Event")], big.clone())
            .await;
        if r.status() == 202 {
            break header(&r, "x-amzn-RequestId").unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "{}", server.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    wait_all_ended(&server, "", &[id]);
}
