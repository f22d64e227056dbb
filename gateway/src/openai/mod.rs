//! OpenAI wire format: the cheap request peek, the one model rewrite, and the models list.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;

use crate::error::ApiError;

/// What routing needs from a request body, borrowed from the raw bytes.
///
/// Unknown fields are skipped by serde without being built into values, so a
/// 1 MiB prompt is scanned once and never copied.
#[derive(Debug, Deserialize)]
struct RawPeek<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<RawStreamOptions>,
    #[serde(borrow, default)]
    user: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
struct RawStreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// The routing-relevant fields of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peek {
    pub model: String,
    pub stream: bool,
    pub include_usage: bool,
    pub user: Option<String>,
}

/// Reads `model`, `stream`, `stream_options.include_usage` and `user`.
pub fn peek(body: &[u8]) -> Result<Peek, ApiError> {
    let raw: RawPeek<'_> =
        serde_json::from_slice(body).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    let model = match raw.model {
        Some(m) if !m.is_empty() => m.into_owned(),
        _ => return Err(ApiError::MissingModel),
    };
    Ok(Peek {
        model,
        stream: raw.stream.unwrap_or(false),
        include_usage: raw
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
        user: raw.user.map(Cow::into_owned),
    })
}

/// Replaces the top-level `model` of a body already known to be a JSON object.
///
/// The only body rewrite the gateway does: an alias or a fallback that names
/// the model differently. It re-serializes, so it is kept off the common path.
pub fn rewrite_model(body: &Bytes, model: &str) -> Result<Bytes, ApiError> {
    let mut value: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    value.insert("model".into(), serde_json::Value::String(model.into()));
    serde_json::to_vec(&value)
        .map(Bytes::from)
        .map_err(|e| ApiError::MalformedJson(e.to_string()))
}

/// The `GET /v1/models` answer in OpenAI's list shape.
pub fn models_list(models: &[String]) -> Bytes {
    let data: Vec<_> = models
        .iter()
        .map(|id| {
            serde_json::json!({
                "id": id,
                "object": "model",
                "created": 0,
                "owned_by": "leasegate",
            })
        })
        .collect();
    Bytes::from(serde_json::json!({ "object": "list", "data": data }).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peeks_the_routing_fields_and_ignores_the_rest() {
        let p = peek(
            br#"{"messages":[{"role":"user","content":"hi \"x\""}],"model":"m\u0031",
                "stream":true,"stream_options":{"include_usage":true},"user":"u","n":1}"#,
        )
        .unwrap();
        assert_eq!(p.model, "m1");
        assert!(p.stream && p.include_usage);
        assert_eq!(p.user.as_deref(), Some("u"));
    }

    #[test]
    fn defaults_when_optional_fields_are_absent() {
        let p = peek(br#"{"model":"m","input":"x"}"#).unwrap();
        assert!(!p.stream && !p.include_usage && p.user.is_none());
    }

    #[test]
    fn rejects_malformed_and_modelless_bodies() {
        assert!(matches!(
            peek(b"{\"model\":"),
            Err(ApiError::MalformedJson(_))
        ));
        assert!(matches!(peek(b"[1,2]"), Err(ApiError::MalformedJson(_))));
        assert!(matches!(
            peek(b"{\"model\":3}"),
            Err(ApiError::MalformedJson(_))
        ));
        assert!(matches!(peek(b"{\"x\":1}"), Err(ApiError::MissingModel)));
        assert!(matches!(
            peek(b"{\"model\":\"\"}"),
            Err(ApiError::MissingModel)
        ));
    }

    #[test]
    fn rewrite_changes_only_the_model() {
        let body = Bytes::from_static(br#"{"model":"a","messages":[],"stream":false}"#);
        let out = rewrite_model(&body, "b").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["model"], "b");
        assert_eq!(v["stream"], false);
        assert!(v["messages"].as_array().unwrap().is_empty());
    }

    proptest::proptest! {
        #[test]
        fn peek_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = peek(&bytes);
        }

        #[test]
        fn peek_finds_the_model_among_any_other_fields(
            model in "[a-zA-Z0-9._/:-]{1,40}",
            extra in proptest::collection::btree_map("[a-z_]{1,10}", "[ -~]{0,20}", 0..6),
            stream in proptest::bool::ANY,
        ) {
            let mut obj = serde_json::Map::new();
            for (k, v) in &extra {
                obj.insert(k.clone(), serde_json::Value::String(v.clone()));
            }
            obj.insert("model".into(), model.clone().into());
            obj.insert("stream".into(), stream.into());
            let body = serde_json::to_vec(&obj).unwrap();
            let p = peek(&body).unwrap();
            proptest::prop_assert_eq!(p.model, model);
            proptest::prop_assert_eq!(p.stream, stream);
        }
    }
}
