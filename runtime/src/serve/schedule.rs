//! Schedules: a function invoked asynchronously at EventBridge's `rate(…)` and `cron(…)`
//! expressions (a SAM template's `Schedule` and `ScheduleV2` events, `schedule` in
//! `lamina.toml`), with EventBridge's "Scheduled Event" (or the schedule's own `Input`) as the
//! event. Each firing goes through the asynchronous queue, so retries and dead letters are
//! the Invoke API's.
//!
//! EventBridge's cron dialect is its own: six fields (minutes, hours, day of month, month,
//! day of week 1–7 from Sunday, year), one of the two day fields `?`, times in UTC, `L` for a
//! month's last day. The general cron crates count days of week from 0 and have no year or
//! `?`; translating between the two would be subtler than the evaluator below, which is
//! small and unit-tested field by field. `W`, `#` and `L` in the day of week are refused
//! with their name.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::App;
use super::event_queue::AsyncEvent;
use crate::config::ACCOUNT_ID;
use crate::invoke::InvokeRequest;

/// A parsed schedule expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expression {
    /// `rate(N unit)`: every `period`, from when the schedule starts.
    Rate(Duration),
    /// `cron(…)`.
    Cron(Box<Cron>),
}

/// The six fields of an EventBridge cron expression, as the values each allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: BTreeSet<u32>,
    hours: BTreeSet<u32>,
    /// Days of the month, or `None` for `?` (the day of week decides).
    days: Option<BTreeSet<u32>>,
    /// The month's last day (`L`).
    last_day: bool,
    months: BTreeSet<u32>,
    /// 1 (Sunday) to 7, or `None` for `?`.
    weekdays: Option<BTreeSet<u32>>,
    /// `None` for every year.
    years: Option<BTreeSet<u32>>,
}

impl std::str::FromStr for Expression {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(inner) = text.strip_prefix("rate(").and_then(|t| t.strip_suffix(')')) {
            return rate(inner).map(Expression::Rate);
        }
        if let Some(inner) = text.strip_prefix("cron(").and_then(|t| t.strip_suffix(')')) {
            return Cron::parse(inner).map(|c| Expression::Cron(Box::new(c)));
        }
        Err(format!(
            "{text:?}: expected rate(VALUE UNIT) or cron(MINUTES HOURS DAY MONTH WEEKDAY YEAR)"
        ))
    }
}

/// `N minute(s)|hour(s)|day(s)`, singular exactly when N is 1, as EventBridge insists.
fn rate(text: &str) -> Result<Duration, String> {
    let bad = |why: &str| format!("rate({text}): {why}");
    let (value, unit) = text
        .trim()
        .split_once(' ')
        .ok_or_else(|| bad("expected a value and a unit"))?;
    let value: u64 = value
        .parse()
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| bad("the value is a whole number of at least 1"))?;
    let (seconds, singular) = match unit.trim() {
        "minute" => (60, true),
        "minutes" => (60, false),
        "hour" => (3600, true),
        "hours" => (3600, false),
        "day" => (86_400, true),
        "days" => (86_400, false),
        other => {
            return Err(bad(&format!(
                "{other:?} is not minute(s), hour(s) or day(s)"
            )));
        }
    };
    if singular != (value == 1) {
        return Err(bad(
            "the unit is singular for 1 and plural otherwise (rate(1 minute), rate(5 minutes))",
        ));
    }
    Ok(Duration::from_secs(value * seconds))
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// One field: `*`, numbers, names, ranges `a-b`, steps `x/n`, lists `a,b`.
fn field(
    text: &str,
    name: &str,
    range: std::ops::RangeInclusive<u32>,
    names: &[&str],
) -> Result<BTreeSet<u32>, String> {
    let value = |v: &str| -> Result<u32, String> {
        let upper = v.to_ascii_uppercase();
        let n = match names.iter().position(|n| *n == upper) {
            Some(i) => u32::try_from(i).unwrap_or(0) + *range.start(),
            None => v
                .parse()
                .map_err(|_| format!("{name} {v:?} is not a number"))?,
        };
        match range.contains(&n) {
            true => Ok(n),
            false => Err(format!(
                "{name} {n} is outside {}–{}",
                range.start(),
                range.end()
            )),
        }
    };
    let mut out = BTreeSet::new();
    for part in text.split(',') {
        let (span, step) = match part.split_once('/') {
            Some((span, step)) => (
                span,
                step.parse::<u32>()
                    .ok()
                    .filter(|s| *s >= 1)
                    .ok_or_else(|| format!("{name} step {step:?} is not a number of at least 1"))?,
            ),
            None => (part, 1),
        };
        let (from, to) = match span {
            "*" => (*range.start(), *range.end()),
            span => match span.split_once('-') {
                Some((a, b)) => (value(a)?, value(b)?),
                // `5/15`: from 5 to the end, every 15.
                None if step > 1 => (value(span)?, *range.end()),
                None => {
                    let v = value(span)?;
                    (v, v)
                }
            },
        };
        if from > to {
            return Err(format!("{name} range {span} runs backwards"));
        }
        out.extend((from..=to).step_by(step as usize));
    }
    Ok(out)
}

