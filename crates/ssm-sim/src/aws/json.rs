//! The awsJson1_1 protocol (ECS, Secrets Manager), as the services speak it: `POST /` with
//! `X-Amz-Target: <TargetPrefix>.<Operation>` and a JSON body, a JSON answer, and errors as
//! HTTP 400 `{"__type": "Code", "message": "…"}` (Secrets Manager capitalises `Message`).

use serde_json::{Map, Value};

/// Content type of requests and answers.
pub(crate) const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// The request body as a JSON object (an empty body is `{}`, as the SDKs send for no input);
/// `None` when it is not a JSON object.
pub(crate) fn parse_object(body: &[u8]) -> Option<Map<String, Value>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Some(Map::new());
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

/// An error body.
pub(crate) fn error_body(code: &str, message_key: &str, message: Option<&str>) -> String {
    let mut m = Map::new();
    m.insert("__type".to_owned(), Value::from(code));
    if let Some(msg) = message {
        m.insert(message_key.to_owned(), Value::from(msg));
    }
    Value::Object(m).to_string()
}

/// The string member `name`; `Err(())` when present with another type.
pub(crate) fn opt_str<'a>(
    input: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>, ()> {
    match input.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(()),
    }
}
