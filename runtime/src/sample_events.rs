//! Sample events of Lambda's event sources, shaped as their services send them, for
//! `lamina event generate` and `lamina invoke --event-template`. Each is built from its
//! `aws_lambda_events` type and then serialized, so that it deserializes as a function expects;
//! where that type cannot say what the service sends (a field it lacks, one it adds, a number it
//! writes as a string), the JSON is patched afterwards and the patch says why. Ids are fresh on
//! every call and times are the current time; the account is always 000000000000.

mod http;
mod messaging;
mod s3;
mod streams;
mod time;

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// What a sample event may be given. Each option applies to some events only (see
/// [`generate`]); `None` takes the sample's own value.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The request path, optionally with `?query` (HTTP events).
    pub path: Option<String>,
    /// The HTTP method (HTTP events) [default: GET, or POST with a body].
    pub method: Option<String>,
    /// The request body (HTTP events), the message (sqs, sns), the record's data (kinesis) or
    /// the detail, a JSON object (eventbridge).
    pub body: Option<String>,
    /// The bucket (s3, s3-object-lambda).
    pub bucket: Option<String>,
    /// The object key, unencoded (s3, s3-object-lambda).
    pub key: Option<String>,
    /// The region in ARNs, host names and `awsRegion` [default: us-east-1].
    pub region: Option<String>,
}

/// Why no sample event was made.
#[derive(Debug, thiserror::Error)]
pub enum SampleEventError {
    /// No sample of that name.
    #[error("no sample event {name:?}; known: {}", NAMES.join(", "))]
    Unknown {
        /// The name asked for.
        name: String,
    },
    /// An option given to an event it means nothing to.
    #[error("{flag} does not apply to {event} events ({event} takes {accepted})")]
    NotApplicable {
        /// The option, as its command-line flag.
        flag: &'static str,
        /// The event's name.
        event: &'static str,
        /// The flags that event takes.
        accepted: String,
    },
    /// An option's value that the service could never send.
    #[error("{flag} {value:?}: expected {expected}")]
    Invalid {
        /// The option, as its command-line flag.
        flag: &'static str,
        /// The value given.
        value: String,
        /// What it should be.
        expected: &'static str,
    },
    /// Serializing the event failed: a bug in the sample, not in the options.
    #[error("building the {event} sample: {source}")]
    Build {
        /// The event's name.
        event: &'static str,
        /// What serde said.
        source: serde_json::Error,
    },
}

/// The event sources with a sample, in the order `lamina event list` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    ApigwV2,
    ApigwV1,
    Alb,
    Sqs,
    Sns,
    S3,
    DynamoDb,
    EventBridge,
    Schedule,
    S3ObjectLambda,
    Kinesis,
}

const SOURCES: [Source; 11] = [
    Source::ApigwV2,
    Source::ApigwV1,
    Source::Alb,
    Source::Sqs,
    Source::Sns,
    Source::S3,
    Source::DynamoDb,
    Source::EventBridge,
    Source::Schedule,
    Source::S3ObjectLambda,
    Source::Kinesis,
];

/// The name of every sample event, in the order `lamina event list` shows them.
pub const NAMES: [&str; SOURCES.len()] = {
    let mut names = [""; SOURCES.len()];
    let mut i = 0;
    while i < SOURCES.len() {
        names[i] = SOURCES[i].name();
        i += 1;
    }
    names
};

impl Source {
    const fn name(self) -> &'static str {
        match self {
            Source::ApigwV2 => "apigw-v2",
            Source::ApigwV1 => "apigw-v1",
            Source::Alb => "alb",
            Source::Sqs => "sqs",
            Source::Sns => "sns",
            Source::S3 => "s3",
            Source::DynamoDb => "dynamodb",
            Source::EventBridge => "eventbridge",
            Source::Schedule => "schedule",
            Source::S3ObjectLambda => "s3-object-lambda",
            Source::Kinesis => "kinesis",
        }
    }

    fn description(self) -> &'static str {
        match self {
            Source::ApigwV2 => "API Gateway HTTP API request (payload format 2.0)",
            Source::ApigwV1 => "API Gateway REST API proxy request (payload format 1.0)",
            Source::Alb => "Application Load Balancer request to a Lambda target group",
            Source::Sqs => "SQS batch of one message",
            Source::Sns => "SNS notification",
            Source::S3 => "S3 notification of a new object (ObjectCreated:Put)",
            Source::DynamoDb => "DynamoDB stream record of an inserted item",
            Source::EventBridge => "EventBridge custom event",
            Source::Schedule => "EventBridge Scheduled Event of a rate or cron rule",
            Source::S3ObjectLambda => "S3 Object Lambda GetObject request",
            Source::Kinesis => "Kinesis data stream record",
        }
    }

    /// The options this event takes, as flags; `--region` applies to all.
    fn flags(self) -> &'static [&'static str] {
        match self {
            Source::ApigwV2 | Source::ApigwV1 | Source::Alb => {
                &["--path", "--method", "--body", "--region"]
            }
            Source::Sqs | Source::Sns | Source::EventBridge | Source::Kinesis => {
                &["--body", "--region"]
            }
            Source::S3 | Source::S3ObjectLambda => &["--bucket", "--key", "--region"],
            Source::DynamoDb | Source::Schedule => &["--region"],
        }
    }
}