impl Cron {
    fn parse(text: &str) -> Result<Cron, String> {
        let bad = |why: String| format!("cron({text}): {why}");
        let fields: Vec<&str> = text.split_whitespace().collect();
        let [minutes, hours, days, months, weekdays, years] = fields[..] else {
            return Err(bad(format!(
                "{} fields; EventBridge's cron has six (minutes hours day-of-month month day-of-week year)",
                fields.len()
            )));
        };
        for (name, f) in [("day of week", weekdays), ("day of month", days)] {
            if f.contains('#') || f.contains('W') || (name == "day of week" && f.contains('L')) {
                return Err(bad(format!(
                    "{name} {f:?}: W, # and L in the day of week are not supported by lamina"
                )));
            }
        }
        if (days == "?") == (weekdays == "?") {
            return Err(bad(
                "exactly one of day-of-month and day-of-week is ? (EventBridge's rule)".into(),
            ));
        }
        let (day_set, last_day) = match days {
            "?" => (None, false),
            "L" => (Some(BTreeSet::new()), true),
            d => (
                Some(field(d, "day of month", 1..=31, &[]).map_err(bad)?),
                false,
            ),
        };
        Ok(Cron {
            minutes: field(minutes, "minute", 0..=59, &[]).map_err(bad)?,
            hours: field(hours, "hour", 0..=23, &[]).map_err(bad)?,
            days: day_set,
            last_day,
            months: field(months, "month", 1..=12, &MONTHS).map_err(bad)?,
            weekdays: match weekdays {
                "?" => None,
                w => Some(field(w, "day of week", 1..=7, &WEEKDAYS).map_err(bad)?),
            },
            years: match years {
                "*" => None,
                y => Some(field(y, "year", 1970..=2199, &[]).map_err(bad)?),
            },
        })
    }

    /// Whether the minute starting at `t` (UTC) matches.
    fn matches(&self, t: &Civil) -> bool {
        let day_ok = match (&self.days, &self.weekdays) {
            (Some(_), _) if self.last_day => t.day == days_in_month(t.year, t.month),
            (Some(days), _) => days.contains(&t.day),
            (None, Some(weekdays)) => weekdays.contains(&t.weekday),
            (None, None) => true,
        };
        self.minutes.contains(&t.minute)
            && self.hours.contains(&t.hour)
            && self.months.contains(&t.month)
            && day_ok
            && self.years.as_ref().is_none_or(|y| y.contains(&t.year))
    }
}

