//! The stream events: a Kinesis data stream record (`--body` is its data, sent base64-encoded)
//! and a DynamoDB stream record of an inserted item.

use aws_lambda_events::dynamodb::{Event, EventRecord, StreamRecord, StreamViewType};
use aws_lambda_events::encodings::{Base64Data, SecondTimestamp};
use aws_lambda_events::kinesis::{KinesisEvent, KinesisEventRecord, KinesisRecord};
use serde_json::{Number, Value, json};

use super::{
    ACCOUNT, Built, DIGITS, Options, Sample, from_json, random_hex, random_of, remove, set, uuid,
};

/// `lamina event generate kinesis`: one record of an unencrypted stream, from shard 0.
pub(super) fn kinesis(sample: &Sample<'_>, options: &Options) -> Built {
    let data = options.body.as_deref().unwrap_or("Hello from Kinesis!");
    // Kinesis sequence numbers are 56 decimal digits.
    let sequence = format!("4{}", random_of(DIGITS, 55));

    let mut record = KinesisRecord::default();
    record.kinesis_schema_version = Some("1.0".into());
    record.partition_key = "partition-key-1".into();
    record.sequence_number = sequence.clone();
    let mut bytes = Base64Data::default();
    bytes.extend_from_slice(data.as_bytes());
    record.data = bytes;
    record.approximate_arrival_timestamp = SecondTimestamp(sample.time(sample.rfc3339_millis())?);

    let mut outer = KinesisEventRecord::default();
    outer.kinesis = record;
    outer.event_source = Some("aws:kinesis".into());
    outer.event_version = Some("1.0".into());
    outer.event_id = Some(format!("shardId-000000000000:{sequence}"));
    outer.event_name = Some("aws:kinesis:record".into());
    outer.invoke_identity_arn = Some(format!("arn:aws:iam::{ACCOUNT}:role/example-function-role"));
    outer.aws_region = Some(sample.region.to_owned());
    outer.event_source_arn = Some(format!(
        "arn:aws:kinesis:{}:{ACCOUNT}:stream/example-stream",
        sample.region
    ));

    let mut event = KinesisEvent::default();
    event.records = vec![outer];
    let mut json = serde_json::to_value(event)?;
    // Kinesis writes the arrival time as a number of seconds with milliseconds
    // (1480641523.477); the type writes it as a string. An f64 holds epoch milliseconds (far
    // below 2^53) exactly enough for serde_json to print the same digits back.
    let arrival = sample.now_ms as f64 / 1000.0;
    if let Some(number) = Number::from_f64(arrival) {
        set(
            &mut json,
            "/Records/0/kinesis",
            "approximateArrivalTimestamp",
            Value::Number(number),
        );
    }
    // Only records of a stream with server-side encryption carry `encryptionType` (`KMS`);
    // the type writes `NONE` for every other.
    remove(&mut json, "/Records/0/kinesis", &["encryptionType"]);
    Ok(json)
}

/// `lamina event generate dynamodb`: the INSERT of an item in a table whose stream shows new
/// and old images.
pub(super) fn dynamodb(sample: &Sample<'_>) -> Built {
    let id = uuid();
    let created = (sample.now_ms / 1000).to_string();
    let keys = json!({ "Id": { "S": id } });
    let new_image = json!({
        "Id": { "S": id },
        "Message": { "S": "New item!" },
        "CreatedAt": { "N": created },
    });
    // An item's size as DynamoDB counts it: attribute names plus values, a number taking
    // about one byte per two digits plus one.
    let size = |pairs: &[(&str, usize)]| -> usize { pairs.iter().map(|(n, v)| n.len() + v).sum() };
    let size_bytes = size(&[("Id", id.len())])
        + size(&[
            ("Id", id.len()),
            ("Message", "New item!".len()),
            ("CreatedAt", created.len().div_ceil(2) + 1),
        ]);

    let mut change = StreamRecord::default();
    change.approximate_creation_date_time = sample.time(sample.rfc3339_seconds())?;
    change.keys = from_json(keys)?;
    change.new_image = from_json(new_image)?;
    change.sequence_number = Some(format!("1{}", random_of(DIGITS, 20)));
    change.size_bytes = i64::try_from(size_bytes).unwrap_or(i64::MAX);
    change.stream_view_type = Some(StreamViewType::NewAndOldImages);

    // A stream's label is the time it was enabled, to the millisecond and without a zone.
    let label = sample.rfc3339_millis().trim_end_matches('Z').to_owned();
    let mut record = EventRecord::default();
    record.aws_region = sample.region.to_owned();
    record.change = change;
    record.event_id = random_hex(32);
    record.event_name = "INSERT".into();
    record.event_source = Some("aws:dynamodb".into());
    record.event_version = Some("1.1".into());
    record.event_source_arn = Some(format!(
        "arn:aws:dynamodb:{}:{ACCOUNT}:table/example-table/stream/{label}",
        sample.region
    ));

    let mut event = Event::default();
    event.records = vec![record];
    let mut json = serde_json::to_value(event)?;
    // An INSERT has no old image, which DynamoDB leaves out and the type writes as {}; and
    // `userIdentity` (TTL deletions only), `recordFormat` and `tableName` (records through
    // Kinesis only) are not sent with a plain stream record, where the type writes null.
    remove(&mut json, "/Records/0/dynamodb", &["OldImage"]);
    remove(
        &mut json,
        "/Records/0",
        &["userIdentity", "recordFormat", "tableName"],
    );
    Ok(json)
}
