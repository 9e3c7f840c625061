//! Amazon SQS in a template: a function's `SQS` events (event source mappings), `SQS`
//! destinations in `EventInvokeConfig`, and the `AWS::SQS::Queue` resources they name. lamina
//! creates no queue: a template's queue stands for the queue of its name at the SQS endpoint
//! the environment sets (`AWS_ENDPOINT_URL_SQS`, as the AWS SDKs read it); with none set, an
//! event or destination naming one is noted and not used, while a literal queue ARN or URL
//! always works.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::intrinsics::{ExprError, Resource};
use super::{ACCOUNT_ID, Destination, EventSourceEntry, Reader};
use crate::config::file::event_source::{DEFAULT_BATCH_SIZE, check_limits};
use crate::config::sqs_address as address;

/// Event properties lamina uses; the rest are noted.
const USED: &[&str] = &[
    "Queue",
    "BatchSize",
    "MaximumBatchingWindowInSeconds",
    "FunctionResponseTypes",
    "ScalingConfig",
    "Enabled",
];

impl Reader {
    /// An `AWS::SQS::Queue` as `Ref` (its URL) and `Fn::GetAtt` (`Arn`, `QueueName`,
    /// `QueueUrl`) see it, when there is an endpoint to find it at.
    pub(super) fn sqs_queue(
        &self,
        id: &str,
        properties: Option<&Value>,
        region: &str,
    ) -> Option<Resource> {
        let endpoint = self.sqs_endpoint.as_deref()?;
        let property = |key: &str| properties.and_then(|p| p.get(key));
        let fifo = property("FifoQueue").is_some_and(|v| match self.scope.resolve(v) {
            Ok(Some(Value::Bool(b))) => b,
            Ok(Some(Value::String(s))) => s == "true",
            _ => false,
        });
        let name = match property("QueueName").map(|v| self.scope.string(v)) {
            Some(Ok(name)) => name,
            _ if fifo => format!("{id}.fifo"),
            _ => id.to_owned(),
        };
        let url = format!("{endpoint}/{ACCOUNT_ID}/{name}");
        let arn = format!("arn:aws:sqs:{region}:{ACCOUNT_ID}:{name}");
        Some(Resource {
            kind: "AWS::SQS::Queue".to_owned(),
            reference: Some(url.clone()),
            attributes: BTreeMap::from([
                ("Arn".to_owned(), arn),
                ("QueueName".to_owned(), name),
                ("QueueUrl".to_owned(), url),
            ]),
        })
    }

    /// The note every template queue gets: what it stands for, or how to use it.
    pub(super) fn note_sqs_queue(&mut self, id: &str) {
        let at = format!("Resources.{id}");
        let url = self
            .scope
            .resources
            .get(id)
            .and_then(|r| r.reference.clone());
        match url {
            Some(url) => self.note(
                &at,
                format!(
                    "AWS::SQS::Queue: not created by lamina; it stands for {url}, which must exist"
                ),
            ),
            None => self.note(
                &at,
                "AWS::SQS::Queue: not created by lamina; set AWS_ENDPOINT_URL_SQS to an SQS \
                 endpoint where it exists to use it",
            ),
        }
    }

    /// A queue whose address cannot be known here (a template queue with no endpoint set).
    pub(super) fn note_unknown_queue(&mut self, at: &str, why: &str, what: &str) {
        self.note(
            at,
            format!(
                "SQS: {why}; {what} (set AWS_ENDPOINT_URL_SQS to an SQS endpoint where the \
                 queue exists, or name the queue by its ARN)"
            ),
        );
    }

    /// An `SQS` destination: the queue's ARN (or URL).
    pub(super) fn sqs_destination(&mut self, at: &str, text: &str) -> Option<Destination> {
        match address::parse(text, self.sqs_endpoint.as_deref()) {
            Some(queue) => Some(Destination::Sqs(queue.url)),
            None => {
                self.problem(at, format!("{text:?} is not an SQS queue's ARN or URL"));
                None
            }
        }
    }

