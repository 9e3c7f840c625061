//! The S3 events: the notification of a new object, and an S3 Object Lambda GetObject request.
//! Both take `--bucket` and `--key`; the key is given unencoded and written encoded as S3
//! writes it in each.

use std::collections::HashMap;

use aws_lambda_events::s3::object_lambda::{
    Configuration, GetObjectContext, S3ObjectLambdaEvent, UserIdentity, UserRequest,
};
use aws_lambda_events::s3::{
    S3Bucket, S3Entity, S3Event, S3EventRecord, S3Object, S3RequestParameters, S3UserIdentity,
};
use serde_json::Value;

use super::{
    ACCOUNT, Built, Options, Sample, SampleEventError, UPPER_ALNUM, header_case, invalid,
    random_base64, random_hex, random_of, remove,
};

/// The bucket and key the options name, checked.
fn bucket_and_key(options: &Options) -> Result<(String, String), SampleEventError> {
    let bucket = options.bucket.as_deref().unwrap_or("example-bucket");
    if bucket.is_empty()
        || !bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return Err(invalid(
            "--bucket",
            bucket,
            "a bucket name: lower-case letters, digits, dots and hyphens",
        ));
    }
    let key = options.key.as_deref().unwrap_or("example/hello.txt");
    if key.is_empty() {
        return Err(invalid("--key", key, "a non-empty object key"));
    }
    Ok((bucket.to_owned(), key.to_owned()))
}

/// A key as S3 writes it in event notifications: form URL encoding (a space becomes `+`,
/// `=` becomes `%3D`), with `/` left as it is.
fn notification_key(key: &str) -> String {
    encode(key, b"-_.*/", true)
}

/// A key as a URL path: percent-encoding of all but RFC 3986's unreserved characters and `/`.
fn url_path(key: &str) -> String {
    encode(key, b"-_.~/", false)
}