/// The one-line description of sample event `name`, if there is one.
pub fn description(name: &str) -> Option<&'static str> {
    SOURCES
        .into_iter()
        .find(|s| s.name() == name)
        .map(Source::description)
}

/// The sample event `name` (one of [`NAMES`]) with `options` applied. An option the event
/// does not take is refused rather than ignored, so that a typo cannot go unnoticed.
pub fn generate(name: &str, options: &Options) -> Result<Value, SampleEventError> {
    let source = SOURCES
        .into_iter()
        .find(|s| s.name() == name)
        .ok_or_else(|| SampleEventError::Unknown {
            name: name.to_owned(),
        })?;
    check_applies(source, options)?;
    let region = options.region.as_deref().unwrap_or("us-east-1");
    if region.is_empty()
        || !region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(invalid(
            "--region",
            region,
            "a region name such as us-east-1",
        ));
    }
    let sample = Sample {
        region,
        now_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    };
    let built = match source {
        Source::ApigwV2 => http::apigw_v2(&sample, options),
        Source::ApigwV1 => http::apigw_v1(&sample, options),
        Source::Alb => http::alb(&sample, options),
        Source::Sqs => messaging::sqs(&sample, options),
        Source::Sns => messaging::sns(&sample, options),
        Source::EventBridge => messaging::eventbridge(&sample, options),
        Source::Schedule => messaging::schedule(&sample),
        Source::S3 => s3::object_created(&sample, options),
        Source::S3ObjectLambda => s3::object_lambda(&sample, options),
        Source::DynamoDb => streams::dynamodb(&sample),
        Source::Kinesis => streams::kinesis(&sample, options),
    };
    built.map_err(|e| match e {
        Problem::Invalid(e) => e,
        Problem::Json(e) => SampleEventError::Build {
            event: source.name(),
            source: e,
        },
    })
}

/// Refuses every given option that `source` does not take.
fn check_applies(source: Source, options: &Options) -> Result<(), SampleEventError> {
    let given = [
        ("--path", options.path.is_some()),
        ("--method", options.method.is_some()),
        ("--body", options.body.is_some()),
        ("--bucket", options.bucket.is_some()),
        ("--key", options.key.is_some()),
    ];
    match given
        .into_iter()
        .find(|(flag, is_given)| *is_given && !source.flags().contains(flag))
    {
        Some((flag, _)) => Err(SampleEventError::NotApplicable {
            flag,
            event: source.name(),
            accepted: source.flags().join(", "),
        }),
        None => Ok(()),
    }
}

/// What went wrong inside a builder: a bad option, or serde.
enum Problem {
    Invalid(SampleEventError),
    Json(serde_json::Error),
}

impl From<serde_json::Error> for Problem {
    fn from(e: serde_json::Error) -> Self {
        Problem::Json(e)
    }
}

impl From<SampleEventError> for Problem {
    fn from(e: SampleEventError) -> Self {
        Problem::Invalid(e)
    }
}

type Built = Result<Value, Problem>;

fn invalid(flag: &'static str, value: &str, expected: &'static str) -> SampleEventError {
    SampleEventError::Invalid {
        flag,
        value: value.to_owned(),
        expected,
    }
}

/// The account every sample's ARNs name: clearly not a real one.
const ACCOUNT: &str = "000000000000";

/// Where and when one sample happens.
struct Sample<'a> {
    region: &'a str,
    /// Milliseconds since the Unix epoch.
    now_ms: u64,
}

