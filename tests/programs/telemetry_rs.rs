//! telemetry-rs: an external Lambda extension built on the official `lambda-extension` crate's
//! telemetry processor (`with_telemetry_processor`, records as `LambdaTelemetryRecord`), shipped
//! as `extensions/<name>` in a layer. It subscribes to the Telemetry API for `platform` and
//! `function` records with the crate's defaults (an HTTP listener on `0.0.0.0:9003`, destination
//! `http://sandbox.localdomain:9003`, 1 s buffering) and prints one line per record received:
//!
//! ```text
//! lamina-test-telemetry <type> <requestId or -> [<status> | <what else identifies it>]
//! lamina-test-telemetry function - <the function's log line>
//! ```
//!
//! The crate parses every batch into its own types, so a record lamina shapes differently from
//! Lambda fails the whole batch (it answers 400 and prints nothing): the lines double as a
//! check of the wire format. It registers for `SHUTDOWN` only (no `INVOKE`: a subscriber need
//! not hold invocations up) and exits on it.
//!
//! `LAMINA_TEST_TELEMETRY_QUIET=1` (the extensions benchmark) counts the records instead and
//! prints `lamina-test-telemetry received <n> dropped <m>` at `SHUTDOWN` (`m`: what lamina's
//! `platform.logsDropped` records said it dropped): what is measured is then lamina's
//! cost of delivering telemetry, not the subscriber's of writing it out again.
//!
//! `LAMINA_TEST_TELEMETRY_PORT` moves the listener: `0` takes a free port, for the process
//! backend, where every environment shares the host's network and one fixed port would be
//! taken by the first. Unset, it keeps the crate's default, as a user's extension does.

use std::io::Write;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use lambda_extension::{
    Error, Extension, InitPhase, InitType, LambdaEvent, LambdaTelemetry, LambdaTelemetryRecord,
    NextEvent, SharedService, Status, service_fn,
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    // The crate's own log (a batch it could not parse, a failed call) goes to stdout too, as
    // the crate's examples set it up: a test that fails shows why.
    lambda_extension::tracing::init_default_subscriber();
    let extension = Extension::new()
        .with_events(&["SHUTDOWN"])
        .with_events_processor(service_fn(|event: LambdaEvent| async move {
            if let NextEvent::Shutdown(shutdown) = event.next {
                if quiet() {
                    println!(
                        "lamina-test-telemetry received {} dropped {}",
                        RECEIVED.load(Relaxed),
                        DROPPED.load(Relaxed)
                    );
                }
                println!(
                    "lamina-test-telemetry SHUTDOWN {}",
                    shutdown.shutdown_reason
                );
                std::process::exit(0);
            }
            Ok::<(), Error>(())
        }))
        .with_telemetry_types(&["platform", "function"])
        .with_telemetry_processor(SharedService::new(service_fn(print_records)));
    let extension = match port()? {
        Some(port) => extension.with_telemetry_port_number(port),
        None => extension,
    };
    extension.run().await
}

/// The listener's port when `LAMINA_TEST_TELEMETRY_PORT` says; `0` asks the kernel for a free
/// one (released at once for the crate to bind: a narrow race, fine for tests).
fn port() -> Result<Option<u16>, Error> {
    match std::env::var("LAMINA_TEST_TELEMETRY_PORT") {
        Err(_) => Ok(None),
        Ok(port) if port == "0" => {
            let probe = std::net::TcpListener::bind("0.0.0.0:0")?;
            Ok(Some(probe.local_addr()?.port()))
        }
        Ok(port) => Ok(Some(port.parse()?)),
    }
}

/// Records received so far, and the records lamina said it dropped (`platform.logsDropped`),
/// counted in quiet mode only.
static RECEIVED: AtomicU64 = AtomicU64::new(0);
static DROPPED: AtomicU64 = AtomicU64::new(0);

fn quiet() -> bool {
    std::env::var_os("LAMINA_TEST_TELEMETRY_QUIET").is_some_and(|v| v == "1")
}

async fn print_records(batch: Vec<LambdaTelemetry>) -> Result<(), Error> {
    if quiet() {
        RECEIVED.fetch_add(batch.len() as u64, Relaxed);
        for event in &batch {
            if let LambdaTelemetryRecord::PlatformLogsDropped {
                dropped_records, ..
            } = event.record
            {
                DROPPED.fetch_add(dropped_records, Relaxed);
            }
        }
        return Ok(());
    }
    // One write per batch: the lines of a batch stay together in the log.
    let mut text = String::new();
    for event in batch {
        text.push_str("lamina-test-telemetry ");
        text.push_str(&describe(&event.record));
        text.push('\n');
    }
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(())
}

/// `<type> <requestId or -> …` for one record.
fn describe(record: &LambdaTelemetryRecord) -> String {
    use LambdaTelemetryRecord as R;
    match record {
        R::Function(line) => format!("function - {}", line.trim_end()),
        R::Extension(line) => format!("extension - {}", line.trim_end()),
        R::PlatformInitStart {
            initialization_type,
            phase,
            ..
        } => format!(
            "platform.initStart - {} {}",
            init_type(initialization_type),
            self::phase(phase)
        ),
        R::PlatformInitRuntimeDone { status, .. } => {
            format!("platform.initRuntimeDone - {}", self::status(status))
        }
        R::PlatformInitReport { phase, .. } => {
            format!("platform.initReport - {}", self::phase(phase))
        }
        R::PlatformStart { request_id, .. } => format!("platform.start {request_id}"),
        R::PlatformRuntimeDone {
            request_id, status, ..
        } => format!("platform.runtimeDone {request_id} {}", self::status(status)),
        R::PlatformReport {
            request_id, status, ..
        } => format!("platform.report {request_id} {}", self::status(status)),
        R::PlatformExtension { name, state, .. } => {
            format!("platform.extension - {name} {state}")
        }
        R::PlatformTelemetrySubscription { name, state, .. } => {
            format!("platform.telemetrySubscription - {name} {state}")
        }
        R::PlatformLogsDropped { reason, .. } => format!("platform.logsDropped - {reason}"),
    }
}

/// A status as it is on the wire.
fn status(status: &Status) -> &'static str {
    match status {
        Status::Success => "success",
        Status::Error => "error",
        Status::Failure => "failure",
        Status::Timeout => "timeout",
    }
}

/// An initialization type as it is on the wire.
fn init_type(init: &InitType) -> &'static str {
    match init {
        InitType::OnDemand => "on-demand",
        InitType::ProvisionedConcurrency => "provisioned-concurrency",
        InitType::SnapStart => "snap-start",
    }
}

/// A phase as it is on the wire.
fn phase(phase: &InitPhase) -> &'static str {
    match phase {
        InitPhase::Init => "init",
        InitPhase::Invoke => "invoke",
    }
}
