//! The SQS client lamina calls queues with: one `aws_sdk_sqs::Client` per endpoint and region
//! (made on first use, then shared), its configuration built by hand rather than by
//! `aws-config` (see config/credentials.rs for why): lamina's own credentials resolver, the
//! region of the queue's AWS host or else the caller's, the endpoint of the queue's URL. Each
//! call's failure becomes an [`SqsError`] naming the queue.
//!
//! A queue on an endpoint that is not AWS's (moto, LocalStack, ElasticMQ) is called with
//! placeholder keys when the caller has none: such servers do not check signatures.

use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::{BehaviorVersion, Region};
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName};
use aws_smithy_http_client::tls;

use super::SqsError;
use crate::config::credentials::{self, Credentials, Sources};
use crate::config::sqs_address::Queue;

/// SQS's limit on the messages one `ReceiveMessage` returns and one batch call takes.
pub const MAX_MESSAGES_PER_CALL: usize = 10;

/// SQS's longest long poll, seconds.
pub const MAX_WAIT_SECONDS: u32 = 20;

/// Who lamina is to SQS: process-wide, set once by `lamina serve` ([`configure`]).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The caller's keys (environment, else the profile).
    pub credentials: Option<Credentials>,
    /// The region for endpoints that do not name one (`AWS_REGION`, `AWS_DEFAULT_REGION`, the
    /// profile's `region`).
    pub region: Option<String>,
}

impl Settings {
    /// The caller's credentials and region, from the profile `profile` (else `AWS_PROFILE`,
    /// else `default`) where the environment does not give them.
    pub fn of_caller(profile: Option<&str>) -> Settings {
        let sources = Sources::of_this_process();
        let credentials = match credentials::from_caller(profile, &sources) {
            Ok(credentials) => credentials,
            Err(e) => {
                tracing::warn!("SQS: {e}; calling SQS without the caller's credentials");
                None
            }
        };
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let region = var("AWS_REGION")
            .or_else(|| var("AWS_DEFAULT_REGION"))
            .or_else(|| profile_region(profile.or(var("AWS_PROFILE").as_deref()), &sources));
        Settings {
            credentials,
            region,
        }
    }
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

/// Sets who lamina is to SQS; the first call wins (a reload keeps the command line's).
pub fn configure(settings: Settings) {
    let _ = SETTINGS.set(settings);
}

fn settings() -> &'static Settings {
    SETTINGS.get_or_init(|| Settings::of_caller(None))
}

/// The profile's `region` in the config file (`AWS_CONFIG_FILE`, else `~/.aws/config`).
fn profile_region(profile: Option<&str>, sources: &Sources) -> Option<String> {
    let file = sources
        .env
        .iter()
        .find(|(k, v)| k == "AWS_CONFIG_FILE" && !v.is_empty())
        .map(|(_, v)| std::path::PathBuf::from(v))
        .or_else(|| sources.home.as_ref().map(|h| h.join(".aws/config")))?;
    let text = std::fs::read_to_string(file).ok()?;
    let wanted = match profile.unwrap_or("default") {
        "default" => "default".to_owned(),
        other => format!("profile {other}"),
    };
    let mut inside = false;
    for line in text.lines().map(str::trim) {
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = header.trim() == wanted;
        } else if inside
            && let Some((key, value)) = line.split_once('=')
            && key.trim() == "region"
        {
            return Some(value.trim().to_owned()).filter(|v| !v.is_empty());
        }
    }
    None
}

/// The clients made so far, by endpoint and region.
static CLIENTS: Mutex<Vec<((String, String), Client)>> = Mutex::new(Vec::new());

/// A client for `queue`, and the region it signs for.
pub fn for_queue(queue: &Queue) -> Result<(Client, String), SqsError> {
    let settings = settings();
    let region = queue
        .region
        .clone()
        .or_else(|| settings.region.clone())
        .unwrap_or_else(|| crate::config::DEFAULT_REGION.to_owned());
    let key = (queue.endpoint.clone(), region.clone());
    let mut clients = CLIENTS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, client)) = clients.iter().find(|(k, _)| *k == key) {
        return Ok((client.clone(), region));
    }
    let credentials = match (&settings.credentials, queue.is_aws()) {
        (Some(c), _) => aws_sdk_sqs::config::Credentials::new(
            &c.access_key_id,
            &c.secret_access_key,
            c.session_token.clone(),
            None,
            "lamina",
        ),
        (None, true) => {
            return Err(SqsError::NoCredentials {
                queue: queue.url.clone(),
            });
        }
        (None, false) => {
            aws_sdk_sqs::config::Credentials::new("lamina", "lamina", None, None, "lamina")
        }
    };
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    // A long poll waits up to 20 s for messages: an attempt may take that long, and more
    // only when something is wrong.
    let timeouts = aws_sdk_sqs::config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_attempt_timeout(Duration::from_secs(u64::from(MAX_WAIT_SECONDS) + 10))
        .build();
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.clone()))
        .endpoint_url(&queue.endpoint)
        .credentials_provider(credentials)
        .http_client(http)
        .timeout_config(timeouts)
        .build();
    let client = Client::from_conf(config);
    clients.push((key, client.clone()));
    Ok((client, region))
}

