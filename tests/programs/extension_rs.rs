//! extension-rs: an external Lambda extension built on the official `lambda-extension` crate as
//! its README shows (`Extension::new().with_events(..).with_events_processor(..)`), shipped as
//! `extensions/<name>` in a layer. It registers for `INVOKE` and `SHUTDOWN` under its file's
//! name (the crate's default) and prints one line per event on stdout, which lamina carries to
//! the function's log stream, so a test reads what the extension was told:
//!
//! ```text
//! lamina-test-extension INVOKE <requestId> <deadlineMs>
//! lamina-test-extension SHUTDOWN <shutdownReason>
//! ```

use lambda_extension::{Error, Extension, LambdaEvent, NextEvent, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    // The crate's own log (a batch it could not parse, a failed call) goes to stdout too, as
    // the crate's examples set it up: a test that fails shows why.
    lambda_extension::tracing::init_default_subscriber();
    Extension::new()
        .with_events(&["INVOKE", "SHUTDOWN"])
        .with_events_processor(service_fn(record))
        .run()
        .await
}

async fn record(event: LambdaEvent) -> Result<(), Error> {
    match event.next {
        NextEvent::Invoke(invoke) => println!(
            "lamina-test-extension INVOKE {} {}",
            invoke.request_id, invoke.deadline_ms
        ),
        NextEvent::Shutdown(shutdown) => {
            println!(
                "lamina-test-extension SHUTDOWN {}",
                shutdown.shutdown_reason
            );
            // The crate's loop would ask for another event; after `SHUTDOWN` an extension is
            // to exit (Lambda counts one still running at the budget's end as a failed
            // shutdown). Stdout is line-buffered: the line is out already.
            std::process::exit(0);
        }
    }
    Ok(())
}
