//! Client authentication: the presented key is hashed and looked up among the configured keys.

use http::{HeaderMap, header};

use crate::{
    error::ApiError,
    policy::{ClientKey, KeyDigest, Policy},
};

/// The caller's key: `Ok(None)` when no keys are configured (the API is
/// open), the matching key otherwise. The key itself is never stored or
/// logged; only its SHA-256 is compared, in constant time.
pub fn identify<'p>(
    policy: &'p Policy,
    headers: &HeaderMap,
) -> Result<Option<&'p ClientKey>, ApiError> {
    policy
        .identify(bearer(headers))
        .map_err(|_| ApiError::Unauthorized)
}

/// The key from `Authorization: Bearer KEY`, or from `api-key` as Azure-style SDKs send it.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        let (scheme, key) = v.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| key.trim());
    }
    headers.get("api-key")?.to_str().ok().map(str::trim)
}

/// The digest to put in a `[[keys]]` entry's `sha256` for a key.
pub fn hash_key(key: &str) -> String {
    hex::encode(KeyDigest::of(key).0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::KeySet;
    use http::HeaderValue;

    fn policy(list: &[&str]) -> Policy {
        let keys = list
            .iter()
            .map(|k| ClientKey::unlimited((*k).into(), KeyDigest::of(k)))
            .collect();
        Policy::new(KeySet::new(keys, &[], &mut vec![]), None)
    }

    fn with_auth(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn no_configured_keys_means_open() {
        assert!(identify(&policy(&[]), &HeaderMap::new()).unwrap().is_none());
    }

    #[test]
    fn accepts_a_configured_key_and_rejects_others() {
        let p = policy(&["sk-a", "sk-b"]);
        let name = |h| identify(&p, &h).map(|k| k.map(|k| k.name.clone()));
        assert_eq!(
            name(with_auth("Bearer sk-b")).unwrap().as_deref(),
            Some("sk-b")
        );
        assert!(name(with_auth("bearer sk-a")).is_ok());
        assert!(name(with_auth("Bearer sk-c")).is_err());
        assert!(name(with_auth("Basic sk-a")).is_err());
        assert!(name(HeaderMap::new()).is_err());
    }

    #[test]
    fn hash_key_matches_config_format() {
        assert_eq!(
            crate::policy::keys::parse_digest(&hash_key("sk-a")),
            Some(KeyDigest::of("sk-a"))
        );
    }
}
