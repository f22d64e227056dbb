//! Adds `stream_options.include_usage: true` to a streaming request so the gateway can account for it.
//!
//! The common case, a request with no `stream_options` at all, is an
//! in-place splice: the member is inserted right after the top-level `{`
//! and every other byte goes upstream as the client wrote it. Only a
//! request that already has `stream_options` without `include_usage: true`
//! is re-serialized (serde_json), which may reorder its keys; that shape is
//! rare, since clients that set `stream_options` almost always set it for
//! usage.

use bytes::Bytes;
use serde::Deserialize;

const MEMBER: &[u8] = br#""stream_options":{"include_usage":true},"#;

/// What a streaming request says about `stream_options`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamOptions {
    /// No `stream_options` key (or `null`).
    Absent,
    /// Present, but without `include_usage: true`.
    WithoutUsage,
    /// `include_usage: true`: nothing to add.
    WithUsage,
    /// Not something the gateway should touch (a non-object `stream_options`,
    /// or a body that does not parse); the upstream will judge it.
    Invalid,
}

/// Why a body could not be spliced; the caller forwards it unchanged.
#[derive(Debug, thiserror::Error)]
pub enum SpliceError {
    #[error("request body is not a JSON object")]
    NotAnObject,
    #[error("stream_options could not be rewritten: {0}")]
    Rewrite(#[from] serde_json::Error),
}

#[derive(Deserialize)]
struct Probe {
    #[serde(default)]
    stream_options: Field,
}

/// Tells an absent key from an explicit `null`: spliced in front of a
/// `null`, the member would be a duplicate key and parsers keep the last.
#[derive(Default)]
enum Field {
    #[default]
    Absent,
    Present(serde_json::Value),
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde_json::Value::deserialize(d).map(Field::Present)
    }
}

impl StreamOptions {
    /// Reads `stream_options` from a body; for callers whose own peek does not say.
    pub fn probe(body: &[u8]) -> StreamOptions {
        let Ok(probe) = serde_json::from_slice::<Probe>(body) else {
            return StreamOptions::Invalid;
        };
        match probe.stream_options {
            Field::Absent => StreamOptions::Absent,
            Field::Present(serde_json::Value::Null) => StreamOptions::WithoutUsage,
            Field::Present(serde_json::Value::Object(o)) => {
                if o.get("include_usage") == Some(&serde_json::Value::Bool(true)) {
                    StreamOptions::WithUsage
                } else {
                    StreamOptions::WithoutUsage
                }
            }
            Field::Present(_) => StreamOptions::Invalid,
        }
    }

    /// Whether the gateway must add `include_usage` (and later drop the chunk).
    pub fn needs_splice(self) -> bool {
        matches!(self, StreamOptions::Absent | StreamOptions::WithoutUsage)
    }
}

/// The body to send upstream so the stream ends with a usage chunk.
///
/// Returns the body unchanged (same buffer) when the client already asked
/// or the options are not ours to fix.
pub fn include_usage(body: &Bytes, options: StreamOptions) -> Result<Bytes, SpliceError> {
    match options {
        StreamOptions::WithUsage | StreamOptions::Invalid => Ok(body.clone()),
        StreamOptions::Absent => {
            let open = body
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .filter(|&i| body[i] == b'{')
                .ok_or(SpliceError::NotAnObject)?;
            let mut out = Vec::with_capacity(body.len() + MEMBER.len());
            out.extend_from_slice(&body[..=open]);
            out.extend_from_slice(MEMBER);
            out.extend_from_slice(&body[open + 1..]);
            // `{}` would become `{"stream_options":{...},}`: drop the comma.
            // A request that routed here has `model`, so this is belt and braces.
            if body[open + 1..]
                .iter()
                .find(|b| !b.is_ascii_whitespace())
                .is_some_and(|&b| b == b'}')
            {
                out.remove(open + MEMBER.len());
            }
            Ok(Bytes::from(out))
        }
        StreamOptions::WithoutUsage => {
            let mut value: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(body)?;
            let options = value
                .entry("stream_options")
                .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
            if !options.is_object() {
                *options = serde_json::Value::Object(serde_json::Map::new());
            }
            if let Some(map) = options.as_object_mut() {
                map.insert("include_usage".into(), serde_json::Value::Bool(true));
            }
            Ok(Bytes::from(serde_json::to_vec(&value)?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn spliced(body: &str) -> Value {
        let b = Bytes::copy_from_slice(body.as_bytes());
        let out = include_usage(&b, StreamOptions::probe(&b)).unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn absent_options_are_spliced_after_the_opening_brace_keeping_every_other_byte() {
        let body = Bytes::from_static(b"  {\"model\":\"m\", \"stream\":true,\"messages\":[]}");
        assert_eq!(StreamOptions::probe(&body), StreamOptions::Absent);
        let out = include_usage(&body, StreamOptions::Absent).unwrap();
        assert_eq!(
            &out[..],
            &b"  {\"stream_options\":{\"include_usage\":true},\"model\":\"m\", \"stream\":true,\"messages\":[]}"[..]
        );
    }

    #[test]
    fn existing_options_without_usage_get_it_and_keep_their_other_fields() {
        let v = spliced(
            r#"{"model":"m","stream":true,"stream_options":{"continuous_usage_stats":false}}"#,
        );
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["stream_options"]["continuous_usage_stats"], false);
        let v = spliced(r#"{"model":"m","stream":true,"stream_options":{"include_usage":false}}"#);
        assert_eq!(v["stream_options"]["include_usage"], true);
        let v = spliced(r#"{"model":"m","stream":true,"stream_options":null}"#);
        assert_eq!(v["stream_options"]["include_usage"], true);
        let odd = Bytes::from_static(br#"{"model":"m","stream_options":"yes"}"#);
        assert_eq!(StreamOptions::probe(&odd), StreamOptions::Invalid);
        assert_eq!(include_usage(&odd, StreamOptions::Invalid).unwrap(), odd);
    }

    #[test]
    fn a_client_that_asked_is_left_byte_identical() {
        let body = Bytes::from_static(
            br#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#,
        );
        assert_eq!(StreamOptions::probe(&body), StreamOptions::WithUsage);
        assert_eq!(
            include_usage(&body, StreamOptions::WithUsage).unwrap(),
            body
        );
    }

    #[test]
    fn an_empty_object_stays_valid_json() {
        let v = spliced("{ }");
        assert_eq!(v["stream_options"]["include_usage"], true);
    }

    #[test]
    fn non_objects_are_refused() {
        let body = Bytes::from_static(b"[1]");
        assert!(include_usage(&body, StreamOptions::Absent).is_err());
    }
}
