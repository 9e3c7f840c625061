//! Where a queue is: its URL as SQS gives it (`http://127.0.0.1:5000/000000000000/jobs`,
//! `https://sqs.us-east-1.amazonaws.com/123456789012/jobs`) or its ARN
//! (`arn:aws:sqs:us-east-1:123456789012:jobs`), and what a client needs from it: the endpoint
//! (scheme, host and port), the region an AWS host names, the queue's name. Pure: the
//! endpoint override an ARN is resolved against (`AWS_ENDPOINT_URL_SQS`) is passed in.

/// A queue, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    /// The queue's URL, the name every SQS call takes.
    pub url: String,
    /// `scheme://host[:port]`: where the calls go.
    pub endpoint: String,
    /// The region the URL's AWS host or the ARN names; `None` for another endpoint.
    pub region: Option<String>,
    /// The queue's name.
    pub name: String,
}

impl Queue {
    /// Whether the endpoint is AWS's own, where requests must be signed with real keys.
    pub fn is_aws(&self) -> bool {
        self.region.is_some() && aws_region(host_of(&self.endpoint)).is_some()
    }
}

/// The queue `text` names: a queue URL, or an SQS ARN (its URL at `endpoint` when one is
/// given, else at AWS's regional endpoint). `None` when it names no queue.
pub fn parse(text: &str, endpoint: Option<&str>) -> Option<Queue> {
    let text = text.trim();
    if text.starts_with("arn:") {
        return from_arn(text, endpoint);
    }
    from_url(text)
}

/// The endpoint `AWS_ENDPOINT_URL_SQS` or else `AWS_ENDPOINT_URL` sets, as the AWS SDKs read
/// them (an empty value counts as unset).
pub fn endpoint_from_env() -> Option<String> {
    ["AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL"]
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .map(|v| v.trim().trim_end_matches('/').to_owned())
        .find(|v| !v.is_empty())
}

fn from_url(text: &str) -> Option<Queue> {
    let uri: http::Uri = text.parse().ok()?;
    let scheme = uri
        .scheme_str()
        .filter(|s| matches!(*s, "http" | "https"))?;
    let authority = uri.authority()?;
    if authority.as_str().contains('@') || uri.query().is_some() {
        return None;
    }
    let path = uri.path().strip_suffix('/').unwrap_or(uri.path());
    let mut segments = path.strip_prefix('/')?.split('/');
    let (Some(account), Some(name), None) = (segments.next(), segments.next(), segments.next())
    else {
        return None;
    };
    // The account (an id; ElasticMQ also answers under `/queue/NAME`) and a queue name.
    if account.is_empty() || !account.chars().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    if !is_queue_name(name) {
        return None;
    }
    let endpoint = format!("{scheme}://{authority}");
    Some(Queue {
        url: format!("{endpoint}/{account}/{name}"),
        region: aws_region(authority.host()),
        endpoint,
        name: name.to_owned(),
    })
}

fn from_arn(text: &str, endpoint: Option<&str>) -> Option<Queue> {
    let parts: Vec<&str> = text.split(':').collect();
    let [_, partition, "sqs", region, account, name] = parts.as_slice() else {
        return None;
    };
    let region_ok = !region.is_empty()
        && region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    let account_ok = !account.is_empty() && account.chars().all(|c| c.is_ascii_digit());
    if !region_ok || !account_ok || !is_queue_name(name) {
        return None;
    }
    let endpoint = match endpoint {
        Some(e) => e.trim_end_matches('/').to_owned(),
        None => {
            let suffix = match *partition {
                "aws-cn" => "amazonaws.com.cn",
                _ => "amazonaws.com",
            };
            format!("https://sqs.{region}.{suffix}")
        }
    };
    Some(Queue {
        url: format!("{endpoint}/{account}/{name}"),
        endpoint,
        region: Some((*region).to_owned()),
        name: (*name).to_owned(),
    })
}

