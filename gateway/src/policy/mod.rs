//! Tenant policy: client keys (stored as hashes), per-key rate limits and budgets, residency pins, the admin token.
//!
//! The request path asks, in order: who is calling ([`Policy::identify`]),
//! may they use this model ([`keys::ClientKey::allows_model`]), may they send
//! it now ([`limit::Limiter::admit`], before any endpoint is chosen), and
//! where may it be served ([`residency::allowed`], on every candidate). When
//! the response ends, the admission [`limit::Ticket`] is settled with the
//! real token usage and the cost.

pub mod admin_token;
pub mod answer;
pub mod clock;
pub mod keys;
pub mod limit;
pub mod residency;
pub mod stage;
pub mod usage;
mod window;

pub use admin_token::AdminToken;
pub use keys::{ClientKey, KeyDigest, KeyLimits, KeySet, RawClientKey};
pub use limit::{
    LimitExceeded, LimitHits, LimitKind, Limiter, Rate, Rates, Ticket, Usage, estimate_tokens,
};
pub use residency::Residency;
pub use window::WINDOW;

/// The keys and their limiter state: one immutable value, swapped whole on reload.
#[derive(Debug)]
pub struct Policy {
    pub keys: KeySet,
    pub limiter: Limiter,
}

/// The presented key matched none (or none was presented while keys are required).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("incorrect or missing API key")]
pub struct Unauthenticated;

impl Policy {
    /// Builds the policy for `keys`, carrying the counters of keys (by name)
    /// that `previous` already had, so a reload resets no limit.
    pub fn new(keys: KeySet, previous: Option<&Policy>) -> Self {
        let limiter = Limiter::new(
            keys.iter().map(|k| k.name.as_str()),
            previous.map(|p| &p.limiter),
        );
        Self { keys, limiter }
    }

    /// The caller's key. With no keys configured the API is open and the
    /// answer is `Ok(None)`; otherwise a key must be presented and match.
    pub fn identify(&self, presented: Option<&str>) -> Result<Option<&ClientKey>, Unauthenticated> {
        if self.keys.is_empty() {
            return Ok(None);
        }
        presented
            .and_then(|k| self.keys.authenticate(k))
            .map(Some)
            .ok_or(Unauthenticated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names_and_keys: &[(&str, &str)]) -> KeySet {
        let keys = names_and_keys
            .iter()
            .map(|(n, k)| ClientKey::unlimited((*n).into(), KeyDigest::of(k)))
            .collect();
        KeySet::new(keys, &[], &mut vec![])
    }

    #[test]
    fn no_keys_means_open_and_keys_mean_required() {
        let open = Policy::new(KeySet::default(), None);
        assert_eq!(open.identify(None), Ok(None));
        assert_eq!(open.identify(Some("anything")), Ok(None));

        let closed = Policy::new(set(&[("a", "lg-a"), ("b", "lg-b")]), None);
        assert_eq!(closed.identify(Some("lg-b")).unwrap().unwrap().name, "b");
        assert_eq!(closed.identify(Some("lg-c")), Err(Unauthenticated));
        assert_eq!(closed.identify(None), Err(Unauthenticated));
    }

    #[test]
    fn a_rebuilt_policy_keeps_the_counters_of_keys_that_stay() {
        let old = Policy::new(set(&[("a", "lg-a")]), None);
        let a = old.identify(Some("lg-a")).unwrap().unwrap().clone();
        old.limiter.admit(&a, 10).unwrap();
        // Same name, rotated key: the tenant's usage stays with it.
        let new = Policy::new(set(&[("a", "lg-a2")]), Some(&old));
        assert_eq!(new.limiter.usage("a").unwrap().requests_last_minute, 1);
    }
}