impl Sample<'_> {
    /// `2024-03-12T19:03:58.123Z`, as S3 and SNS write times.
    fn rfc3339_millis(&self) -> String {
        time::rfc3339_millis(self.now_ms)
    }

    /// `2024-03-12T19:03:58Z`, as EventBridge writes times.
    fn rfc3339_seconds(&self) -> String {
        time::rfc3339_seconds(self.now_ms)
    }

    /// `12/Mar/2024:19:03:58 +0000`, API Gateway's request time (the common log format).
    fn clf(&self) -> String {
        time::clf(self.now_ms)
    }

    /// A time as the `chrono` type the event structs hold: lamina does not depend on chrono
    /// itself, so the value is read from the RFC 3339 text chrono parses.
    fn time<T: DeserializeOwned>(&self, text: String) -> Result<T, serde_json::Error> {
        from_json(Value::String(text))
    }

    /// An `X-Amzn-Trace-Id` header value: `Root=1-{epoch seconds in hex}-{96 random bits}`.
    fn trace_id(&self) -> String {
        format!("Root=1-{:08x}-{}", self.now_ms / 1000, random_hex(24))
    }
}

/// A value of a type from one of `aws_lambda_events`' own dependencies (chrono's `DateTime`,
/// serde_dynamo's `Item`), which lamina does not depend on: read from the JSON it serializes
/// to, the type inferred from the field it is assigned to.
fn from_json<T: DeserializeOwned>(value: Value) -> Result<T, serde_json::Error> {
    serde_json::from_value(value)
}

/// `n` random bytes. Sample ids need variety, not secrecy: SipHash under the process's random
/// keys gives that without a dependency on a random number generator.
fn random_bytes(n: usize) -> Vec<u8> {
    let state = RandomState::new();
    (0..n.div_ceil(8))
        .flat_map(|i| state.hash_one(i).to_le_bytes())
        .take(n)
        .collect()
}

/// `n` random lower-case hex digits.
fn random_hex(n: usize) -> String {
    random_bytes(n.div_ceil(2))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()[..n]
        .to_owned()
}

/// `n` random characters of `alphabet` (ASCII).
fn random_of(alphabet: &[u8], n: usize) -> String {
    random_bytes(n)
        .iter()
        .map(|b| char::from(alphabet[usize::from(*b) % alphabet.len()]))
        .collect()
}

const UPPER_ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const LOWER_ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const DIGITS: &[u8] = b"0123456789";

/// `n` random bytes in standard base64.
fn random_base64(n: usize) -> String {
    base64::engine::general_purpose::STANDARD.encode(random_bytes(n))
}

/// A version 4 UUID, as most AWS services write their message and request ids.
fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Removes `keys` from the object at `pointer` in `value`, if it is there.
fn remove(value: &mut Value, pointer: &str, keys: &[&str]) {
    if let Some(object) = value.pointer_mut(pointer).and_then(Value::as_object_mut) {
        for key in keys {
            object.remove(*key);
        }
    }
}

/// Sets `key` of the object at `pointer` in `value`, if that object is there.
fn set(value: &mut Value, pointer: &str, key: &str, new: Value) {
    if let Some(object) = value.pointer_mut(pointer).and_then(Value::as_object_mut) {
        object.insert(key.to_owned(), new);
    }
}

/// Renames the keys of the object at `pointer` to the spelling in `names` they match case
/// insensitively. `http::HeaderMap` keeps header names lower case, while some services pass
/// them on as the client wrote them (`Host`, `User-Agent`), and a function may look them up
/// that way.
fn header_case(value: &mut Value, pointer: &str, names: &[&str]) {
    if let Some(object) = value.pointer_mut(pointer).and_then(Value::as_object_mut) {
        for name in names {
            if let Some(v) = object.remove(&name.to_ascii_lowercase()) {
                object.insert((*name).to_owned(), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_each_has_a_description_and_a_sample() {
        let mut seen = std::collections::HashSet::new();
        for name in NAMES {
            assert!(seen.insert(name), "{name} twice");
            assert!(description(name).is_some_and(|d| !d.is_empty()), "{name}");
            let event = generate(name, &Options::default()).unwrap();
            assert!(event.is_object(), "{name}: {event}");
        }
    }

    #[test]
    fn random_helpers_give_the_lengths_asked_for() {
        assert_eq!(random_hex(24).len(), 24);
        assert!(random_hex(7).bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(random_of(DIGITS, 56).len(), 56);
        assert_ne!(random_hex(32), random_hex(32));
    }

    #[test]
    fn options_that_do_not_apply_are_refused() {
        let options = Options {
            bucket: Some("b".into()),
            ..Options::default()
        };
        let e = generate("sqs", &options).unwrap_err().to_string();
        assert_eq!(
            e,
            "--bucket does not apply to sqs events (sqs takes --body, --region)"
        );
        let e = generate("nope", &Options::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("apigw-v2, apigw-v1, alb, sqs"), "{e}");
    }
}
