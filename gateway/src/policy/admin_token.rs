//! The admin API's bearer token: read once from the environment variable the config names, kept only as a digest.

use std::fmt;

use http::HeaderMap;

use super::keys::KeyDigest;
use crate::auth::bearer;

/// Shorter tokens are refused at load: the admin API can drain the fleet.
pub const MIN_TOKEN_LEN: usize = 16;

/// The digest of the admin token.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(KeyDigest);

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// Why the configured token cannot be used. Never contains the token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdminTokenError {
    #[error("environment variable `{0}` is not set (or not UTF-8)")]
    Unset(String),
    #[error("the token in `{var}` is shorter than {min} characters")]
    TooShort { var: String, min: usize },
}

impl AdminToken {
    /// Reads the token from the environment variable `var`.
    pub fn from_env(var: &str) -> Result<Self, AdminTokenError> {
        let token = std::env::var(var).map_err(|_| AdminTokenError::Unset(var.to_owned()))?;
        Self::from_value(var, token.trim())
    }

    /// `var` only names the source in errors.
    pub fn from_value(var: &str, token: &str) -> Result<Self, AdminTokenError> {
        if token.len() < MIN_TOKEN_LEN {
            return Err(AdminTokenError::TooShort {
                var: var.to_owned(),
                min: MIN_TOKEN_LEN,
            });
        }
        Ok(Self(KeyDigest::of(token)))
    }

    /// Whether the request carries `Authorization: Bearer <this token>`.
    /// Digests are compared in constant time, never the token itself.
    pub fn check(&self, headers: &HeaderMap) -> bool {
        bearer(headers).is_some_and(|t| KeyDigest::of(t).ct_eq(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderValue, header};

    const TOKEN: &str = "admin-token-0123456789";

    fn with(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn only_the_right_bearer_token_passes() {
        let t = AdminToken::from_value("X", TOKEN).unwrap();
        assert!(t.check(&with(&format!("Bearer {TOKEN}"))));
        assert!(!t.check(&with("Bearer admin-token-0123456780")));
        assert!(!t.check(&with(&format!("Basic {TOKEN}"))));
        assert!(!t.check(&HeaderMap::new()));
    }

    #[test]
    fn short_or_missing_tokens_are_refused_without_echoing_them() {
        let e = AdminToken::from_value("ADMIN", "tiny").unwrap_err();
        assert!(!e.to_string().contains("tiny"), "{e}");
        let e = AdminToken::from_env("LEASEGATE_TEST_SURELY_UNSET_VAR").unwrap_err();
        assert_eq!(
            e,
            AdminTokenError::Unset("LEASEGATE_TEST_SURELY_UNSET_VAR".into())
        );
        assert!(!format!("{:?}", AdminToken::from_value("X", TOKEN).unwrap()).contains(TOKEN));
    }
}
