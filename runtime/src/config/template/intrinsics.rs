//! CloudFormation's intrinsic functions, evaluated against what a local run knows: the
//! parameters (with the pseudo parameters), the conditions, the mappings, and the resources
//! lamina runs (a function's `Ref` is its name and `Fn::GetAtt F.Arn` its ARN; a layer's `Ref`
//! is an ARN that stands for its local content). `AWS::NoValue` removes the property or item
//! it stands in.
//!
//! Supported: `Ref`, `Fn::Sub` (both forms), `Fn::GetAtt`, `Fn::Join`, `Fn::Select`,
//! `Fn::Split`, `Fn::If`, `Fn::Equals`, `Fn::And`, `Fn::Or`, `Fn::Not`, `Condition`,
//! `Fn::Base64`, `Fn::FindInMap`, `Fn::GetAZs`. What cannot be known here (`Fn::ImportValue`,
//! the attributes of resources lamina does not run) is an [`Unknowable`] error, which the
//! caller may forgive where SAM local does (an environment variable becomes "").

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::Value;

/// A resource as intrinsic functions see it.
#[derive(Debug, Clone, Default)]
pub struct Resource {
    /// Its type, for messages.
    pub kind: String,
    /// What `Ref` gives, when lamina knows it.
    pub reference: Option<String>,
    /// What `Fn::GetAtt` gives, by attribute.
    pub attributes: BTreeMap<String, String>,
}

/// Everything an expression may refer to.
#[derive(Debug, Default)]
pub struct Scope {
    /// Parameters and pseudo parameters, by name: a string, or a list for list types.
    pub parameters: BTreeMap<String, Value>,
    /// Conditions, evaluated.
    pub conditions: BTreeMap<String, bool>,
    /// Resources, by logical id.
    pub resources: BTreeMap<String, Resource>,
    /// `Mappings`.
    pub mappings: Value,
    /// The region `Fn::GetAZs` answers for.
    pub region: String,
}

/// Why an expression has no value here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExprError {
    /// The expression is wrong: a template error.
    Invalid(String),
    /// Its value cannot be known on this machine (another stack's export, an attribute of a
    /// resource lamina does not create).
    Unknowable(String),
}

impl std::fmt::Display for ExprError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExprError::Invalid(m) | ExprError::Unknowable(m) => f.write_str(m),
        }
    }
}

fn invalid<T>(message: impl Into<String>) -> Result<T, ExprError> {
    Err(ExprError::Invalid(message.into()))
}

/// The one key of an intrinsic function's object, and its argument.
fn intrinsic(value: &Value) -> Option<(&str, &Value)> {
    let map = value.as_object()?;
    if map.len() != 1 {
        return None;
    }
    let (key, arg) = map.iter().next()?;
    (key == "Ref" || key.starts_with("Fn::")).then_some((key.as_str(), arg))
}

