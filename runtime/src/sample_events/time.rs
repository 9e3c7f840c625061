//! The three ways the sample events' services write a UTC time, from milliseconds since the
//! Unix epoch, by `chrono` (which `aws_lambda_events` already builds for its own types).

use chrono::{DateTime, Utc};

fn at(epoch_ms: u64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(i64::try_from(epoch_ms).unwrap_or(i64::MAX)).unwrap_or_default()
}

/// `2024-03-12T19:03:58.123Z`, as S3 and SNS write times.
pub(super) fn rfc3339_millis(epoch_ms: u64) -> String {
    at(epoch_ms).format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// `2024-03-12T19:03:58Z`, as EventBridge writes times.
pub(super) fn rfc3339_seconds(epoch_ms: u64) -> String {
    at(epoch_ms).format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `12/Mar/2024:19:03:58 +0000`, API Gateway's request time (the common log format).
pub(super) fn clf(epoch_ms: u64) -> String {
    at(epoch_ms).format("%d/%b/%Y:%H:%M:%S +0000").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_as_each_service_writes_them() {
        // The instant of the HTTP API example in aws_lambda_events' fixtures.
        let at = 1_587_481_701_067;
        assert_eq!(clf(at), "21/Apr/2020:15:08:21 +0000");
        assert_eq!(rfc3339_millis(at), "2020-04-21T15:08:21.067Z");
        assert_eq!(rfc3339_seconds(at), "2020-04-21T15:08:21Z");
    }

    #[test]
    fn calendar_edges() {
        assert_eq!(rfc3339_seconds(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_seconds(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(
            rfc3339_millis(1_704_067_199_999),
            "2023-12-31T23:59:59.999Z"
        );
        assert_eq!(clf(1_709_251_200_000), "01/Mar/2024:00:00:00 +0000");
    }
}
