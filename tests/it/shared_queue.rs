//! Past one host: two `lamina serve` processes sharing one asynchronous queue on a real
//! PostgreSQL server (Debian's, started by the test). Each event runs once while both live;
//! when one is killed -9 mid-load, the other takes over its events once their leases lapse, and
//! only those that were running in the dead server run twice.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::server::{Server, send_events};
use crate::shared::Postgres;

/// A project whose `work` function takes 50 ms, its queue in `postgres`, leases of 2 s.
fn project(postgres: &Postgres) -> TempDir {
    project_at(&postgres.url())
}

/// The same, its queue at `url`.
fn project_at(url: &str) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("work")).unwrap();
    std::fs::write(
        dir.path().join("work/app.py"),
        "import time\ndef handler(event, context):\n    time.sleep(0.05)\n    return event\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("lamina.toml"),
        format!(
            "[functions.work]\ncode = \"work\"\nruntime = \"python3.11\"\nhandler = \"app.handler\"\n\
             concurrency = 2\n\n[serve]\nqueue = \"{url}\"\nqueue_lease = 2\n"
        ),
    )
    .unwrap();
    dir
}

/// How many times each request id's invocation started (`START RequestId: …`) in `logs`.
fn starts(logs: &str) -> BTreeMap<String, usize> {
    let mut n = BTreeMap::new();
    for id in logs
        .lines()
        .filter_map(|l| l.split("START RequestId: ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
    {
        *n.entry(id.to_owned()).or_default() += 1;
    }
    n
}

/// The request ids whose invocation ended in `logs`.
fn ends(logs: &str) -> BTreeSet<String> {
    crate::server::ended(logs)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_servers_share_a_postgres_queue_and_one_killed_loses_nothing() {
    let postgres = Postgres::start();
    let a = Server::start_in(project(&postgres), &["--sandbox", "process"]);
    let b = Server::start_in(project(&postgres), &["--sandbox", "process"]);
    assert!(
        a.logs().contains("(shared; this server leases as"),
        "{}",
        a.logs()
    );
    // 40 to each: 2 at a time at 50 ms, so most of A's are still queued when it dies.
    let mut ids = send_events(&a, "work", 40, "{}").await;
    ids.extend(send_events(&b, "work", 40, "{}").await);
    let (a_logs, _) = a.kill9();
    // What A held and had not finished durably at the kill: started (or about to be), or run
    // but its removal not yet committed. Read at once, while A's leases (2 s) still stand.
    let a_owner = a_logs
        .split("this server leases as ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .expect("A's lease owner in its log")
        .to_owned();
    let held_by_a: BTreeSet<String> = postgres
        .psql(&format!(
            "SELECT request_id FROM lamina_events WHERE owner = '{a_owner}'"
        ))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    let b_logs = loop {
        let b_logs = b.logs();
        let done: BTreeSet<String> = ends(&a_logs).union(&ends(&b_logs)).cloned().collect();
        let missing: Vec<&String> = ids.iter().filter(|id| !done.contains(*id)).collect();
        if missing.is_empty() {
            break b_logs;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} events never ran: {missing:?}\nA:\n{a_logs}\nB:\n{b_logs}",
            missing.len(),
            ids.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        b_logs.contains("took over") && b_logs.contains("whose server stopped or died"),
        "{b_logs}"
    );
    // Exactly once, but for those in flight in A when it died: started there, and not yet
    // durably finished (an event that ran but whose removal was still to be committed runs
    // again: at least once).
    let in_flight_in_a: BTreeSet<String> = starts(&a_logs)
        .into_keys()
        .filter(|id| held_by_a.contains(id))
        .collect();
    // Those that had started in A and not ended are among them.
    for id in starts(&a_logs)
        .keys()
        .filter(|id| !ends(&a_logs).contains(*id))
    {
        assert!(in_flight_in_a.contains(id), "{id} was running in A");
    }
    let (a_starts, b_starts) = (starts(&a_logs), starts(&b_logs));
    let ran_in_a = ends(&a_logs).len();
    assert!(
        ran_in_a < 40,
        "A ran all its events before the kill: the test shows nothing"
    );
    for id in &ids {
        let runs = a_starts.get(id).copied().unwrap_or(0) + b_starts.get(id).copied().unwrap_or(0);
        match in_flight_in_a.contains(id) {
            true => assert!(runs <= 2, "{id} ran {runs} times"),
            false => assert_eq!(runs, 1, "{id} ran {runs} times\nA:\n{a_logs}\nB:\n{b_logs}"),
        }
    }
    // Every event has left the queue.
    let deadline = Instant::now() + Duration::from_secs(10);
    while postgres.psql("SELECT count(*) FROM lamina_events").unwrap() != "0" {
        assert!(Instant::now() < deadline, "events left in the queue");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A stop gives the leases up at once: a third server takes over a stopped one's events
    // without waiting for them to lapse.
    let c = Server::start_in(project(&postgres), &["--sandbox", "process"]);
    let (ok, _) = b.stop();
    assert!(ok);
    let late = send_events(&c, "work", 1, "{}").await;
    crate::server::wait_all_ended(&c, "", &late);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_postgres_is_named_and_a_lost_one_refuses_events_not_invocations() {
    // Nothing listens: lamina does not start, and says which server (never its password).
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("lamina.toml"),
        "[functions.f]\ncode = \"f\"\n\n[serve]\nqueue = \"postgres://lamina:hunter2@127.0.0.1:1/postgres\"\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("f")).unwrap();
    let out = crate::support::lamina_in(dir.path(), &["serve", "--listen", "127.0.0.1:0"]);
    let stderr = crate::support::text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("postgres://lamina@127.0.0.1:1/postgres")
            && stderr.contains("cannot connect"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");

    // A server that goes away: Event invocations are refused with Lambda's ServiceException
    // naming it (nothing is promised that is not kept); synchronous ones still run.
    let mut postgres = Postgres::start();
    let server = Server::start_in(project(&postgres), &["--sandbox", "process"]);
    let ok = send_events(&server, "work", 1, "{}").await;
    crate::server::wait_all_ended(&server, "", &ok);
    postgres.stop();
    let r = server
        .invoke("work", &[("x-amz-invocation-type", "Event")], "{}")
        .await;
    assert_eq!(r.status(), 500, "{}", server.logs());
    assert_eq!(
        crate::server::header(&r, "x-amzn-ErrorType"),
        Some("ServiceException")
    );
    let body = crate::server::json_of(&r);
    let message = body["Message"].as_str().unwrap_or_default();
    assert!(
        message.contains("the event was not accepted")
            && message.contains(&format!("postgres://lamina@127.0.0.1:{}", postgres.port)),
        "{body}"
    );
    let r = server.invoke("work", &[], r#"{"sync":true}"#).await;
    assert_eq!(r.status(), 200, "{}", server.logs());
    assert_eq!(
        crate::server::json_of(&r),
        serde_json::json!({"sync": true})
    );
}

/// A server that takes TLS connections only (as managed PostgreSQL services often do): with
/// `sslmode=verify-full` and its CA lamina's queue works over TLS; with `sslmode=require` and
/// no CA it is refused, naming the server and how to name the CA; without `sslmode` the
/// server itself refuses the plain connection, and lamina says so.
#[tokio::test(flavor = "multi_thread")]
async fn a_queue_over_tls_checks_the_servers_certificate() {
    let postgres = Postgres::start_tls();
    let plain = postgres.url();
    let verified = format!(
        "{plain}?sslmode=verify-full&sslrootcert={}",
        postgres.ca().display()
    );
    let server = Server::start_in(project_at(&verified), &["--sandbox", "process"]);
    let ids = send_events(&server, "work", 3, "{}").await;
    crate::server::wait_all_ended(&server, "", &ids);
    let encrypted = postgres
        .psql(
            "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = 'lamina'",
        )
        .unwrap();
    assert_eq!(encrypted, "t", "lamina's connection is TLS");
    drop(server);

    for (url, expected) in [
        (format!("{plain}?sslmode=require"), "sslrootcert=PATH"),
        (plain.clone(), "no encryption"),
    ] {
        let dir = project_at(&url);
        let out = crate::support::lamina_in(dir.path(), &["serve", "--listen", "127.0.0.1:0"]);
        let stderr = crate::support::text(&out.stderr);
        assert!(!out.status.success(), "{url}: {stderr}");
        assert!(
            stderr.contains(&format!("postgres://lamina@127.0.0.1:{}", postgres.port))
                && stderr.contains("cannot connect")
                && stderr.contains(expected),
            "{url}: {stderr}"
        );
    }
}

/// A server that authenticates its clients by certificate (`cert` in `pg_hba.conf`, as
/// managed services offer): with `sslcert` and `sslkey` in the URL lamina's queue works, its
/// connection carrying that certificate; without them the server refuses lamina, and lamina
/// names the server, gives its reason and says how to name a certificate.
#[tokio::test(flavor = "multi_thread")]
async fn a_queue_on_a_server_that_wants_a_client_certificate_sends_the_named_one() {
    let postgres = Postgres::start_tls_client_certs();
    let plain = postgres.url();
    let (cert, key) = postgres.client_cert();
    let verified = format!(
        "{plain}?sslmode=verify-full&sslrootcert={}",
        postgres.ca().display()
    );
    let with_cert = format!(
        "{verified}&sslcert={}&sslkey={}",
        cert.display(),
        key.display()
    );
    let server = Server::start_in(project_at(&with_cert), &["--sandbox", "process"]);
    let ids = send_events(&server, "work", 3, "{}").await;
    crate::server::wait_all_ended(&server, "", &ids);
    let by_certificate = postgres
        .psql(
            "SELECT bool_and(s.client_dn = '/CN=lamina') FROM pg_stat_ssl s \
             JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'lamina'",
        )
        .unwrap();
    assert_eq!(
        by_certificate, "t",
        "lamina's connection carries its certificate"
    );
    drop(server);

    let dir = project_at(&verified);
    let out = crate::support::lamina_in(dir.path(), &["serve", "--listen", "127.0.0.1:0"]);
    let stderr = crate::support::text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("postgres://lamina@127.0.0.1:{}", postgres.port))
            && stderr.contains("cannot connect")
            && stderr.contains("connection requires a valid client certificate")
            && stderr.contains("sslcert=PATH"),
        "{stderr}"
    );
}
