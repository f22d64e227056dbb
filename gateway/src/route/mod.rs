//! Choosing endpoints: the `Selector` seam and its implementations.

mod affinity;
mod config;
mod distance;
mod order;
mod p2c;
mod router;
mod score;
mod scored;

use std::sync::Arc;

pub use affinity::{Affinity, Ring};
pub use config::{AffinitySource, PoolRouting, RoutingConfig, RoutingProblem};
pub use distance::haversine_km;
pub use order::{Order, Placement};
pub use p2c::PowerOfTwo;
pub use router::{PoolRoute, Router};
pub use score::{RoutingWeights, ScoreBreakdown, Terms, Tier, WeightError};
pub use scored::ScoreSelector;

use crate::fleet::{Candidates, EndpointHandle};

/// What a selector may know about the request being routed.
#[derive(Clone, Copy, Debug, Default)]
pub struct RouteRequest<'a> {
    /// The model (pool) name the candidates were taken for.
    pub model: &'a str,
    /// Client position as (latitude, longitude) in degrees; `None` means
    /// no geography term, not an error.
    pub client_location: Option<(f64, f64)>,
    /// Session-affinity key (a header value or the body's `user`), if the
    /// pool enables affinity.
    pub affinity_key: Option<&'a str>,
    /// Residency: when set, only endpoints (fallbacks included) whose
    /// region code is listed may be returned.
    pub allowed_regions: Option<&'a [String]>,
    /// Keep at most this many non-fallback endpoints in the order (the
    /// forwarder never tries more than its attempt limit); `None`: all.
    pub limit: Option<usize>,
}

impl<'a> RouteRequest<'a> {
    pub fn new(model: &'a str) -> Self {
        Self {
            model,
            ..Self::default()
        }
    }
}

/// Orders the candidates of one request into the sequence to attempt.
///
/// Called once per client request, after authentication and candidate
/// filtering and before the first upstream attempt; the forwarder walks the
/// returned order, calling [`EndpointHandle::try_begin`] on each entry right
/// before it connects and moving on when that refuses or the attempt fails.
/// It must be cheap (no I/O, no awaiting, no locks held between calls), must
/// only return endpoints that were available when called, and puts fallbacks
/// after every non-fallback endpoint. An empty order means "nothing can
/// serve this now" (503).
pub trait Selector: Send + Sync + std::fmt::Debug {
    fn order(&self, req: &RouteRequest<'_>, candidates: &Candidates<'_>) -> Order;
}

/// Whether residency rules let `req` go to `e`.
pub(crate) fn permitted(req: &RouteRequest<'_>, e: &EndpointHandle) -> bool {
    req.allowed_regions
        .is_none_or(|allowed| allowed.contains(&e.spec.region.code))
}

/// The fallbacks `req` may use now, in config order: every selector ends with them.
pub(crate) fn eligible_fallbacks<'a>(
    req: &'a RouteRequest<'_>,
    c: &Candidates<'a>,
    now: tokio::time::Instant,
) -> impl Iterator<Item = Arc<EndpointHandle>> + 'a {
    c.fallback
        .iter()
        .filter(move |e| permitted(req, e) && e.is_available_at(now))
        .cloned()
}

#[cfg(test)]
mod scored_tests;
#[cfg(test)]
mod tests;
