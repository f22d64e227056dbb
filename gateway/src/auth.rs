//! Client authentication: the presented key is hashed and compared with the configured digests.

use http::{HeaderMap, header};
use sha2::{Digest, Sha256};

use crate::{config::ClientKeys, error::ApiError};

/// Accepts the request when no keys are configured or when its bearer key's
/// SHA-256 matches one of them. The key itself is never stored or logged.
pub fn check(keys: &ClientKeys, headers: &HeaderMap) -> Result<(), ApiError> {
    if keys.0.is_empty() {
        return Ok(());
    }
    let presented = bearer(headers).ok_or(ApiError::Unauthorized)?;
    let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    // Compare against every configured digest without an early exit, so the
    // time taken says nothing about which key or byte matched.
    let matched = keys
        .0
        .iter()
        .fold(false, |acc, k| acc | constant_time_eq(k, &digest));
    if matched {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// The key from `Authorization: Bearer KEY`, or from `api-key` as Azure-style SDKs send it.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        let (scheme, key) = v.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| key.trim());
    }
    headers.get("api-key")?.to_str().ok().map(str::trim)
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The digest to put in `auth.client_key_sha256` for a key.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn keys(list: &[&str]) -> ClientKeys {
        ClientKeys(
            list.iter()
                .map(|k| Sha256::digest(k.as_bytes()).into())
                .collect(),
        )
    }

    fn with_auth(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn no_configured_keys_means_open() {
        assert!(check(&ClientKeys::default(), &HeaderMap::new()).is_ok());
    }

    #[test]
    fn accepts_a_configured_key_and_rejects_others() {
        let k = keys(&["sk-a", "sk-b"]);
        assert!(check(&k, &with_auth("Bearer sk-b")).is_ok());
        assert!(check(&k, &with_auth("bearer sk-a")).is_ok());
        assert!(check(&k, &with_auth("Bearer sk-c")).is_err());
        assert!(check(&k, &with_auth("Basic sk-a")).is_err());
        assert!(check(&k, &HeaderMap::new()).is_err());
    }

    #[test]
    fn hash_key_matches_config_format() {
        let mut digest = [0u8; 32];
        hex::decode_to_slice(hash_key("sk-a"), &mut digest).unwrap();
        assert!(check(&ClientKeys(vec![digest]), &with_auth("Bearer sk-a")).is_ok());
    }
}
