//! One batch as the function sees it and as its answer decides: Lambda's SQS event record
//! built from a received message (`aws_lambda_events` types, so the shape is the one
//! functions deserialise), and Lambda's rules for which messages a response leaves on the
//! queue when the mapping reports batch item failures. Pure.

use aws_lambda_events::encodings::Base64Data;
use aws_lambda_events::sqs::{SqsEvent, SqsMessage, SqsMessageAttribute};
use aws_sdk_sqs::types::Message;
use serde_json::Value;

/// The event record of `message`, received from the queue `queue_arn` in `region`.
pub fn record(message: Message, queue_arn: &str, region: &str) -> SqsMessage {
    let binary = |blob: &aws_sdk_sqs::primitives::Blob| {
        let mut data = Base64Data::default();
        data.extend_from_slice(blob.as_ref());
        data
    };
    let mut record = SqsMessage::default();
    record.attributes = message
        .attributes
        .unwrap_or_default()
        .into_iter()
        .map(|(name, value)| (name.as_str().to_owned(), value))
        .collect();
    record.message_attributes = message
        .message_attributes
        .unwrap_or_default()
        .into_iter()
        .map(|(name, value)| {
            let mut attribute = SqsMessageAttribute::default();
            attribute.string_value = value.string_value().map(str::to_owned);
            attribute.binary_value = value.binary_value().map(binary);
            attribute.string_list_values = value.string_list_values().to_vec();
            attribute.binary_list_values = value.binary_list_values().iter().map(binary).collect();
            attribute.data_type = Some(value.data_type().to_owned());
            (name, attribute)
        })
        .collect();
    record.message_id = message.message_id;
    record.receipt_handle = message.receipt_handle;
    record.body = message.body;
    record.md5_of_body = message.md5_of_body;
    record.md5_of_message_attributes = message.md5_of_message_attributes;
    record.event_source = Some("aws:sqs".to_owned());
    record.event_source_arn = Some(queue_arn.to_owned());
    record.aws_region = Some(region.to_owned());
    record
}

/// The bytes a record adds to the event: what Lambda's 6 MB cut of a batch counts.
pub fn size(record: &SqsMessage) -> usize {
    serde_json::to_vec(record).map_or(0, |v| v.len() + 1)
}

/// The event of a batch, as the function's payload.
pub fn event(records: &[SqsMessage]) -> Vec<u8> {
    let mut event = SqsEvent::default();
    event.records = records.to_vec();
    serde_json::to_vec(&event).unwrap_or_default()
}

/// The ids of the messages a successful function's response reports as failed
/// (`{"batchItemFailures": [{"itemIdentifier": "<messageId>"}]}`), as Lambda reads it: an
/// empty or `null` response, or an empty or `null` list, fails none. `Err` (the whole batch
/// failed, as Lambda treats it) for a response that is not such a document, or an item whose
/// `itemIdentifier` is missing, empty, or not a message of the batch.
pub fn failed_items(response: &[u8], batch: &[&str]) -> Result<Vec<String>, String> {
    if response.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let value: Value =
        serde_json::from_slice(response).map_err(|e| format!("the response is not JSON ({e})"))?;
    let failures = match &value {
        Value::Null => return Ok(Vec::new()),
        Value::Object(fields) => fields.get("batchItemFailures").unwrap_or(&Value::Null),
        other => {
            return Err(format!(
                "the response {} is not a batchItemFailures document",
                abbreviated(other)
            ));
        }
    };
    let items = match failures {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        other => {
            return Err(format!(
                "batchItemFailures is {}, not a list",
                abbreviated(other)
            ));
        }
    };
    let mut failed = Vec::new();
    for item in items {
        match item.get("itemIdentifier") {
            Some(Value::String(id)) if batch.contains(&id.as_str()) => {
                if !failed.contains(id) {
                    failed.push(id.clone());
                }
            }
            Some(Value::String(id)) if id.is_empty() => {
                return Err("an itemIdentifier is empty".into());
            }
            Some(Value::String(id)) => {
                return Err(format!(
                    "itemIdentifier {id:?} is not a message of the batch"
                ));
            }
            _ => {
                return Err(format!(
                    "the item {} has no itemIdentifier",
                    abbreviated(item)
                ));
            }
        }
    }
    Ok(failed)
}

/// A JSON value for a log line, cut at 200 characters.
fn abbreviated(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(200) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName};

    use super::*;

    #[test]
    fn a_record_has_lambdas_shape() {
        let message = Message::builder()
            .message_id("m1")
            .receipt_handle("r1")
            .body("hello")
            .md5_of_body("5d41402abc4b2a76b9719d911017c592")
            .attributes(MessageSystemAttributeName::ApproximateReceiveCount, "1")
            .attributes(MessageSystemAttributeName::SentTimestamp, "1700000000000")
            .message_attributes(
                "colour",
                MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value("blue")
                    .build()
                    .unwrap(),
            )
            .message_attributes(
                "bytes",
                MessageAttributeValue::builder()
                    .data_type("Binary")
                    .binary_value(aws_sdk_sqs::primitives::Blob::new(b"\x00\x01".to_vec()))
                    .build()
                    .unwrap(),
            )
            .build();
        let record = record(message, "arn:aws:sqs:us-east-1:1:q", "us-east-1");
        let event: Value = serde_json::from_slice(&event(&[record])).unwrap();
        let r = &event["Records"][0];
        assert_eq!(r["messageId"], "m1");
        assert_eq!(r["receiptHandle"], "r1");
        assert_eq!(r["body"], "hello");
        assert_eq!(r["md5OfBody"], "5d41402abc4b2a76b9719d911017c592");
        assert_eq!(r["eventSource"], "aws:sqs");
        assert_eq!(r["eventSourceARN"], "arn:aws:sqs:us-east-1:1:q");
        assert_eq!(r["awsRegion"], "us-east-1");
        assert_eq!(r["attributes"]["ApproximateReceiveCount"], "1");
        assert_eq!(r["attributes"]["SentTimestamp"], "1700000000000");
        assert_eq!(r["messageAttributes"]["colour"]["stringValue"], "blue");
        assert_eq!(r["messageAttributes"]["colour"]["dataType"], "String");
        assert_eq!(r["messageAttributes"]["bytes"]["binaryValue"], "AAE=");
    }

    #[test]
    fn batch_item_failures_follow_lambdas_rules() {
        let batch = ["a", "b", "c"];
        let failed = |text: &str| failed_items(text.as_bytes(), &batch);
        // A complete success.
        for ok in [
            "",
            "null",
            "{}",
            r#"{"batchItemFailures": []}"#,
            r#"{"batchItemFailures": null}"#,
        ] {
            assert_eq!(failed(ok), Ok(Vec::new()), "{ok}");
        }
        assert_eq!(
            failed(r#"{"batchItemFailures": [{"itemIdentifier": "b"}, {"itemIdentifier": "b"}]}"#),
            Ok(vec!["b".to_owned()])
        );
        // A complete failure.
        for bad in [
            "not json",
            r#""done""#,
            r#"{"batchItemFailures": "a"}"#,
            r#"{"batchItemFailures": [{"itemIdentifier": ""}]}"#,
            r#"{"batchItemFailures": [{"itemIdentifier": null}]}"#,
            r#"{"batchItemFailures": [{"itemId": "a"}]}"#,
            r#"{"batchItemFailures": [{"itemIdentifier": "z"}]}"#,
        ] {
            assert!(failed(bad).is_err(), "{bad}");
        }
    }
}
