//! `[[event_sources]]` in `lamina.toml`: an SQS queue polled for a function, as Lambda's
//! event source mappings (`CreateEventSourceMapping`) are written, checked key by key with
//! Lambda's ranges. A template's `SQS` events become the same [`EventSourceEntry`].

use std::time::Duration;

use super::Checker;

/// One event source mapping: an SQS queue polled for a function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSourceEntry {
    /// The queue's URL (an ARN is turned into one).
    pub queue: String,
    /// The function it invokes (its served name).
    pub function: String,
    /// The most messages in one event: 1–10,000 (10 for a FIFO queue), default 10.
    pub batch_size: u32,
    /// How long to gather a batch once its first message arrived: 0–300 s, default 0.
    pub maximum_batching_window: Duration,
    /// Lambda's `FunctionResponseTypes = ["ReportBatchItemFailures"]`: the function's
    /// `batchItemFailures` stay on the queue, the rest of a batch is deleted.
    pub report_batch_item_failures: bool,
    /// Lambda's `ScalingConfig.MaximumConcurrency` (2–1000): the pollers; default the
    /// function's concurrency.
    pub maximum_concurrency: Option<u32>,
    /// Whether it runs.
    pub enabled: bool,
    /// Where it was written, for messages (`lamina.toml: event_sources[0]`).
    pub at: String,
}

/// Lambda's defaults and limits.
pub const DEFAULT_BATCH_SIZE: u32 = 10;
/// The largest batch of a standard queue.
pub const MAX_BATCH_SIZE: u32 = 10_000;
/// The largest batch of a FIFO queue.
pub const MAX_FIFO_BATCH_SIZE: u32 = 10;
/// The longest batching window, seconds.
pub const MAX_BATCHING_WINDOW_SECS: u32 = 300;
/// `ScalingConfig.MaximumConcurrency`'s range.
pub const MAXIMUM_CONCURRENCY: std::ops::RangeInclusive<u32> = 2..=1000;

const KEYS: &[&str] = &[
    "type",
    "queue",
    "function",
    "batch_size",
    "maximum_batching_window",
    "report_batch_item_failures",
    "maximum_concurrency",
    "enabled",
];

/// Lambda's rules across the values: `(key, problem)` for each broken one.
pub fn check_limits(
    queue: &str,
    batch_size: u32,
    window_secs: u32,
    maximum_concurrency: Option<u32>,
) -> Vec<(&'static str, String)> {
    let mut problems = Vec::new();
    let fifo = queue.ends_with(".fifo");
    let max = if fifo {
        MAX_FIFO_BATCH_SIZE
    } else {
        MAX_BATCH_SIZE
    };
    if !(1..=max).contains(&batch_size) {
        let which = if fifo { "a FIFO queue's" } else { "Lambda's" };
        problems.push((
            "batch_size",
            format!("{batch_size} is outside {which} 1–{max}"),
        ));
    }
    if window_secs > MAX_BATCHING_WINDOW_SECS {
        problems.push((
            "maximum_batching_window",
            format!("{window_secs} s is outside Lambda's 0–{MAX_BATCHING_WINDOW_SECS} s"),
        ));
    } else if batch_size > 10 && window_secs == 0 {
        problems.push((
            "maximum_batching_window",
            format!("a batch_size of {batch_size} (over 10) needs a window of at least 1 s, as on Lambda"),
        ));
    }
    if let Some(n) = maximum_concurrency
        && !MAXIMUM_CONCURRENCY.contains(&n)
    {
        problems.push((
            "maximum_concurrency",
            format!("{n} is outside Lambda's 2–1000"),
        ));
    }
    problems
}

impl Checker {
    pub(super) fn event_source(
        &mut self,
        index: usize,
        value: &toml::Value,
        declared: &[String],
    ) -> Option<EventSourceEntry> {
        let at = format!("event_sources[{index}]");
        let t = self.table(&at, value, KEYS)?;
        let before = self.problems.len();
        let key = |k: &str| format!("{at}.{k}");
        let mut required = |k: &str, what: &str| match t.get(k) {
            Some(v) => self.string(&key(k), v),
            None => {
                self.problem(&key(k), format!("missing: {what}"));
                None
            }
        };
        let kind = required("type", "\"sqs\"");
        let queue = required("queue", "the queue's URL or ARN");
        let function = required("function", "the function it invokes");
        if let Some(kind) = kind
            && kind != "sqs"
        {
            self.problem(
                &key("type"),
                format!("{kind:?}: lamina runs \"sqs\" event sources"),
            );
        }
        let queue = queue.and_then(|text| match crate::config::sqs_address::queue_url(&text) {
            Some(url) => Some(url),
            None => {
                self.problem(
                    &key("queue"),
                    format!(
                        "{text:?} is not an SQS queue URL (http(s)://HOST/ACCOUNT/NAME) or ARN"
                    ),
                );
                None
            }
        });
        if let Some(f) = &function
            && !declared.contains(f)
        {
            self.problem(
                &key("function"),
                format!("no function {f:?} in [functions]"),
            );
        }
        let mut number = |k: &str| t.get(k).and_then(|v| self.number(&key(k), v));
        let batch_size = number("batch_size");
        let window = number("maximum_batching_window");
        let maximum_concurrency = number("maximum_concurrency");
        let mut flag = |k: &str, default: bool| match t.get(k) {
            Some(toml::Value::Boolean(b)) => *b,
            Some(other) => {
                self.wrong(&key(k), "true or false", other);
                default
            }
            None => default,
        };
        let report_batch_item_failures = flag("report_batch_item_failures", false);
        let enabled = flag("enabled", true);
        let batch_size = batch_size.unwrap_or(DEFAULT_BATCH_SIZE);
        let window = window.unwrap_or(0);
        let checked = queue.as_deref().unwrap_or_default();
        for (k, problem) in check_limits(checked, batch_size, window, maximum_concurrency) {
            self.problem(&key(k), problem);
        }
        if self.problems.len() > before {
            return None;
        }
        Some(EventSourceEntry {
            queue: queue?,
            function: function?,
            batch_size,
            maximum_batching_window: Duration::from_secs(u64::from(window)),
            report_batch_item_failures,
            maximum_concurrency,
            enabled,
            at: format!("{}: {at}", self.file),
        })
    }
}
