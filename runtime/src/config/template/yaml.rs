//! A template's text, YAML or JSON, as one JSON value. CloudFormation's short-form tags become
//! the long forms they abbreviate (`!Ref X` → `{"Ref": "X"}`, `!GetAtt A.B` →
//! `{"Fn::GetAtt": ["A", "B"]}`, `!Sub …` → `{"Fn::Sub": …}`), so that everything after this
//! sees one shape. YAML is read by `saphyr` (YAML 1.2, pure Rust, maintained; it keeps tags,
//! which CloudFormation's short forms need).

use saphyr::{LoadableYamlNode, Scalar, Yaml};
use serde_json::{Map, Value};

/// Reads a template's text. JSON is YAML, so one reader serves both.
pub fn parse(text: &str) -> Result<Value, String> {
    let docs = Yaml::load_from_str(text).map_err(|e| e.to_string())?;
    let mut docs = docs.into_iter();
    let Some(doc) = docs.next() else {
        return Err("the file is empty".into());
    };
    if docs.next().is_some() {
        return Err("more than one YAML document (---): a template is one".into());
    }
    to_json(doc, "")
}

/// The intrinsic functions CloudFormation's short forms stand for, by tag.
fn long_form(tag: &str) -> Option<&'static str> {
    Some(match tag {
        "Ref" => "Ref",
        "Condition" => "Condition",
        "Sub" => "Fn::Sub",
        "GetAtt" => "Fn::GetAtt",
        "Join" => "Fn::Join",
        "Select" => "Fn::Select",
        "Split" => "Fn::Split",
        "If" => "Fn::If",
        "Equals" => "Fn::Equals",
        "And" => "Fn::And",
        "Or" => "Fn::Or",
        "Not" => "Fn::Not",
        "Base64" => "Fn::Base64",
        "FindInMap" => "Fn::FindInMap",
        "GetAZs" => "Fn::GetAZs",
        "ImportValue" => "Fn::ImportValue",
        "Cidr" => "Fn::Cidr",
        "Transform" => "Fn::Transform",
        "ToJsonString" => "Fn::ToJsonString",
        "Length" => "Fn::Length",
        _ => return None,
    })
}

fn to_json(node: Yaml<'_>, at: &str) -> Result<Value, String> {
    let here = |what: &str| match at {
        "" => what.to_owned(),
        at => format!("{at}: {what}"),
    };
    Ok(match node {
        Yaml::Value(scalar) => scalar_to_json(scalar),
        Yaml::Representation(text, _, _) => Value::String(text.into_owned()),
        Yaml::Sequence(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| to_json(item, &format!("{at}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Yaml::Mapping(entries) => {
            let mut map = Map::new();
            for (key, value) in entries {
                let key = match key {
                    Yaml::Value(Scalar::String(s)) => s.into_owned(),
                    Yaml::Value(scalar) => match scalar_to_json(scalar) {
                        Value::String(s) => s,
                        other => other.to_string(),
                    },
                    _ => return Err(here("a key that is not a plain value")),
                };
                let path = match at {
                    "" => key.clone(),
                    at => format!("{at}.{key}"),
                };
                let value = to_json(value, &path)?;
                map.insert(key, value);
            }
            Value::Object(map)
        }
        Yaml::Tagged(tag, inner) => {
            let name = tag.suffix.as_str();
            if tag.handle == "!" {
                let Some(long) = long_form(name) else {
                    return Err(here(&format!("unknown tag !{name}")));
                };
                let inner = to_json(*inner, at)?;
                // `!GetAtt Resource.Attribute` is the one short form whose argument changes
                // shape: a dotted string for the long form's two-item list.
                let inner = match (long, inner) {
                    ("Fn::GetAtt", Value::String(s)) => match s.split_once('.') {
                        Some((resource, attribute)) => Value::Array(vec![
                            Value::String(resource.to_owned()),
                            Value::String(attribute.to_owned()),
                        ]),
                        None => Value::String(s),
                    },
                    (_, inner) => inner,
                };
                let mut map = Map::new();
                map.insert(long.to_owned(), inner);
                Value::Object(map)
            } else {
                // `!!str 3` and other core tags: the value itself.
                to_json(*inner, at)?
            }
        }
        Yaml::Alias(_) => return Err(here("YAML aliases (*name) are not supported")),
        Yaml::BadValue => return Err(here("a value that cannot be read")),
    })
}

fn scalar_to_json(scalar: Scalar<'_>) -> Value {
    match scalar {
        Scalar::Null => Value::Null,
        Scalar::Boolean(b) => Value::Bool(b),
        Scalar::Integer(n) => Value::from(n),
        Scalar::FloatingPoint(f) => {
            serde_json::Number::from_f64(f.into_inner()).map_or(Value::Null, Value::Number)
        }
        Scalar::String(s) => Value::String(s.into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn short_forms_become_long_forms() {
        let text = r#"
A: !Ref Name
B: !GetAtt Fn.Arn
C: !Sub "${AWS::Region}-x"
D: !Join [",", [a, !Ref P]]
E: !If [IsProd, 1, 2]
F: !Select [0, !Split [",", "a,b"]]
G: 12
H: "12"
I: true
J: ~
"#;
        let v = parse(text).unwrap();
        assert_eq!(
            v,
            json!({
                "A": {"Ref": "Name"},
                "B": {"Fn::GetAtt": ["Fn", "Arn"]},
                "C": {"Fn::Sub": "${AWS::Region}-x"},
                "D": {"Fn::Join": [",", ["a", {"Ref": "P"}]]},
                "E": {"Fn::If": ["IsProd", 1, 2]},
                "F": {"Fn::Select": [0, {"Fn::Split": [",", "a,b"]}]},
                "G": 12, "H": "12", "I": true, "J": null
            })
        );
        let json_text = r#"{"A": {"Fn::GetAtt": ["Fn", "Arn"]}, "B": [1, "x"]}"#;
        assert_eq!(
            parse(json_text).unwrap(),
            json!({"A": {"Fn::GetAtt": ["Fn", "Arn"]}, "B": [1, "x"]})
        );
    }

    #[test]
    fn what_cannot_be_read_is_named() {
        assert!(parse("A: !Nope x").unwrap_err().contains("!Nope"));
        assert!(parse("A: [unclosed").is_err());
        assert!(parse("a: 1\na: 2").is_err(), "duplicate keys");
        // Anchors and aliases are YAML's own; SAM's reader resolves them, and so does ours.
        assert_eq!(parse("a: &x 1\nb: *x").unwrap(), json!({"a": 1, "b": 1}));
    }
}
