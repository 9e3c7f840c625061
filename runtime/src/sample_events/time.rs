//! The three ways the sample events' services write a UTC time, from milliseconds since the
//! Unix epoch. lamina has no date library of its own (`aws_lambda_events` brings chrono, but
//! only for its types), and a calendar date is a few lines of arithmetic.

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `2024-03-12T19:03:58.123Z`, as S3 and SNS write times.
pub(super) fn rfc3339_millis(epoch_ms: u64) -> String {
    let t = Civil::at(epoch_ms);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second, t.millis
    )
}

/// `2024-03-12T19:03:58Z`, as EventBridge writes times.
pub(super) fn rfc3339_seconds(epoch_ms: u64) -> String {
    let t = Civil::at(epoch_ms);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// `12/Mar/2024:19:03:58 +0000`, API Gateway's request time (the common log format).
pub(super) fn clf(epoch_ms: u64) -> String {
    let t = Civil::at(epoch_ms);
    format!(
        "{:02}/{}/{:04}:{:02}:{:02}:{:02} +0000",
        t.day,
        MONTHS[(t.month as usize + 11) % 12],
        t.year,
        t.hour,
        t.minute,
        t.second
    )
}

/// A UTC calendar time.
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u64,
    minute: u64,
    second: u64,
    millis: u64,
}

impl Civil {
    /// The date by Howard Hinnant's `civil_from_days`, over days since 1970-01-01.
    fn at(epoch_ms: u64) -> Civil {
        let secs = epoch_ms / 1000;
        let days = i64::try_from(secs / 86_400).unwrap_or(0);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let of_day = secs % 86_400;
        Civil {
            year: yoe + era * 400 + i64::from(month <= 2),
            month: u32::try_from(month).unwrap_or(1),
            day: u32::try_from(day).unwrap_or(1),
            hour: of_day / 3600,
            minute: of_day / 60 % 60,
            second: of_day % 60,
            millis: epoch_ms % 1000,
        }
    }
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