/// SQS's rule: 1–80 letters, digits, `-` and `_`, a FIFO queue's name ending in `.fifo`.
fn is_queue_name(name: &str) -> bool {
    let base = name.strip_suffix(".fifo").unwrap_or(name);
    (1..=80).contains(&name.len())
        && !base.is_empty()
        && base
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn host_of(endpoint: &str) -> &str {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let host = rest.split('/').next().unwrap_or(rest);
    host.rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map_or(host, |(h, _)| h)
}

/// The region of an AWS SQS host: `sqs.REGION.amazonaws.com` (or `sqs-fips.`, `.com.cn`),
/// the legacy `REGION.queue.amazonaws.com`, and `queue.amazonaws.com` (us-east-1).
fn aws_region(host: &str) -> Option<String> {
    let host = host.to_ascii_lowercase();
    let rest = host
        .strip_suffix(".amazonaws.com")
        .or_else(|| host.strip_suffix(".amazonaws.com.cn"))?;
    if rest == "queue" {
        return Some("us-east-1".to_owned());
    }
    let region = rest
        .strip_prefix("sqs.")
        .or_else(|| rest.strip_prefix("sqs-fips."))
        .or_else(|| rest.strip_suffix(".queue"))?;
    (!region.is_empty() && !region.contains('.')).then(|| region.to_owned())
}

/// The queue URL `text` names (a queue URL, or an SQS ARN), or `None` if it names no queue.
pub fn queue_url(text: &str) -> Option<String> {
    let endpoint = text.starts_with("arn:").then(endpoint_from_env).flatten();
    parse(text, endpoint.as_deref()).map(|queue| queue.url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_endpoint_and_queue() {
        let q = parse("http://127.0.0.1:5000/000000000000/jobs", None).unwrap();
        assert_eq!(q.url, "http://127.0.0.1:5000/000000000000/jobs");
        assert_eq!(q.endpoint, "http://127.0.0.1:5000");
        assert_eq!((q.region, q.name.as_str()), (None, "jobs"));
        assert!(
            !parse("http://localhost:9324/queue/x.fifo", None)
                .unwrap()
                .is_aws()
        );
        let aws = parse(
            "https://sqs.eu-west-1.amazonaws.com/123456789012/jobs/",
            None,
        )
        .unwrap();
        assert_eq!(aws.endpoint, "https://sqs.eu-west-1.amazonaws.com");
        assert_eq!(
            aws.url,
            "https://sqs.eu-west-1.amazonaws.com/123456789012/jobs"
        );
        assert_eq!(aws.region.as_deref(), Some("eu-west-1"));
        assert!(aws.is_aws());
        let legacy = parse("https://queue.amazonaws.com/1/q", None).unwrap();
        assert_eq!(legacy.region.as_deref(), Some("us-east-1"));
        let legacy = parse("https://us-west-2.queue.amazonaws.com/1/q", None).unwrap();
        assert_eq!(legacy.region.as_deref(), Some("us-west-2"));
        for not_a_queue in [
            "http://host/jobs",
            "http://host/1/jobs/more",
            "http://host/1/bad name",
            "http://host/1/jobs?x=1",
            "ftp://host/1/jobs",
            "file:failed.jsonl",
            "https://user@host/1/jobs",
            "http://host/1/",
            "jobs",
        ] {
            assert_eq!(parse(not_a_queue, None), None, "{not_a_queue}");
        }
    }

    #[test]
    fn arns_become_urls_at_aws_or_at_the_configured_endpoint() {
        let arn = "arn:aws:sqs:us-east-2:123456789012:jobs";
        let q = parse(arn, None).unwrap();
        assert_eq!(
            q.url,
            "https://sqs.us-east-2.amazonaws.com/123456789012/jobs"
        );
        assert_eq!(q.region.as_deref(), Some("us-east-2"));
        assert!(q.is_aws());
        let local = parse(arn, Some("http://127.0.0.1:4566/")).unwrap();
        assert_eq!(local.url, "http://127.0.0.1:4566/123456789012/jobs");
        assert_eq!(local.endpoint, "http://127.0.0.1:4566");
        assert!(!local.is_aws());
        let cn = parse("arn:aws-cn:sqs:cn-north-1:1:q.fifo", None).unwrap();
        assert_eq!(cn.url, "https://sqs.cn-north-1.amazonaws.com.cn/1/q.fifo");
        for not_a_queue in [
            "arn:aws:lambda:us-east-1:1:function:f",
            "arn:aws:sqs:us-east-1:1",
            "arn:aws:sqs::1:q",
            "arn:aws:sqs:us-east-1:abc:q",
            "arn:aws:sqs:us-east-1:1:q:extra",
        ] {
            assert_eq!(parse(not_a_queue, None), None, "{not_a_queue}");
        }
    }
}
