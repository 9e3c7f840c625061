//! echo: answers with the event it was given. The same source builds to a native `bootstrap`
//! (the Lambda Runtime API) and to a wasm32-wasip1 module (lamina's guest ABI).

use lamina_sdk::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;

/// The business logic, which knows nothing of Lambda: the answer is the question.
fn echo(event: Value) -> Value {
    event
}

/// The thin adapter between Lambda and the logic.
async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    Ok(echo(event.payload))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    run(service_fn(handler)).await
}
