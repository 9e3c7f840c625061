//! The messaging events: an SQS batch of one message, an SNS notification, an EventBridge
//! custom event and an EventBridge scheduled event. `--body` is the SQS or SNS message, or
//! the custom event's `detail`.

use md5::Digest as _;
use std::collections::HashMap;

use aws_lambda_events::eventbridge::EventBridgeEvent;
use aws_lambda_events::sns::{SnsEvent, SnsMessage, SnsRecord};
use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use serde_json::{Value, json};

use super::{
    ACCOUNT, Built, Options, Sample, UPPER_ALNUM, invalid, random_base64, random_hex, random_of,
    remove, uuid,
};

/// `lamina event generate sqs`: one message of a standard queue, received for the first time.
pub(super) fn sqs(sample: &Sample<'_>, options: &Options) -> Built {
    let body = options.body.as_deref().unwrap_or("Hello from SQS!");
    let sent = sample.now_ms.saturating_sub(40);

    let mut message = SqsMessage::default();
    message.message_id = Some(uuid());
    // Receipt handles are long opaque base64 strings that start with `AQEB`.
    message.receipt_handle = Some(format!("AQEB{}", random_base64(135)));
    message.body = Some(body.to_owned());
    message.md5_of_body = Some(
        md5::Md5::digest(body.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    );
    message.attributes = HashMap::from([
        ("ApproximateReceiveCount".to_owned(), "1".to_owned()),
        ("SentTimestamp".to_owned(), sent.to_string()),
        (
            "SenderId".to_owned(),
            format!("AIDA{}", random_of(UPPER_ALNUM, 17)),
        ),
        (
            "ApproximateFirstReceiveTimestamp".to_owned(),
            sample.now_ms.to_string(),
        ),
    ]);
    message.event_source = Some("aws:sqs".into());
    message.event_source_arn = Some(format!(
        "arn:aws:sqs:{}:{ACCOUNT}:example-queue",
        sample.region
    ));
    message.aws_region = Some(sample.region.to_owned());

    let mut event = SqsEvent::default();
    event.records = vec![message];
    let mut json = serde_json::to_value(event)?;
    // SQS leaves out the digest of message attributes when a message has none; the type
    // writes it as null.
    remove(&mut json, "/Records/0", &["md5OfMessageAttributes"]);
    Ok(json)
}

/// `lamina event generate sns`: a notification without a subject or message attributes.
pub(super) fn sns(sample: &Sample<'_>, options: &Options) -> Built {
    let topic = format!("arn:aws:sns:{}:{ACCOUNT}:example-topic", sample.region);
    let subscription = format!("{topic}:{}", uuid());

    let mut message = SnsMessage::default();
    message.sns_message_type = "Notification".into();
    message.message_id = uuid();
    message.topic_arn = topic;
    message.subject = None;
    message.timestamp = sample.time(sample.rfc3339_millis())?;
    message.signature_version = "1".into();
    // An RSA signature over the message: 256 bytes.
    message.signature = random_base64(256);
    message.signing_cert_url = format!(
        "https://sns.{}.amazonaws.com/SimpleNotificationService-{}.pem",
        sample.region,
        random_hex(32)
    );
    message.unsubscribe_url = format!(
        "https://sns.{}.amazonaws.com/?Action=Unsubscribe&SubscriptionArn={subscription}",
        sample.region
    );
    message.message = options
        .body
        .clone()
        .unwrap_or_else(|| "Hello from SNS!".to_owned());

    let mut record = SnsRecord::default();
    record.event_source = "aws:sns".into();
    record.event_version = "1.0".into();
    record.event_subscription_arn = subscription;
    record.sns = message;

    let mut event = SnsEvent::default();
    event.records = vec![record];
    Ok(serde_json::to_value(event)?)
}

/// `lamina event generate eventbridge`: a custom event an application put on the default bus.
/// `--body` is its detail and must be a JSON object, as EventBridge requires.
pub(super) fn eventbridge(sample: &Sample<'_>, options: &Options) -> Built {
    let detail = match &options.body {
        None => json!({ "message": "Hello from EventBridge!" }),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(detail @ Value::Object(_)) => detail,
            _ => {
                return Err(
                    invalid("--body", text, "a JSON object (an EventBridge detail)").into(),
                );
            }
        },
    };
    bus_event(
        sample,
        "com.example.app",
        "Example Event",
        Vec::new(),
        detail,
    )
}

/// `lamina event generate schedule`: what a rate or cron rule sends, its detail always empty.
pub(super) fn schedule(sample: &Sample<'_>) -> Built {
    let rule = format!(
        "arn:aws:events:{}:{ACCOUNT}:rule/example-schedule",
        sample.region
    );
    bus_event(
        sample,
        "aws.events",
        "Scheduled Event",
        vec![rule],
        json!({}),
    )
}

/// An event as EventBridge delivers it to a target (times to the second).
fn bus_event(
    sample: &Sample<'_>,
    source: &str,
    detail_type: &str,
    resources: Vec<String>,
    detail: Value,
) -> Built {
    let mut event: EventBridgeEvent<Value> = EventBridgeEvent::default();
    event.version = Some("0".into());
    event.id = Some(uuid());
    event.detail_type = detail_type.to_owned();
    event.source = source.to_owned();
    event.account = Some(ACCOUNT.into());
    event.time = Some(sample.time(sample.rfc3339_seconds())?);
    event.region = Some(sample.region.to_owned());
    event.resources = Some(resources);
    event.detail = detail;
    Ok(serde_json::to_value(event)?)
}
