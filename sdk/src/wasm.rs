//! The WASM transport, lamina's guest ABI (docs/wasm-guest-abi.md): one event per run, on
//! stdin; its metadata in `LAMBDA_RUNTIME_*` variables; the response on stdout and exit 0, or
//! the error document on stdout and exit 1. No networking.

use std::io::{Read, Write};
use std::sync::Arc;

use crate::context::Invocation;
use crate::handler::Invoke;
use crate::{Config, Context, Diagnostic};

/// Bytes reserved for the event before stdin is read: most events fit, in one read.
const STDIN_CAPACITY: usize = 64 * 1024;

/// Runs the one event this instance was started for. Returns only on success; an error is
/// written to stdout and the process exits with status 1, as the ABI asks.
pub(crate) async fn serve(handler: &mut impl Invoke) -> Result<(), crate::Error> {
    match once(handler).await {
        Ok(response) => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&response)?;
            stdout.flush()?;
            Ok(())
        }
        Err(error) => {
            let mut stdout = std::io::stdout().lock();
            // Nothing is left to report a failed write to: the exit status still says it.
            let _ = stdout.write_all(&error.to_json());
            let _ = stdout.flush();
            std::process::exit(1)
        }
    }
}

async fn once(handler: &mut impl Invoke) -> Result<Vec<u8>, Diagnostic> {
    // The environment is read in one pass: each `std::env::var` is a `getenv`, a `strncmp`
    // scan of every variable, and eleven of them were 4% of a loaded server's time.
    let vars: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let var = |name: &str| {
        vars.iter()
            .find_map(|(k, v)| (k == name).then(|| v.clone()))
    };
    let config = Config::from_lookup(&var)
        .map_err(|e| Diagnostic::new("Runtime.InvalidConfig", e.to_string()))?;
    // Room for a typical event up front: each read of stdin is a host call, and a buffer grown
    // from empty takes about one per doubling (seven for 1 KB).
    let mut payload = Vec::with_capacity(STDIN_CAPACITY);
    std::io::stdin()
        .read_to_end(&mut payload)
        .map_err(|e| Diagnostic::new("Runtime.InvalidInvocation", format!("reading stdin: {e}")))?;
    let (request_id, deadline_ms, function_arn, trace_id, client_context, cognito_identity) = (
        var("LAMBDA_RUNTIME_AWS_REQUEST_ID"),
        var("LAMBDA_RUNTIME_DEADLINE_MS"),
        var("LAMBDA_RUNTIME_INVOKED_FUNCTION_ARN"),
        var("LAMBDA_RUNTIME_TRACE_ID"),
        var("LAMBDA_RUNTIME_CLIENT_CONTEXT"),
        var("LAMBDA_RUNTIME_COGNITO_IDENTITY"),
    );
    let invocation = Invocation {
        request_id: request_id.as_deref(),
        deadline_ms: deadline_ms.as_deref(),
        function_arn: function_arn.as_deref(),
        trace_id: trace_id.as_deref(),
        client_context: client_context.as_deref(),
        cognito_identity: cognito_identity.as_deref(),
    };
    let context = Context::new(&invocation, Arc::new(config))
        .map_err(|e| Diagnostic::new("Runtime.InvalidInvocation", e.to_string()))?;
    handler.invoke(&payload, context).await
}
