//! Power of two choices on load among available non-fallback endpoints.

use std::sync::Arc;

use tokio::time::Instant;

use crate::fleet::{Candidates, EndpointHandle};
use crate::route::{Order, RouteRequest, Selector, eligible_fallbacks, permitted};

/// Picks two distinct random available non-fallback candidates and puts the
/// less loaded first; the other available ones follow by load, then the
/// available fallbacks in config order.
///
/// Two random choices avoid the herd effect of "always the least loaded"
/// when many gateways act on the same stale view, yet spread load nearly as
/// well (Mitzenmacher, "The Power of Two Choices in Randomized Load Balancing").
#[derive(Clone, Copy, Debug, Default)]
pub struct PowerOfTwo;

impl PowerOfTwo {
    /// [`Selector::order`] with the random source and the clock supplied, for
    /// deterministic tests.
    pub fn order_with(
        &self,
        rng: &mut fastrand::Rng,
        now: Instant,
        req: &RouteRequest<'_>,
        candidates: &Candidates<'_>,
    ) -> Order {
        let mut primary: Vec<(f64, &Arc<EndpointHandle>)> = candidates
            .primary
            .iter()
            .filter(|e| permitted(req, e) && e.is_available_at(now))
            .map(|e| (e.load(), e))
            .collect();
        let mut out = Order::with_capacity(primary.len() + candidates.fallback.len());
        if let Some(first) = pick_two(rng, primary.len(), |i| primary[i].0) {
            let (_, winner) = primary.swap_remove(first);
            out.push_primary(winner, true);
            primary.sort_by(|a, b| a.0.total_cmp(&b.0));
            for (_, e) in primary {
                out.push_primary(e, true);
            }
        }
        for f in eligible_fallbacks(req, candidates, now) {
            out.push_fallback(f);
        }
        out
    }
}

impl Selector for PowerOfTwo {
    fn order(&self, req: &RouteRequest<'_>, candidates: &Candidates<'_>) -> Order {
        let mut rng = fastrand::Rng::with_seed(fastrand::u64(..));
        self.order_with(&mut rng, Instant::now(), req, candidates)
    }
}

/// Index of the better (lower `cost`) of two distinct random picks among
/// `n`; `None` when `n == 0`. Equal costs keep the first pick, which is
/// itself random, so ties spread evenly.
pub(crate) fn pick_two(
    rng: &mut fastrand::Rng,
    n: usize,
    cost: impl Fn(usize) -> f64,
) -> Option<usize> {
    match n {
        0 => None,
        1 => Some(0),
        _ => {
            let a = rng.usize(..n);
            let mut b = rng.usize(..n - 1);
            if b >= a {
                b += 1;
            }
            Some(if cost(b).total_cmp(&cost(a)).is_lt() {
                b
            } else {
                a
            })
        }
    }
}
