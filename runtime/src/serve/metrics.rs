//! lamina's own metrics, in Prometheus' text format at `GET /lamina/metrics` (the path is
//! lamina's, under a prefix no Lambda API uses). Names follow Lambda's CloudWatch metrics where
//! one exists (`AsyncEventsReceived`, `DestinationDeliveryFailures`, …), as
//! `lamina_<snake_case>_total`, labelled by function.
//!
//! The registry is process-wide: counters are atomics that any task bumps without a lock, and
//! one `lamina serve` runs per process.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Where the metrics are served.
pub const PATH: &str = "/lamina/metrics";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FunctionLabel {
    function_name: String,
}

struct Metrics {
    registry: Registry,
    async_events_received: Family<FunctionLabel, Counter>,
    async_events_dropped: Family<FunctionLabel, Counter>,
    destination_delivery_failures: Family<FunctionLabel, Counter>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("lamina");
    let async_events_received = Family::<FunctionLabel, Counter>::default();
    registry.register(
        "async_events_received",
        "Event invocations accepted (stored durably, answered 202)",
        async_events_received.clone(),
    );
    let async_events_dropped = Family::<FunctionLabel, Counter>::default();
    registry.register(
        "async_events_dropped",
        "Event invocations that never succeeded (retries exhausted or too old), sent to the \
         failure destination or the dead-letter file",
        async_events_dropped.clone(),
    );
    let destination_delivery_failures = Family::<FunctionLabel, Counter>::default();
    registry.register(
        "destination_delivery_failures",
        "Destination records that could not be delivered after every retry (logged whole)",
        destination_delivery_failures.clone(),
    );
    Metrics {
        registry,
        async_events_received,
        async_events_dropped,
        destination_delivery_failures,
    }
});

fn label(function: &str) -> FunctionLabel {
    FunctionLabel {
        function_name: function.to_owned(),
    }
}

/// An `Event` invocation of `function` was accepted.
pub fn async_event_received(function: &str) {
    METRICS
        .async_events_received
        .get_or_create(&label(function))
        .inc();
}

/// An `Event` invocation of `function` will not succeed.
pub fn async_event_dropped(function: &str) {
    METRICS
        .async_events_dropped
        .get_or_create(&label(function))
        .inc();
}

/// A record of `function`'s could not be delivered to its destination.
pub fn destination_delivery_failed(function: &str) {
    METRICS
        .destination_delivery_failures
        .get_or_create(&label(function))
        .inc();
}

/// Every metric, in the OpenMetrics text format.
pub fn render() -> String {
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &METRICS.registry);
    text
}
