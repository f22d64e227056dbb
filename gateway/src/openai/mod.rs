//! OpenAI wire format: the cheap request peek, the one model rewrite, and the models list.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;

use crate::error::ApiError;

mod scan;

pub(crate) use scan::fields as scan_fields;

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
    /// Any JSON value: a malformed one is the upstream's to refuse, not the peek's.
    #[serde(default)]
    max_tokens: Option<serde_json::Value>,
    #[serde(default)]
    max_completion_tokens: Option<serde_json::Value>,
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
    /// `max_tokens` or `max_completion_tokens`, for the token-limit estimate.
    pub max_tokens: Option<u64>,
}

/// Reads `model`, `stream`, `stream_options.include_usage` and `user`.
///
/// The scan in `scan.rs` finds the fields and serde reads only their values;
/// a body the scan does not take goes through serde whole, which then gives
/// the error for a malformed one.
pub fn peek(body: &[u8]) -> Result<Peek, ApiError> {
    let raw = match scanned(body) {
        Some(raw) => raw,
        None => serde_json::from_slice(body).map_err(|e| ApiError::MalformedJson(e.to_string()))?,
    };
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
        max_tokens: raw
            .max_completion_tokens
            .or(raw.max_tokens)
            .and_then(|v| v.as_u64()),
    })
}

/// The peek's fields through the fast scan; `None` when serde must decide.
fn scanned(body: &[u8]) -> Option<RawPeek<'_>> {
    let [
        model,
        stream,
        stream_options,
        user,
        max_tokens,
        max_completion_tokens,
    ] = scan::fields(
        body,
        [
            b"model",
            b"stream",
            b"stream_options",
            b"user",
            b"max_tokens",
            b"max_completion_tokens",
        ],
    )?;
    Some(RawPeek {
        model: value::<String>(model)?.map(Cow::Owned),
        stream: value(stream)?,
        stream_options: value(stream_options)?,
        user: value::<String>(user)?.map(Cow::Owned),
        max_tokens: value(max_tokens)?,
        max_completion_tokens: value(max_completion_tokens)?,
    })
}

/// One field's value: `Some(None)` when absent or `null`, `None` when serde refuses it.
fn value<'a, T: Deserialize<'a>>(raw: Option<&'a [u8]>) -> Option<Option<T>> {
    match raw {
        None => Some(None),
        Some(raw) => serde_json::from_slice(raw).ok(),
    }
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

    /// Objects with the peeked names among others, values of every JSON kind.
    fn json_object() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(serde_json::Value::from),
            "\\PC{0,12}".prop_map(serde_json::Value::from),
        ];
        let value = leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::btree_map("[a-z_\"\\\\]{0,8}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        });
        let names = prop_oneof![
            Just("model"),
            Just("stream"),
            Just("stream_options"),
            Just("user"),
            Just("max_tokens"),
            Just("max_completion_tokens"),
            Just("messages"),
            Just("include_usage"),
        ];
        proptest::collection::btree_map(names, value, 0..6).prop_map(|m| {
            serde_json::Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
        })
    }

    proptest::proptest! {
        #[test]
        fn peek_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = peek(&bytes);
        }

        #[test]
        fn the_scan_and_serde_agree_on_any_json_object(value in json_object()) {
            let body = serde_json::to_vec(&value).unwrap();
            let serde: Result<RawPeek<'_>, _> = serde_json::from_slice(&body);
            let scan = scanned(&body);
            // Valid JSON is taken by the scan exactly when serde can read
            // the fields (a numeric `model` is refused by both), and read the same.
            proptest::prop_assert_eq!(scan.is_some(), serde.is_ok(), "{}", value);
            let (Some(scan), Ok(serde)) = (scan, serde) else {
                return Ok(());
            };
            proptest::prop_assert_eq!(scan.model, serde.model);
            proptest::prop_assert_eq!(scan.stream, serde.stream);
            proptest::prop_assert_eq!(scan.user, serde.user);
            proptest::prop_assert_eq!(scan.max_tokens, serde.max_tokens);
            proptest::prop_assert_eq!(
                scan.stream_options.and_then(|o| o.include_usage),
                serde.stream_options.and_then(|o| o.include_usage)
            );
        }

        #[test]
        fn the_scan_takes_no_broken_json_that_serde_refuses(
            value in json_object(),
            at in proptest::num::usize::ANY,
            byte in proptest::sample::select(br#"{}[]",: 0123.-tfnul"#.to_vec()),
            insert in proptest::bool::ANY,
        ) {
            // One byte changed or added somewhere in a valid body. Without
            // backslashes or control characters (which the scan does not
            // check inside strings), whatever the scan takes serde takes too,
            // and both read the same model.
            let mut body = serde_json::to_vec(&value).unwrap();
            let at = at % (body.len() + 1);
            // Nor may it break an escape: the scan does not read escape letters.
            let breaks_escape = (at > 0 && body[at - 1] == b'\\') || body.get(at) == Some(&b'\\');
            if breaks_escape {
                return Ok(());
            }
            if insert || at == body.len() {
                body.insert(at, byte);
            } else {
                body[at] = byte;
            }
            let serde: Result<RawPeek<'_>, _> = serde_json::from_slice(&body);
            if let Some(scan) = scanned(&body) {
                proptest::prop_assert!(serde.is_ok(), "scan took what serde refused: {}", String::from_utf8_lossy(&body));
                proptest::prop_assert_eq!(scan.model, serde.unwrap().model);
            }
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
