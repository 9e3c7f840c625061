//! sqs-batch: processes an SQS batch in which each message body should be a JSON document,
//! and reports only the messages that failed in `batchItemFailures`, so SQS retries just
//! those (the function's event source mapping needs `ReportBatchItemFailures`).

use lamina_sdk::events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use lamina_sdk::{Error, LambdaEvent, run, service_fn};

/// The business logic for one message, which knows nothing of SQS: a body must be JSON.
fn process(body: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(body).map_err(|e| format!("not a JSON document: {e}"))
}

/// The thin adapter: each record through the logic, the failures reported by message id.
async fn handler(event: LambdaEvent<SqsEvent>) -> Result<SqsBatchResponse, Error> {
    let mut response = SqsBatchResponse::default();
    for record in event.payload.records {
        let id = record.message_id.unwrap_or_default();
        if let Err(reason) = process(record.body.as_deref().unwrap_or_default()) {
            eprintln!("message {id} failed: {reason}");
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            response.batch_item_failures.push(failure);
        }
    }
    Ok(response)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    run(service_fn(handler)).await
}