fn encode(text: &str, kept: &[u8], space_as_plus: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || kept.contains(&b) {
            out.push(char::from(b));
        } else if b == b' ' && space_as_plus {
            out.push('+');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `lamina event generate s3`: `ObjectCreated:Put` of a 1 KiB object in an unversioned bucket,
/// uploaded by an IAM user.
pub(super) fn object_created(sample: &Sample<'_>, options: &Options) -> Built {
    let (bucket_name, key) = bucket_and_key(options)?;

    let mut owner = S3UserIdentity::default();
    owner.principal_id = Some(random_of(UPPER_ALNUM, 14));
    let mut bucket = S3Bucket::default();
    bucket.arn = Some(format!("arn:aws:s3:::{bucket_name}"));
    bucket.name = Some(bucket_name);
    bucket.owner_identity = Some(owner);

    let mut object = S3Object::default();
    object.key = Some(notification_key(&key));
    object.size = Some(1024);
    object.e_tag = Some(random_hex(32));
    object.sequencer = Some(random_hex(18).to_uppercase());

    let mut entity = S3Entity::default();
    entity.schema_version = Some("1.0".into());
    entity.configuration_id = Some("example-notification".into());
    entity.bucket = bucket;
    entity.object = object;

    let mut uploader = S3UserIdentity::default();
    uploader.principal_id = Some(format!("AWS:AIDA{}", random_of(UPPER_ALNUM, 17)));
    let mut parameters = S3RequestParameters::default();
    parameters.source_ip_address = Some("203.0.113.7".into());

    let mut record = S3EventRecord::default();
    record.event_version = Some("2.1".into());
    record.event_source = Some("aws:s3".into());
    record.aws_region = Some(sample.region.to_owned());
    record.event_time = sample.time(sample.rfc3339_millis())?;
    record.event_name = Some("ObjectCreated:Put".into());
    record.principal_id = uploader;
    record.request_parameters = parameters;
    record.response_elements = HashMap::from([
        ("x-amz-request-id".to_owned(), random_hex(16).to_uppercase()),
        ("x-amz-id-2".to_owned(), random_base64(60)),
    ]);
    record.s3 = entity;

    let mut event = S3Event::default();
    event.records = vec![record];
    let mut json = serde_json::to_value(event)?;
    // `urlDecodedKey` is the type's own convenience, which S3 never sends; and S3 sends a
    // `versionId` only for a versioned bucket.
    remove(
        &mut json,
        "/Records/0/s3/object",
        &["urlDecodedKey", "versionId"],
    );
    Ok(json)
}

/// `lamina event generate s3-object-lambda`: a GetObject through an Object Lambda access
/// point, by an IAM user. Events name access points rather than buckets, so both access
/// points are named after the bucket (`BUCKET-olap`, and the supporting `BUCKET-ap`).
pub(super) fn object_lambda(sample: &Sample<'_>, options: &Options) -> Built {
    let (bucket, key) = bucket_and_key(options)?;
    let region = sample.region;
    // Access point names allow no dots.
    let base = bucket.replace('.', "-");
    let (supporting, olap) = (format!("{base}-ap"), format!("{base}-olap"));
    let host = format!("{olap}-{ACCOUNT}.s3-object-lambda.{region}.amazonaws.com");
    let path = url_path(&key);

    // The presigned URL the function fetches the original object from.
    let stamp = sample.rfc3339_seconds().replace(['-', ':'], "");
    let date = stamp.get(..8).unwrap_or_default();
    let input_s3_url = format!(
        "https://{supporting}-{ACCOUNT}.s3-accesspoint.{region}.amazonaws.com/{path}\
         ?X-Amz-Algorithm=AWS4-HMAC-SHA256\
         &X-Amz-Credential=ASIA{}%2F{date}%2F{region}%2Fs3%2Faws4_request\
         &X-Amz-Date={stamp}&X-Amz-Expires=61&X-Amz-SignedHeaders=host\
         &X-Amz-Signature={}",
        random_of(UPPER_ALNUM, 16),
        random_hex(64)
    );
    let mut context = GetObjectContext::default();
    context.input_s3_url = input_s3_url;
    context.output_route = format!("io-{}-001", region_code(region));
    context.output_token = random_base64(96);

    let mut configuration: Configuration<Value> = Configuration::default();
    configuration.access_point_arn =
        format!("arn:aws:s3-object-lambda:{region}:{ACCOUNT}:accesspoint/{olap}");
    configuration.supporting_access_point_arn =
        format!("arn:aws:s3:{region}:{ACCOUNT}:accesspoint/{supporting}");

    let header_names = ["Host", "Accept-Encoding", "X-Amz-Content-SHA256"];
    let mut user_request = UserRequest::default();
    user_request.url = format!("https://{host}/{path}");
    for (name, value) in header_names.iter().zip([
        host.as_str(),
        "identity",
        // The SHA-256 of the empty body of a GET.
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    ]) {
        if let (Ok(name), Ok(value)) = (
            aws_lambda_events::http::HeaderName::from_bytes(name.as_bytes()),
            aws_lambda_events::http::HeaderValue::from_str(value),
        ) {
            user_request.headers.insert(name, value);
        }
    }

    let mut identity = UserIdentity::default();
    identity.r#type = "IAMUser".into();
    identity.principal_id = format!("AIDA{}", random_of(UPPER_ALNUM, 17));
    identity.arn = format!("arn:aws:iam::{ACCOUNT}:user/example-user");
    identity.account_id = ACCOUNT.into();
    identity.access_key_id = format!("AKIA{}", random_of(UPPER_ALNUM, 16));

    let mut event: S3ObjectLambdaEvent<Value> = S3ObjectLambdaEvent::default();
    event.x_amz_request_id = random_hex(16).to_uppercase();
    event.get_object_context = Some(context);
    event.configuration = configuration;
    event.user_request = user_request;
    event.user_identity = identity;
    event.protocol_version = "1.00".into();

    let mut json = serde_json::to_value(event)?;
    // S3 sends only the context of the operation asked for, a session context only for an
    // assumed role and a payload only when the access point has one; the type writes each
    // missing one as null. And it passes the client's header names on as written.
    remove(
        &mut json,
        "",
        &[
            "headObjectContext",
            "listObjectsContext",
            "listObjectsV2Context",
        ],
    );
    remove(&mut json, "/userIdentity", &["sessionContext"]);
    remove(&mut json, "/configuration", &["payload"]);
    header_case(&mut json, "/userRequest/headers", &header_names);
    Ok(json)
}

/// S3's short code of a region in output routes: `us-east-1` → `use1`.
fn region_code(region: &str) -> String {
    let parts: Vec<&str> = region.split('-').collect();
    match parts.as_slice() {
        [first, middle @ .., last] => {
            let initials: String = middle.iter().filter_map(|p| p.chars().next()).collect();
            format!("{first}{initials}{last}")
        }
        _ => region.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_encoded_as_s3_writes_them() {
        assert_eq!(notification_key("a b.txt"), "a+b.txt");
        assert_eq!(
            notification_key("year=2024/ünï (1).csv"),
            "year%3D2024/%C3%BCn%C3%AF+%281%29.csv"
        );
        assert_eq!(url_path("dir/a b+c.txt"), "dir/a%20b%2Bc.txt");
    }

    #[test]
    fn region_codes() {
        assert_eq!(region_code("us-east-1"), "use1");
        assert_eq!(region_code("ap-southeast-2"), "aps2");
        assert_eq!(region_code("local"), "local");
    }
}
