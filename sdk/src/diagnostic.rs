//! The error shape a function reports to Lambda, `{"errorType", "errorMessage"}`, and how
//! handler errors, panics and the SDK's own failures become one.

use serde::{Deserialize, Serialize};

/// A boxed error: what handlers return, as in `lambda_runtime`.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// An error as Lambda reports it: posted to `/error` (native) or written to stdout with a
/// non-zero exit (WASM).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Diagnostic {
    /// The error's type, such as `ParseIntError` or `Runtime.UnmarshalError`.
    pub error_type: String,
    /// What happened.
    pub error_message: String,
}

impl Diagnostic {
    /// A diagnostic of the given type.
    pub fn new(error_type: impl Into<String>, error_message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            error_type: error_type.into(),
            error_message: error_message.into(),
        }
    }

    /// The JSON document Lambda expects.
    pub(crate) fn to_json(&self) -> Vec<u8> {
        // Two strings always serialise.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The type name of an error seen only through `dyn Error`: the leading identifier of its
/// `Debug` form (`ParseIntError { kind: InvalidDigit }` → `ParseIntError`), which is the type
/// name for derived `Debug`; `Error` when that is not a type name (a boxed `String`'s `Debug`
/// is the quoted string).
fn dyn_error_type(error: &(dyn std::error::Error + 'static)) -> String {
    if error.downcast_ref::<std::io::Error>().is_some() {
        return "IoError".into();
    }
    let debug = format!("{error:?}");
    let name: String = debug
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    let rest = &debug[name.len()..];
    let is_type = name.starts_with(|c: char| c.is_ascii_uppercase())
        && (rest.is_empty() || rest.starts_with([' ', '(', '{']));
    if is_type { name } else { "Error".into() }
}

impl From<Error> for Diagnostic {
    fn from(error: Error) -> Diagnostic {
        Diagnostic::new(dyn_error_type(&*error), error.to_string())
    }
}

impl From<Box<dyn std::error::Error>> for Diagnostic {
    fn from(error: Box<dyn std::error::Error>) -> Diagnostic {
        Diagnostic::new(dyn_error_type(&*error), error.to_string())
    }
}

impl From<String> for Diagnostic {
    fn from(message: String) -> Diagnostic {
        Diagnostic::new("Error", message)
    }
}

impl From<&'static str> for Diagnostic {
    fn from(message: &'static str) -> Diagnostic {
        Diagnostic::new("Error", message)
    }
}

impl From<std::io::Error> for Diagnostic {
    fn from(error: std::io::Error) -> Diagnostic {
        Diagnostic::new("IoError", error.to_string())
    }
}

impl From<serde_json::Error> for Diagnostic {
    fn from(error: serde_json::Error) -> Diagnostic {
        Diagnostic::new("SerdeJsonError", error.to_string())
    }
}

impl From<std::convert::Infallible> for Diagnostic {
    fn from(never: std::convert::Infallible) -> Diagnostic {
        match never {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxed_errors_are_named_by_their_type() {
        let parse: Error = "x".parse::<i32>().unwrap_err().into();
        assert_eq!(Diagnostic::from(parse).error_type, "ParseIntError");
        let text: Error = "plain words".into();
        let d = Diagnostic::from(text);
        assert_eq!(
            (d.error_type.as_str(), d.error_message.as_str()),
            ("Error", "plain words")
        );
        let io: Error = std::io::Error::other("disk").into();
        assert_eq!(Diagnostic::from(io).error_type, "IoError");
        assert_eq!(
            String::from_utf8(Diagnostic::new("A", "b").to_json()).unwrap(),
            r#"{"errorType":"A","errorMessage":"b"}"#
        );
    }
}