impl Expression {
    /// The first firing strictly after `after`, for a schedule that started at `started`;
    /// `None` when there is none (a cron of years gone by).
    pub fn next_after(&self, started: SystemTime, after: SystemTime) -> Option<SystemTime> {
        match self {
            Expression::Rate(period) => {
                let since = after.duration_since(started).unwrap_or_default();
                let periods = since.as_secs() / period.as_secs().max(1) + 1;
                Some(started + *period * u32::try_from(periods).ok()?)
            }
            Expression::Cron(cron) => {
                let secs = after.duration_since(UNIX_EPOCH).ok()?.as_secs();
                let mut minute = secs / 60 + 1;
                // Minute by minute would be slow for a yearly schedule: skip a whole day when
                // its date cannot match.
                let limit = minute + 60 * 24 * 366 * 5;
                while minute < limit {
                    let t = Civil::of(minute * 60);
                    if cron.matches(&t) {
                        return Some(UNIX_EPOCH + Duration::from_secs(minute * 60));
                    }
                    let date_ok = cron.matches(&Civil {
                        minute: *cron.minutes.first()?,
                        hour: *cron.hours.first()?,
                        ..t
                    });
                    minute = match date_ok {
                        true => minute + 1,
                        false => (minute / 1440 + 1) * 1440,
                    };
                }
                None
            }
        }
    }
}

/// A UTC civil time, to the minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Civil {
    year: u32,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    /// 1 (Sunday) to 7.
    weekday: u32,
}

impl Civil {
    fn of(unix_secs: u64) -> Civil {
        use chrono::{Datelike, Timelike};
        let t = chrono::DateTime::from_timestamp(i64::try_from(unix_secs).unwrap_or(i64::MAX), 0)
            .unwrap_or_default();
        Civil {
            year: u32::try_from(t.year()).unwrap_or(0),
            month: t.month(),
            day: t.day(),
            hour: t.hour(),
            minute: t.minute(),
            weekday: t.weekday().number_from_sunday(),
        }
    }
}

fn days_in_month(year: u32, month: u32) -> u32 {
    use chrono::Datelike;
    let first = chrono::NaiveDate::from_ymd_opt(i32::try_from(year).unwrap_or(1970), month, 1);
    first
        .and_then(|d| d.checked_add_months(chrono::Months::new(1)))
        .and_then(|d| d.pred_opt())
        .map_or(31, |d| d.day())
}

/// A schedule of one served function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// The function's name.
    pub function: String,
    /// The rule's name, in the event's `resources`.
    pub name: String,
    /// When it fires.
    pub expression: Expression,
    /// The event, when not EventBridge's "Scheduled Event".
    pub input: Option<String>,
    /// The region in the event.
    pub region: String,
}

impl Schedule {
    /// The event of one firing at `at`.
    fn event(&self, at: SystemTime) -> Bytes {
        if let Some(input) = &self.input {
            return Bytes::from(input.clone());
        }
        let event = serde_json::json!({
            "version": "0",
            "id": uuid::Uuid::new_v4().to_string(),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": ACCOUNT_ID,
            "time": humantime::format_rfc3339_seconds(at).to_string(),
            "region": self.region,
            "resources": [format!("arn:aws:events:{}:{ACCOUNT_ID}:rule/{}", self.region, self.name)],
            "detail": {},
        });
        Bytes::from(event.to_string())
    }
}

/// Runs every schedule until the returned tasks are aborted: each firing is an asynchronous
/// invocation of the function being served at that moment (a reload's new version).
pub fn start(app: &Arc<App>, schedules: Vec<Schedule>) -> Vec<tokio::task::JoinHandle<()>> {
    schedules
        .into_iter()
        .map(|schedule| {
            let app = Arc::clone(app);
            tokio::spawn(async move { run(app, schedule).await })
        })
        .collect()
}

