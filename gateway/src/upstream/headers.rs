//! Forwarding hygiene: what crosses the gateway in each direction and what is added.

use http::{HeaderMap, HeaderName, HeaderValue, header};

/// Headers that describe one connection hop and must not be forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const API_KEY: HeaderName = HeaderName::from_static("api-key");

/// Removes hop-by-hop headers, including any the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most requests and answers carry no `Connection` header: no list to build.
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in &named {
            headers.remove(name);
        }
    }
    // One pass over the few headers present is cheaper than hashing every
    // hop-by-hop name for a removal that usually finds nothing.
    let is_hop = |name: &HeaderName| {
        HOP_BY_HOP.contains(name) || *name == KEEP_ALIVE || *name == PROXY_CONNECTION
    };
    if !headers.keys().any(is_hop) {
        return;
    }
    for name in HOP_BY_HOP.iter().chain([&KEEP_ALIVE, &PROXY_CONNECTION]) {
        headers.remove(name);
    }
}

/// The headers sent to an upstream: the client's, minus its credentials and
/// hop-by-hop headers, plus the endpoint's own key and the trace context.
pub fn upstream_request(
    client: &HeaderMap,
    request_id: &HeaderValue,
    upstream_key: Option<&str>,
) -> HeaderMap {
    let mut out = client.clone();
    strip_hop_by_hop(&mut out);
    // The client's key is for the gateway only; the replica gets its own.
    out.remove(header::AUTHORIZATION);
    out.remove(API_KEY);
    // Recomputed by the client pool for the new target and body.
    out.remove(header::HOST);
    out.remove(header::CONTENT_LENGTH);
    if let Some(key) = upstream_key
        && let Ok(mut v) = HeaderValue::from_str(&format!("Bearer {key}"))
    {
        v.set_sensitive(true);
        out.insert(header::AUTHORIZATION, v);
    }
    out.insert(REQUEST_ID, request_id.clone());
    if !out.contains_key(&TRACEPARENT) {
        out.insert(TRACEPARENT, new_traceparent());
    }
    out
}

/// The request id the client sent, when it is a sane token, or a new one.
pub fn request_id(client: &HeaderMap) -> HeaderValue {
    client
        .get(REQUEST_ID)
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .cloned()
        .unwrap_or_else(|| {
            let mut id = [0u8; 32];
            hex(&mut id, fastrand::u128(..));
            header_value(&id)
        })
}

/// A W3C trace context for a new trace, sampled: `00-<trace>-<span>-01`.
fn new_traceparent() -> HeaderValue {
    let mut v = *b"00-00000000000000000000000000000000-0000000000000000-01";
    hex(&mut v[3..35], fastrand::u128(1..));
    hex(&mut v[36..52], u128::from(fastrand::u64(1..)));
    header_value(&v)
}

/// Writes `n` as lowercase hex filling `out`, most significant digit first
/// (no `format!`: its string grows by reallocating, on every request).
fn hex(out: &mut [u8], mut n: u128) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in out.iter_mut().rev() {
        *b = DIGITS[(n & 0xf) as usize];
        n >>= 4;
    }
}

/// Hex digits and dashes are always a valid header value.
fn header_value(ascii: &[u8]) -> HeaderValue {
    HeaderValue::from_bytes(ascii).unwrap_or(HeaderValue::from_static("unknown"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_client_credentials_and_hop_headers_and_injects_the_replica_key() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer sk-client"),
        );
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-custom", HeaderValue::from_static("kept"));
        let id = HeaderValue::from_static("rid-1");
        let out = upstream_request(&h, &id, Some("sk-replica"));
        assert_eq!(out[header::AUTHORIZATION], "Bearer sk-replica");
        for gone in [
            "connection",
            "x-secret-hop",
            "keep-alive",
            "transfer-encoding",
        ] {
            assert!(!out.contains_key(gone), "{gone} forwarded");
        }
        assert_eq!(out["x-custom"], "kept");
        assert_eq!(out[REQUEST_ID], "rid-1");
        assert!(out[TRACEPARENT].to_str().unwrap().starts_with("00-"));
    }

    #[test]
    fn without_a_replica_key_no_authorization_is_sent() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer sk-client"),
        );
        let out = upstream_request(&h, &HeaderValue::from_static("r"), None);
        assert!(!out.contains_key(header::AUTHORIZATION));
    }

    #[test]
    fn new_ids_are_lowercase_hex_of_the_w3c_and_request_id_shapes() {
        let mut n = [0u8; 8];
        hex(&mut n, 0xdead_beef);
        assert_eq!(&n, b"deadbeef");
        let t = new_traceparent();
        let parts: Vec<&str> = t.to_str().unwrap().split('-').collect();
        assert_eq!(parts.len(), 4);
        assert_eq!((parts[0], parts[3]), ("00", "01"));
        assert_eq!((parts[1].len(), parts[2].len()), (32, 16));
        let hexdigits = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        assert!(hexdigits(parts[1]) && hexdigits(parts[2]));
        // All-zero ids are invalid in W3C trace context.
        assert!(parts[1].bytes().any(|b| b != b'0') && parts[2].bytes().any(|b| b != b'0'));
        let id = request_id(&HeaderMap::new());
        assert_eq!(id.len(), 32);
        assert!(hexdigits(id.to_str().unwrap()));
        assert_ne!(id, request_id(&HeaderMap::new()));
    }

    #[test]
    fn keeps_a_client_traceparent_and_request_id() {
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_static("00-abc-def-01"));
        h.insert(REQUEST_ID, HeaderValue::from_static("mine"));
        let id = request_id(&h);
        assert_eq!(id, "mine");
        let out = upstream_request(&h, &id, None);
        assert_eq!(out[TRACEPARENT], "00-abc-def-01");
    }
}
