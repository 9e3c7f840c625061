//! Sample events of Lambda's event sources, as their services send them. (Being written:
//! see `lamina event generate`.)

use serde_json::Value;

/// What a sample event may be given.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The request path (HTTP events).
    pub path: Option<String>,
    /// The HTTP method (HTTP events).
    pub method: Option<String>,
    /// The body or message.
    pub body: Option<String>,
    /// The bucket (S3 events).
    pub bucket: Option<String>,
    /// The object key (S3 events).
    pub key: Option<String>,
}

/// An event name lamina has no sample of.
#[derive(Debug, thiserror::Error)]
#[error("no sample event {0:?}")]
pub struct UnknownEvent(pub String);

/// The sample event `name`.
pub fn generate(name: &str, _options: &Options) -> Result<Value, UnknownEvent> {
    Err(UnknownEvent(name.to_owned()))
}