async fn run(app: Arc<App>, schedule: Schedule) {
    // Wall-clock time is read through tokio's clock from one starting point, so that a test
    // with paused time sees the schedule fire as time advances.
    let (started_wall, started) = (SystemTime::now(), tokio::time::Instant::now());
    let wall = || started_wall + started.elapsed();
    loop {
        let Some(next) = schedule.expression.next_after(started_wall, wall()) else {
            return;
        };
        let wait = next.duration_since(wall()).unwrap_or_default();
        tokio::time::sleep(wait).await;
        let Some(function) = app.served().functions.get(&schedule.function).cloned() else {
            tracing::warn!(schedule = %schedule.name, "schedule of {}: the function is no longer served", schedule.function);
            return;
        };
        let request = InvokeRequest {
            payload: schedule.event(next),
            ..Default::default()
        };
        let request_id = uuid::Uuid::new_v4().to_string();
        if let Err(e) = app
            .events
            .enqueue(AsyncEvent::new(function, request_id.clone(), request))
            .await
        {
            tracing::warn!(schedule = %schedule.name, "schedule of {}: {e}", schedule.function);
            if matches!(e, super::event_queue::Refused::Stopping) {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> SystemTime {
        humantime::parse_rfc3339(text).unwrap()
    }

    fn next(expr: &str, after: &str) -> String {
        let e: Expression = expr.parse().unwrap();
        humantime::format_rfc3339_seconds(e.next_after(at(after), at(after)).unwrap()).to_string()
    }

    #[test]
    fn rates_fire_every_period_from_the_start() {
        let e: Expression = "rate(5 minutes)".parse().unwrap();
        let start = at("2024-01-31T12:00:00Z");
        assert_eq!(e.next_after(start, start), Some(at("2024-01-31T12:05:00Z")));
        assert_eq!(
            e.next_after(start, at("2024-01-31T12:07:00Z")),
            Some(at("2024-01-31T12:10:00Z"))
        );
        for bad in [
            "rate(1 minutes)",
            "rate(5 minute)",
            "rate(0 minutes)",
            "rate(5 weeks)",
            "rate(5)",
        ] {
            assert!(bad.parse::<Expression>().is_err(), "{bad}");
        }
    }

    #[test]
    fn cron_follows_eventbridges_dialect() {
        // Every day at 12:00 UTC.
        assert_eq!(
            next("cron(0 12 * * ? *)", "2024-01-31T12:00:00Z"),
            "2024-02-01T12:00:00Z"
        );
        // Every 15 minutes.
        assert_eq!(
            next("cron(0/15 * * * ? *)", "2024-01-31T12:01:00Z"),
            "2024-01-31T12:15:00Z"
        );
        // Weekdays at 18:00: 2024-02-02 is a Friday, so the next is Monday the 5th.
        assert_eq!(
            next("cron(0 18 ? * MON-FRI *)", "2024-02-02T18:30:00Z"),
            "2024-02-05T18:00:00Z"
        );
        // Sunday is 1.
        assert_eq!(
            next("cron(0 8 ? * 1 *)", "2024-02-01T00:00:00Z"),
            "2024-02-04T08:00:00Z"
        );
        // The last day of the month, in a leap year.
        assert_eq!(
            next("cron(0 0 L * ? *)", "2024-02-10T00:00:00Z"),
            "2024-02-29T00:00:00Z"
        );
        // The first of a named month in a given year.
        assert_eq!(
            next("cron(30 6 1 JUN ? 2025)", "2024-02-10T00:00:00Z"),
            "2025-06-01T06:30:00Z"
        );
        // Years gone by: never.
        let past: Expression = "cron(0 0 1 1 ? 2001)".parse().unwrap();
        assert_eq!(
            past.next_after(at("2024-01-01T00:00:00Z"), at("2024-01-01T00:00:00Z")),
            None
        );
        for bad in [
            "cron(0 12 * * * *)",
            "cron(0 12 ? * ? *)",
            "cron(0 12 * *)",
            "cron(61 12 * * ? *)",
            "cron(0 12 ? * MON#1 *)",
            "cron(0 12 15W * ? *)",
            "cron(0 12 ? * FOO *)",
        ] {
            assert!(bad.parse::<Expression>().is_err(), "{bad}");
        }
    }

    #[test]
    fn civil_time_is_right_on_known_days() {
        let t = Civil::of(1_706_702_400); // 2024-01-31T12:00:00Z, a Wednesday
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.minute, t.weekday),
            (2024, 1, 31, 12, 0, 4)
        );
        let t = Civil::of(951_782_400); // 2000-02-29T00:00:00Z, a Tuesday
        assert_eq!((t.year, t.month, t.day, t.weekday), (2000, 2, 29, 3));
    }
}