impl Scope {
    /// Evaluates every intrinsic function in `value`; `None` when it is `AWS::NoValue`.
    pub fn resolve(&self, value: &Value) -> Result<Option<Value>, ExprError> {
        if let Some((name, arg)) = intrinsic(value) {
            return self.call(name, arg);
        }
        Ok(Some(match value {
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    if let Some(v) = self.resolve(item)? {
                        out.push(v);
                    }
                }
                Value::Array(out)
            }
            Value::Object(map) => {
                let mut out = serde_json::Map::new();
                for (k, v) in map {
                    if let Some(v) = self.resolve(v)? {
                        out.insert(k.clone(), v);
                    }
                }
                Value::Object(out)
            }
            other => other.clone(),
        }))
    }

    /// Evaluates and insists on a value.
    fn value(&self, value: &Value) -> Result<Value, ExprError> {
        self.resolve(value)?
            .map_or_else(|| invalid("AWS::NoValue where a value is needed"), Ok)
    }

    /// Evaluates to a string (numbers and booleans as their text).
    pub fn string(&self, value: &Value) -> Result<String, ExprError> {
        match self.value(value)? {
            Value::String(s) => Ok(s),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            other => invalid(format!("expected a string, found {other}")),
        }
    }

    fn list(&self, value: &Value) -> Result<Vec<Value>, ExprError> {
        match self.value(value)? {
            Value::Array(items) => Ok(items),
            other => invalid(format!("expected a list, found {other}")),
        }
    }

    fn call(&self, name: &str, arg: &Value) -> Result<Option<Value>, ExprError> {
        let args = |n: usize| -> Result<&Vec<Value>, ExprError> {
            match arg.as_array() {
                Some(list) if list.len() == n => Ok(list),
                _ => invalid(format!("{name} takes a list of {n}, found {arg}")),
            }
        };
        Ok(Some(match name {
            "Ref" => {
                let Some(target) = arg.as_str() else {
                    return invalid(format!("Ref takes a name, found {arg}"));
                };
                return self.reference(target);
            }
            "Fn::GetAtt" => {
                let (resource, attribute) = match arg {
                    Value::Array(list) if list.len() == 2 => {
                        (self.string(&list[0])?, self.string(&list[1])?)
                    }
                    Value::String(s) => match s.split_once('.') {
                        Some((r, a)) => (r.to_owned(), a.to_owned()),
                        None => {
                            return invalid(format!(
                                "Fn::GetAtt {s:?}: expected Resource.Attribute"
                            ));
                        }
                    },
                    _ => {
                        return invalid(format!(
                            "Fn::GetAtt takes [Resource, Attribute], found {arg}"
                        ));
                    }
                };
                Value::String(self.attribute(&resource, &attribute)?)
            }
            "Fn::Sub" => Value::String(self.sub(arg)?),
            "Fn::Join" => {
                let list = args(2)?;
                let separator = self.string(&list[0])?;
                let parts = self
                    .list(&list[1])?
                    .iter()
                    .map(|p| self.string(p))
                    .collect::<Result<Vec<_>, _>>()?;
                Value::String(parts.join(&separator))
            }
            "Fn::Select" => {
                let list = args(2)?;
                let index = match self.value(&list[0])? {
                    Value::Number(n) => n.as_u64(),
                    Value::String(s) => s.parse().ok(),
                    _ => None,
                };
                let items = self.list(&list[1])?;
                match index.and_then(|i| items.get(usize::try_from(i).ok()?)) {
                    Some(item) => item.clone(),
                    None => {
                        return invalid(format!(
                            "Fn::Select: index {} is outside a list of {}",
                            list[0],
                            items.len()
                        ));
                    }
                }
            }
            "Fn::Split" => {
                let list = args(2)?;
                let separator = self.string(&list[0])?;
                let text = self.string(&list[1])?;
                if separator.is_empty() {
                    return invalid("Fn::Split: an empty separator");
                }
                Value::Array(
                    text.split(separator.as_str())
                        .map(|s| Value::String(s.to_owned()))
                        .collect(),
                )
            }
            "Fn::If" => {
                let list = args(3)?;
                let Some(condition) = list[0].as_str() else {
                    return invalid(format!(
                        "Fn::If takes a condition's name first, found {}",
                        list[0]
                    ));
                };
                let branch = if self.condition(condition)? {
                    &list[1]
                } else {
                    &list[2]
                };
                return self.resolve(branch);
            }
            "Fn::Equals" | "Fn::And" | "Fn::Or" | "Fn::Not" => {
                let mut wrapped = serde_json::Map::new();
                wrapped.insert(name.to_owned(), arg.clone());
                Value::Bool(self.truth(&Value::Object(wrapped))?)
            }
            "Fn::Base64" => {
                Value::String(base64::engine::general_purpose::STANDARD.encode(self.string(arg)?))
            }
            "Fn::FindInMap" => {
                let list = args(3)?;
                let keys = list
                    .iter()
                    .map(|k| self.string(k))
                    .collect::<Result<Vec<_>, _>>()?;
                let found = self
                    .mappings
                    .get(&keys[0])
                    .and_then(|m| m.get(&keys[1]))
                    .and_then(|m| m.get(&keys[2]));
                match found {
                    Some(v) => v.clone(),
                    None => {
                        return invalid(format!(
                            "Fn::FindInMap: Mappings has no {}.{}.{}",
                            keys[0], keys[1], keys[2]
                        ));
                    }
                }
            }
            "Fn::GetAZs" => {
                let region = match self.string(arg)?.as_str() {
                    "" => self.region.clone(),
                    r => r.to_owned(),
                };
                Value::Array(
                    ["a", "b", "c"]
                        .iter()
                        .map(|z| Value::String(format!("{region}{z}")))
                        .collect(),
                )
            }
            "Fn::ImportValue" => {
                return Err(ExprError::Unknowable(format!(
                    "Fn::ImportValue {arg}: another stack's export, which a local run cannot know"
                )));
            }
            other => {
                return Err(ExprError::Unknowable(format!(
                    "{other} is not evaluated by lamina"
                )));
            }
        }))
    }

    fn reference(&self, target: &str) -> Result<Option<Value>, ExprError> {
        if target == "AWS::NoValue" {
            return Ok(None);
        }
        if let Some(value) = self.parameters.get(target) {
            return Ok(Some(value.clone()));
        }
        match self.resources.get(target) {
            Some(Resource {
                reference: Some(r), ..
            }) => Ok(Some(Value::String(r.clone()))),
            Some(resource) => Err(ExprError::Unknowable(format!(
                "Ref {target}: {target} is an {}, which lamina does not create",
                resource.kind
            ))),
            None => invalid(format!(
                "Ref {target}: no parameter, pseudo parameter or resource of that name"
            )),
        }
    }

    fn attribute(&self, resource: &str, attribute: &str) -> Result<String, ExprError> {
        match self.resources.get(resource) {
            Some(r) => match r.attributes.get(attribute) {
                Some(v) => Ok(v.clone()),
                None => Err(ExprError::Unknowable(format!(
                    "Fn::GetAtt {resource}.{attribute}: {resource} is an {}, which lamina does \
                     not create",
                    r.kind
                ))),
            },
            None => invalid(format!(
                "Fn::GetAtt {resource}.{attribute}: no resource {resource}"
            )),
        }
    }

    /// `Fn::Sub`: `"text ${Name} ${Res.Attr} ${!Literal}"`, or `[text, {Name: value}]`.
    fn sub(&self, arg: &Value) -> Result<String, ExprError> {
        let (text, vars) = match arg {
            Value::String(s) => (s.as_str(), None),
            Value::Array(list) if list.len() == 2 => match (&list[0], list[1].as_object()) {
                (Value::String(s), Some(vars)) => (s.as_str(), Some(vars)),
                _ => {
                    return invalid(format!(
                        "Fn::Sub takes [text, {{Name: value}}], found {arg}"
                    ));
                }
            },
            _ => {
                return invalid(format!(
                    "Fn::Sub takes text or [text, variables], found {arg}"
                ));
            }
        };
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                return invalid(format!("Fn::Sub {text:?}: a ${{ without its }}"));
            };
            let name = &after[..end];
            if let Some(literal) = name.strip_prefix('!') {
                out.push_str("${");
                out.push_str(literal);
                out.push('}');
            } else if let Some(value) = vars.and_then(|v| v.get(name)) {
                out.push_str(&self.string(value)?);
            } else if let Some((resource, attribute)) = name
                .split_once('.')
                .filter(|_| !self.parameters.contains_key(name))
            {
                out.push_str(&self.attribute(resource, attribute)?);
            } else {
                match self.reference(name)? {
                    Some(Value::String(s)) => out.push_str(&s),
                    Some(Value::Number(n)) => out.push_str(&n.to_string()),
                    Some(other) => {
                        return invalid(format!("Fn::Sub ${{{name}}}: {other} is not text"));
                    }
                    None => {}
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// A condition's value, by name.
    pub fn condition(&self, name: &str) -> Result<bool, ExprError> {
        self.conditions.get(name).copied().map_or_else(
            || invalid(format!("no condition {name:?} in Conditions")),
            Ok,
        )
    }

    /// Evaluates a condition expression: `Fn::Equals`, `Fn::And`, `Fn::Or`, `Fn::Not`,
    /// `{"Condition": name}`.
    pub fn truth(&self, expr: &Value) -> Result<bool, ExprError> {
        if let Some(name) = expr.get("Condition").and_then(Value::as_str) {
            return self.condition(name);
        }
        let Some((name, arg)) = intrinsic(expr) else {
            return match expr {
                Value::Bool(b) => Ok(*b),
                Value::String(s) if s == "true" || s == "false" => Ok(s == "true"),
                _ => invalid(format!("expected a condition, found {expr}")),
            };
        };
        let list = || {
            arg.as_array()
                .map_or_else(|| invalid(format!("{name} takes a list, found {arg}")), Ok)
        };
        match name {
            "Fn::Equals" => {
                let items = list()?;
                if items.len() != 2 {
                    return invalid(format!("Fn::Equals takes two values, found {arg}"));
                }
                let text = |v: &Value| -> Result<Value, ExprError> {
                    Ok(match self.value(v)? {
                        Value::Number(n) => Value::String(n.to_string()),
                        Value::Bool(b) => Value::String(b.to_string()),
                        other => other,
                    })
                };
                Ok(text(&items[0])? == text(&items[1])?)
            }
            "Fn::And" => {
                let mut all = true;
                for item in list()? {
                    all &= self.truth(item)?;
                }
                Ok(all)
            }
            "Fn::Or" => {
                let mut any = false;
                for item in list()? {
                    any |= self.truth(item)?;
                }
                Ok(any)
            }
            "Fn::Not" => match list()?.as_slice() {
                [one] => Ok(!self.truth(one)?),
                _ => invalid(format!("Fn::Not takes one condition, found {arg}")),
            },
            "Fn::If" => match self.resolve(expr)? {
                Some(v) => self.truth(&v),
                None => invalid("a condition that is AWS::NoValue"),
            },
            other => invalid(format!("{other} is not a condition function")),
        }
    }
}

/// Evaluates `Conditions` in dependency order (a condition may name another); a cycle or an
/// unknown name is an error naming the condition.
pub fn evaluate_conditions(
    scope: &mut Scope,
    conditions: &serde_json::Map<String, Value>,
) -> Result<(), (String, ExprError)> {
    let mut pending: Vec<&String> = conditions.keys().collect();
    while !pending.is_empty() {
        let before = pending.len();
        let mut last_error = None;
        pending.retain(|name| match scope.truth(&conditions[*name]) {
            Ok(value) => {
                scope.conditions.insert((*name).clone(), value);
                false
            }
            Err(e) => {
                last_error = Some(((*name).clone(), e));
                true
            }
        });
        if pending.len() == before {
            // No progress: what is left refers to itself, or to what does not exist.
            return Err(last_error.expect("an error for each condition left"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope() -> Scope {
        let mut scope = Scope {
            region: "eu-west-1".into(),
            mappings: json!({"Sizes": {"prod": {"Memory": 1024}}}),
            ..Default::default()
        };
        scope.parameters.insert("Stage".into(), json!("prod"));
        scope
            .parameters
            .insert("AWS::Region".into(), json!("eu-west-1"));
        scope.parameters.insert("Names".into(), json!(["a", "b"]));
        scope.resources.insert(
            "Fn".into(),
            Resource {
                kind: "AWS::Serverless::Function".into(),
                reference: Some("my-fn".into()),
                attributes: [("Arn".to_owned(), "arn:fn".to_owned())].into(),
            },
        );
        scope.resources.insert(
            "Table".into(),
            Resource {
                kind: "AWS::DynamoDB::Table".into(),
                ..Default::default()
            },
        );
        evaluate_conditions(
            &mut scope,
            json!({
                "IsProd": {"Fn::Equals": [{"Ref": "Stage"}, "prod"]},
                "NotProd": {"Fn::Not": [{"Condition": "IsProd"}]},
                "Both": {"Fn::And": [{"Condition": "IsProd"}, {"Condition": "NotProd"}]}
            })
            .as_object()
            .unwrap(),
        )
        .unwrap();
        scope
    }

    #[test]
    fn each_function_evaluates_as_cloudformation_does() {
        let s = scope();
        let eval = |v: Value| s.resolve(&v).unwrap();
        assert_eq!(eval(json!({"Ref": "Stage"})), Some(json!("prod")));
        assert_eq!(eval(json!({"Ref": "Fn"})), Some(json!("my-fn")));
        assert_eq!(
            eval(json!({"Fn::GetAtt": ["Fn", "Arn"]})),
            Some(json!("arn:fn"))
        );
        assert_eq!(
            eval(json!({"Fn::Sub": "${Stage}-${Fn}-${Fn.Arn}-${!Literal}-${AWS::Region}"})),
            Some(json!("prod-my-fn-arn:fn-${Literal}-eu-west-1"))
        );
        assert_eq!(
            eval(json!({"Fn::Sub": ["${X}/${Stage}", {"X": {"Ref": "Fn"}}]})),
            Some(json!("my-fn/prod"))
        );
        assert_eq!(
            eval(json!({"Fn::Join": ["-", [{"Ref": "Stage"}, "x", 3]]})),
            Some(json!("prod-x-3"))
        );
        assert_eq!(
            eval(json!({"Fn::Select": [1, {"Ref": "Names"}]})),
            Some(json!("b"))
        );
        assert_eq!(
            eval(json!({"Fn::Select": ["0", {"Fn::Split": [",", "x,y"]}]})),
            Some(json!("x"))
        );
        assert_eq!(eval(json!({"Fn::If": ["IsProd", 1, 2]})), Some(json!(1)));
        assert_eq!(
            eval(json!({"Fn::If": ["NotProd", 1, {"Ref": "AWS::NoValue"}]})),
            None
        );
        assert_eq!(
            eval(json!({"A": {"Ref": "AWS::NoValue"}, "B": [1, {"Ref": "AWS::NoValue"}]})),
            Some(json!({"B": [1]}))
        );
        assert_eq!(eval(json!({"Fn::Base64": "hi"})), Some(json!("aGk=")));
        assert_eq!(
            eval(json!({"Fn::FindInMap": ["Sizes", {"Ref": "Stage"}, "Memory"]})),
            Some(json!(1024))
        );
        assert_eq!(
            eval(json!({"Fn::Select": [0, {"Fn::GetAZs": ""}]})),
            Some(json!("eu-west-1a"))
        );
        assert!(!s.condition("Both").unwrap());
    }

    #[test]
    fn what_is_wrong_and_what_cannot_be_known_are_told_apart() {
        let s = scope();
        let err = |v: Value| s.resolve(&v).unwrap_err();
        assert!(
            matches!(err(json!({"Ref": "Nothing"})), ExprError::Invalid(m) if m.contains("Nothing"))
        );
        assert!(
            matches!(err(json!({"Fn::GetAtt": ["Table", "Arn"]})), ExprError::Unknowable(m) if m.contains("AWS::DynamoDB::Table"))
        );
        assert!(matches!(
            err(json!({"Ref": "Table"})),
            ExprError::Unknowable(_)
        ));
        assert!(matches!(
            err(json!({"Fn::ImportValue": "x"})),
            ExprError::Unknowable(_)
        ));
        assert!(
            matches!(err(json!({"Fn::If": ["Missing", 1, 2]})), ExprError::Invalid(m) if m.contains("Missing"))
        );
        assert!(matches!(
            err(json!({"Fn::Select": [5, [1]]})),
            ExprError::Invalid(_)
        ));
        let mut s = Scope::default();
        let cycle = evaluate_conditions(
            &mut s,
            json!({"A": {"Condition": "B"}, "B": {"Condition": "A"}})
                .as_object()
                .unwrap(),
        );
        assert!(cycle.is_err());
    }
}