    /// A function's `SQS` event: an event source mapping.
    pub(super) fn sqs_event(
        &mut self,
        at: &str,
        function: &str,
        event: &Value,
    ) -> Option<EventSourceEntry> {
        let Some(written) = event.get("Properties").and_then(Value::as_object) else {
            self.problem(
                &format!("{at}.Properties.Queue"),
                "missing: the queue's ARN",
            );
            return None;
        };
        let Some(queue) = written.get("Queue") else {
            self.problem(
                &format!("{at}.Properties.Queue"),
                "missing: the queue's ARN",
            );
            return None;
        };
        // The queue alone may be unknowable here (a template queue and no endpoint): a note,
        // not an error, as for every AWS-only value.
        let queue = match self.scope.string(queue) {
            Ok(text) => text,
            Err(ExprError::Unknowable(why)) => {
                self.note_unknown_queue(at, &why, "not polled");
                return None;
            }
            Err(e) => {
                self.problem(&format!("{at}.Properties.Queue"), e);
                return None;
            }
        };
        let Some(queue) = address::parse(&queue, self.sqs_endpoint.as_deref()) else {
            self.problem(
                &format!("{at}.Properties.Queue"),
                format!("{queue:?} is not an SQS queue's ARN or URL"),
            );
            return None;
        };
        let mut rest = written.clone();
        rest.remove("Queue");
        let properties = match self.scope.resolve(&Value::Object(rest)) {
            Ok(p) => p.unwrap_or(Value::Null),
            Err(e) => {
                self.problem(&format!("{at}.Properties"), e);
                return None;
            }
        };
        let before = self.problems.len();
        let mut number = |key: &str, path: &[&str]| {
            let mut value = Some(&properties);
            for step in path {
                value = value.and_then(|v| v.get(step));
            }
            let n = match value? {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.parse().ok(),
                _ => None,
            };
            match n.and_then(|n| u32::try_from(n).ok()) {
                Some(n) => Some(n),
                None => {
                    self.problem(
                        &format!("{at}.Properties.{key}"),
                        format!("{}: expected a whole number", value?),
                    );
                    None
                }
            }
        };
        let batch_size = number("BatchSize", &["BatchSize"]);
        let window = number(
            "MaximumBatchingWindowInSeconds",
            &["MaximumBatchingWindowInSeconds"],
        );
        let maximum_concurrency = number(
            "ScalingConfig.MaximumConcurrency",
            &["ScalingConfig", "MaximumConcurrency"],
        );
        let report_batch_item_failures = match properties.get("FunctionResponseTypes") {
            None | Some(Value::Null) => false,
            Some(Value::Array(types)) => types.iter().any(|t| t == "ReportBatchItemFailures"),
            Some(other) => {
                self.problem(
                    &format!("{at}.Properties.FunctionResponseTypes"),
                    format!("{other}: expected a list such as [ReportBatchItemFailures]"),
                );
                false
            }
        };
        let enabled = !matches!(properties.get("Enabled"), Some(Value::Bool(false)))
            && properties.get("Enabled").and_then(Value::as_str) != Some("false");
        let batch_size = batch_size.unwrap_or(DEFAULT_BATCH_SIZE);
        let window = window.unwrap_or(0);
        for (key, problem) in check_limits(&queue.url, batch_size, window, maximum_concurrency) {
            let property = match key {
                "batch_size" => "BatchSize",
                "maximum_batching_window" => "MaximumBatchingWindowInSeconds",
                _ => "ScalingConfig.MaximumConcurrency",
            };
            self.problem(&format!("{at}.Properties.{property}"), problem);
        }
        if self.problems.len() > before {
            return None;
        }
        for key in properties.as_object().into_iter().flat_map(|m| m.keys()) {
            if !USED.contains(&key.as_str()) {
                self.note(&format!("{at}.Properties.{key}"), "not used by lamina");
            }
        }
        if !enabled {
            self.note(at, "SQS: disabled, so not polled");
        }
        Some(EventSourceEntry {
            queue: queue.url,
            function: function.to_owned(),
            batch_size,
            maximum_batching_window: Duration::from_secs(u64::from(window)),
            report_batch_item_failures,
            maximum_concurrency,
            enabled,
            at: format!("{}: {at}", self.file),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Options, parse_with_sqs_endpoint};

    const TEMPLATE: &str = r#"
Transform: AWS::Serverless-2016-10-31
Resources:
  Jobs:
    Type: AWS::SQS::Queue
    Properties:
      QueueName: jobs
  Failed:
    Type: AWS::SQS::Queue
  Worker:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: .
      Handler: app.handler
      Runtime: python3.12
      EventInvokeConfig:
        DestinationConfig:
          OnFailure:
            Type: SQS
            Destination: !GetAtt Failed.Arn
          OnSuccess:
            Type: SQS
            Destination: arn:aws:sqs:us-east-1:123456789012:done
      Events:
        FromJobs:
          Type: SQS
          Properties:
            Queue: !GetAtt Jobs.Arn
            BatchSize: 100
            MaximumBatchingWindowInSeconds: 2
            FunctionResponseTypes: [ReportBatchItemFailures]
            ScalingConfig:
              MaximumConcurrency: 3
            FilterCriteria:
              Filters: []
        FromElsewhere:
          Type: SQS
          Properties:
            Queue: arn:aws:sqs:eu-west-1:123456789012:elsewhere
            Enabled: false
"#;

    fn read(endpoint: Option<&str>) -> super::super::Loaded {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("template.yaml");
        parse_with_sqs_endpoint(
            &path,
            TEMPLATE,
            &Options::default(),
            endpoint.map(str::to_owned),
        )
        .unwrap()
    }

    #[test]
    fn sqs_events_and_destinations_resolve_at_the_configured_endpoint() {
        let loaded = read(Some("http://127.0.0.1:5000"));
        let sources = &loaded.manifest.event_sources;
        assert_eq!(sources.len(), 2, "{sources:?}");
        let named = |name: &str| sources.iter().find(|s| s.queue.ends_with(name)).unwrap();
        let jobs = named("/jobs");
        assert_eq!(jobs.queue, "http://127.0.0.1:5000/000000000000/jobs");
        assert_eq!(jobs.function, "Worker");
        assert_eq!(jobs.batch_size, 100);
        assert_eq!(jobs.maximum_batching_window.as_secs(), 2);
        assert!(jobs.report_batch_item_failures && jobs.enabled);
        assert_eq!(jobs.maximum_concurrency, Some(3));
        // A literal ARN is resolved at the same endpoint; Enabled: false is kept, not run.
        let elsewhere = named("/elsewhere");
        assert_eq!(
            elsewhere.queue,
            "http://127.0.0.1:5000/123456789012/elsewhere"
        );
        assert!(!elsewhere.enabled);
        let asynchronous = &loaded.manifest.functions["Worker"].asynchronous;
        assert_eq!(
            asynchronous.on_failure.as_ref().map(ToString::to_string),
            Some("http://127.0.0.1:5000/000000000000/Failed".to_owned())
        );
        assert_eq!(
            asynchronous.on_success.as_ref().map(ToString::to_string),
            Some("http://127.0.0.1:5000/123456789012/done".to_owned())
        );
        let notes = loaded.notes.join("\n");
        assert!(
            notes.contains("FromJobs.Properties.FilterCriteria: not used"),
            "{notes}"
        );
        assert!(notes.contains("Resources.Jobs: AWS::SQS::Queue: not created by lamina; it stands for http://127.0.0.1:5000/000000000000/jobs"), "{notes}");
    }

    #[test]
    fn without_an_endpoint_template_queues_are_noted_and_arns_go_to_aws() {
        let loaded = read(None);
        let sources = &loaded.manifest.event_sources;
        assert_eq!(sources.len(), 1, "{sources:?}");
        assert_eq!(
            sources[0].queue,
            "https://sqs.eu-west-1.amazonaws.com/123456789012/elsewhere"
        );
        let asynchronous = &loaded.manifest.functions["Worker"].asynchronous;
        assert_eq!(asynchronous.on_failure, None);
        assert_eq!(
            asynchronous.on_success.as_ref().map(ToString::to_string),
            Some("https://sqs.us-east-1.amazonaws.com/123456789012/done".to_owned())
        );
        let notes = loaded.notes.join("\n");
        for expected in [
            "Events.FromJobs: SQS: Fn::GetAtt Jobs.Arn: Jobs is an AWS::SQS::Queue, which lamina does not create; not polled (set AWS_ENDPOINT_URL_SQS",
            "DestinationConfig.OnFailure: SQS: Fn::GetAtt Failed.Arn",
            "Resources.Failed: AWS::SQS::Queue: not created by lamina; set AWS_ENDPOINT_URL_SQS",
        ] {
            assert!(notes.contains(expected), "{expected:?} not in:\n{notes}");
        }
    }

    #[test]
    fn bad_sqs_events_are_refused_naming_the_property() {
        let dir = tempfile::tempdir().unwrap();
        let text = TEMPLATE
            .replace("BatchSize: 100", "BatchSize: 20000")
            .replace("MaximumConcurrency: 3", "MaximumConcurrency: 1");
        let problems = parse_with_sqs_endpoint(
            &dir.path().join("template.yaml"),
            &text,
            &Options::default(),
            Some("http://127.0.0.1:5000".into()),
        )
        .unwrap_err()
        .to_string();
        assert!(
            problems.contains(
                "Events.FromJobs.Properties.BatchSize: 20000 is outside Lambda's 1–10000"
            ),
            "{problems}"
        );
        assert!(
            problems.contains("ScalingConfig.MaximumConcurrency: 1 is outside"),
            "{problems}"
        );
    }
}