/// An SDK error as lamina reports it: a missing queue, an endpoint out of reach, or what the
/// service said.
fn error<E>(queue: &Queue, operation: &'static str, e: SdkError<E>) -> SqsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let url = queue.url.clone();
    match &e {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("Unknown").to_owned();
            if matches!(
                code.as_str(),
                "QueueDoesNotExist" | "AWS.SimpleQueueService.NonExistentQueue"
            ) {
                return SqsError::NoSuchQueue {
                    queue: url,
                    endpoint: queue.endpoint.clone(),
                };
            }
            SqsError::Service {
                queue: url,
                operation,
                code,
                message: service.err().message().unwrap_or_default().to_owned(),
            }
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => SqsError::Unreachable {
            queue: url,
            endpoint: queue.endpoint.clone(),
            reason: chain(&e),
        },
        _ => SqsError::Call {
            queue: url,
            operation,
            reason: chain(&e),
        },
    }
}

/// An error and its sources, each said once: `dispatch failure: io error: … Connection
/// refused (os error 111)`.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

/// `SendMessage`.
pub async fn send(queue: &Queue, body: String) -> Result<(), SqsError> {
    let (client, _) = for_queue(queue)?;
    client
        .send_message()
        .queue_url(&queue.url)
        .message_body(body)
        .send()
        .await
        .map_err(|e| error(queue, "SendMessage", e))?;
    Ok(())
}

/// `GetQueueAttributes` for `QueueArn`: the queue's ARN (which also proves it exists).
pub async fn queue_arn(queue: &Queue) -> Result<String, SqsError> {
    let (client, _) = for_queue(queue)?;
    let answer = client
        .get_queue_attributes()
        .queue_url(&queue.url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| error(queue, "GetQueueAttributes", e))?;
    answer
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
        .cloned()
        .ok_or_else(|| SqsError::Call {
            queue: queue.url.clone(),
            operation: "GetQueueAttributes",
            reason: "the answer has no QueueArn".into(),
        })
}

/// `ReceiveMessage` of at most `max` messages, waiting up to `wait_seconds` for the first,
/// with every system attribute and message attribute.
pub async fn receive(
    queue: &Queue,
    max: usize,
    wait_seconds: u32,
) -> Result<Vec<Message>, SqsError> {
    let (client, _) = for_queue(queue)?;
    let max = max.clamp(1, MAX_MESSAGES_PER_CALL);
    let answer = client
        .receive_message()
        .queue_url(&queue.url)
        .max_number_of_messages(i32::try_from(max).unwrap_or(10))
        .wait_time_seconds(i32::try_from(wait_seconds.min(MAX_WAIT_SECONDS)).unwrap_or(20))
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .message_attribute_names("All")
        .send()
        .await
        .map_err(|e| error(queue, "ReceiveMessage", e))?;
    Ok(answer.messages.unwrap_or_default())
}

/// `DeleteMessageBatch` of `receipt_handles`, ten at a time. Returns how many were not
/// deleted, and why, for the log.
pub async fn delete(queue: &Queue, receipt_handles: &[&str]) -> Result<Vec<String>, SqsError> {
    let (client, _) = for_queue(queue)?;
    let mut refused = Vec::new();
    for chunk in receipt_handles.chunks(MAX_MESSAGES_PER_CALL) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, handle)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(*handle)
                    .build()
                    .map_err(|e| SqsError::Call {
                        queue: queue.url.clone(),
                        operation: "DeleteMessageBatch",
                        reason: e.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let answer = client
            .delete_message_batch()
            .queue_url(&queue.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| error(queue, "DeleteMessageBatch", e))?;
        for failed in answer.failed() {
            refused.push(format!(
                "{}: {}",
                failed.code(),
                failed.message().unwrap_or_default()
            ));
        }
    }
    Ok(refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profiles_region_is_read_from_its_section() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join(".aws")).unwrap();
        std::fs::write(
            home.path().join(".aws/config"),
            "[default]\nregion = eu-west-1\n[profile dev]\noutput = json\nregion=ap-south-1\n",
        )
        .unwrap();
        let sources = Sources {
            env: Vec::new(),
            home: Some(home.path().to_owned()),
        };
        assert_eq!(profile_region(None, &sources).as_deref(), Some("eu-west-1"));
        assert_eq!(
            profile_region(Some("dev"), &sources).as_deref(),
            Some("ap-south-1")
        );
        assert_eq!(profile_region(Some("other"), &sources), None);
    }
}
