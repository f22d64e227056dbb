//! Tiered selection on expected latency: near regions, far regions, fallbacks; p2c within a tier.

use std::sync::Arc;

use leasegate_fleet::Kind;
use tokio::time::Instant;

use crate::fleet::{Candidates, EndpointHandle};
use crate::route::affinity::Affinity;
use crate::route::p2c::pick_two;
use crate::route::score::{RoutingWeights, ScoreBreakdown, Terms, Tier, terms};
use crate::route::{Order, RouteRequest, Selector, eligible_fallbacks, permitted};

/// Ring points visited looking for the affinity target: with 160 points per
/// endpoint, enough to pass every node of a large pool several times.
const MAX_RING_STEPS: usize = 4096;

/// Orders candidates by tier, then by power of two choices on the score.
///
/// The near tier holds every region whose best endpoint scores within
/// `near_tolerance_ms` of the best endpoint overall. Because the score
/// includes the distance estimate, that is the client's nearest region(s)
/// while they perform; once a near region is slow, overloaded or failing,
/// its score rises past a farther region's and traffic moves there, and it
/// moves back as the measurements decay or improve. Build one selector per
/// pool to give pools their own weights.
#[derive(Clone, Debug, Default)]
pub struct ScoreSelector {
    weights: RoutingWeights,
    affinity: Option<Affinity>,
}

/// One available candidate on the hot path: kept to 24 bytes so the sort
/// moves little, with tier and score folded into one integer key.
struct Ranked<'a> {
    handle: &'a Arc<EndpointHandle>,
    score: f64,
    /// Far-tier bit on top of the score's bits. Scores are finite or +inf
    /// and never negative, and such floats order like their bit patterns.
    key: u64,
}

const FAR_BIT: u64 = 1 << 63;

impl Ranked<'_> {
    fn tier(&self) -> Tier {
        if self.key & FAR_BIT == 0 {
            Tier::Near
        } else {
            Tier::Far
        }
    }
}

/// A candidate with everything the explain answer shows.
struct Entry<'a> {
    handle: &'a Arc<EndpointHandle>,
    tier: Tier,
    terms: Terms,
    score: f64,
    distance_km: Option<f64>,
}

impl ScoreSelector {
    pub fn new(weights: RoutingWeights) -> Self {
        Self {
            weights,
            affinity: None,
        }
    }

    /// Enables session affinity (see [`Affinity`]): requests carrying a key
    /// go first to the key's endpoint on the consistent-hash ring.
    pub fn with_affinity(mut self, max_load: f64) -> Self {
        self.affinity = Some(Affinity::new(max_load));
        self
    }

    pub fn weights(&self) -> &RoutingWeights {
        &self.weights
    }

    /// [`Selector::order`] with the random source and clock supplied.
    ///
    /// With `req.limit` set only that many non-fallback entries are kept:
    /// every candidate is still scored (tiers need each region's best), but
    /// only the kept ones are sorted and handed out, which is most of the
    /// cost of a decision over a large pool. The near tier's power-of-two
    /// pick is drawn from the whole tier before the cut, so load spreads
    /// over all of it, not only over its best few.
    pub fn order_with(
        &self,
        rng: &mut fastrand::Rng,
        now: Instant,
        req: &RouteRequest<'_>,
        c: &Candidates<'_>,
    ) -> Order {
        let limit = req.limit.unwrap_or(usize::MAX).max(1);
        let mut entries = self.rank(now, req, c);
        let mut out = Order::with_capacity(entries.len().min(limit) + c.fallback.len());
        if let (Some(a), Some(key)) = (&self.affinity, req.affinity_key) {
            // `entries` holds only available, permitted endpoints, so finding
            // the target there is the eligibility check.
            let sticky = c
                .affinity_walk(key)
                .take(MAX_RING_STEPS)
                .find_map(|t| {
                    entries
                        .iter()
                        .position(|e| e.key & FAR_BIT == 0 && Arc::ptr_eq(e.handle, t))
                })
                .filter(|&i| entries.get(i).is_some_and(|e| e.handle.load() < a.max_load));
            if let Some(i) = sticky {
                out.push_sticky(entries.swap_remove(i).handle);
            }
        }
        let near = partition(&mut entries, |e| e.key & FAR_BIT == 0);
        let mut head = 0;
        if let Some(k) = pick_two(rng, near, |i| entries[i].score) {
            entries.swap(0, k);
            head = 1;
        }
        let room = limit.saturating_sub(out.len() + head);
        let rest = &mut entries[head..];
        if rest.len() > room {
            if let Some(last) = room.checked_sub(1) {
                rest.select_nth_unstable_by_key(last, |e| e.key);
            }
            let keep = head + room;
            entries.truncate(keep);
        }
        let rest = &mut entries[head..];
        rest.sort_unstable_by_key(|e| e.key);
        let far_start = rest.partition_point(|e| e.key & FAR_BIT == 0);
        let far = &mut rest[far_start..];
        if let Some(k) = pick_two(rng, far.len(), |i| far[i].score) {
            // Rotating keeps the rest of the tier sorted by score.
            far[..=k].rotate_right(1);
        }
        let near_kept = head + far_start;
        for (i, e) in entries.iter().enumerate() {
            out.push_primary(e.handle, i < near_kept);
        }
        for f in eligible_fallbacks(req, c, now) {
            out.push_fallback(f);
        }
        out
    }

    /// Available, permitted non-fallback candidates with their tier and
    /// score, in candidate order.
    fn rank<'a>(
        &self,
        now: Instant,
        req: &RouteRequest<'_>,
        c: &Candidates<'a>,
    ) -> Vec<Ranked<'a>> {
        let mut regions = RegionMemo::new(c, req.client_location);
        // Sized up front: collecting from a filter would grow the vector
        // from a handful of slots, reallocating several times per decision.
        let mut entries: Vec<Ranked<'a>> = Vec::with_capacity(c.primary.len());
        let mut best = f64::INFINITY;
        for h in c.primary {
            if !(permitted(req, h) && h.is_available_at(now)) {
                continue;
            }
            let score = terms(&self.weights, h, regions.distance(h), now).total();
            best = best.min(score);
            if let Some(slot) = regions.best.get_mut(h.region_idx) {
                *slot = slot.min(score);
            }
            entries.push(Ranked {
                handle: h,
                score,
                key: score.to_bits(),
            });
        }
        let cutoff = best + self.weights.near_tolerance_ms;
        for e in &mut entries {
            let region_best = regions.best.get(e.handle.region_idx).copied();
            // Written so that a NaN lands in the far tier.
            if !region_best.is_some_and(|b| b <= cutoff) {
                e.key |= FAR_BIT;
            }
        }
        entries
    }

    fn entry<'a>(
        &self,
        h: &'a Arc<EndpointHandle>,
        regions: &mut RegionMemo<'_>,
        now: Instant,
    ) -> Entry<'a> {
        let distance_km = regions.distance(h);
        let terms = terms(&self.weights, h, distance_km, now);
        Entry {
            handle: h,
            tier: Tier::Near,
            terms,
            score: terms.total(),
            distance_km,
        }
    }

    /// Every candidate, fallbacks and excluded ones included, in the order
    /// they would be tried (without the random p2c swap), with each term.
    pub fn explain(
        &self,
        now: Instant,
        req: &RouteRequest<'_>,
        c: &Candidates<'_>,
    ) -> Vec<ScoreBreakdown> {
        let mut ranked = self.rank(now, req, c);
        ranked.sort_unstable_by_key(|e| e.key);
        let mut regions = RegionMemo::new(c, req.client_location);
        let mut rows: Vec<ScoreBreakdown> = ranked
            .iter()
            .map(|r| {
                let mut e = self.entry(r.handle, &mut regions, now);
                e.tier = r.tier();
                row(&e, now, None)
            })
            .collect();
        for h in c.primary.iter().chain(c.fallback.iter()) {
            if ranked.iter().any(|e| Arc::ptr_eq(e.handle, h)) {
                continue;
            }
            let mut e = self.entry(h, &mut regions, now);
            let why = if !permitted(req, h) {
                Some("region not allowed")
            } else if !h.probe_ok() {
                Some("failing probes")
            } else if !h.is_available_at(now) {
                Some("ejected")
            } else {
                None
            };
            e.tier = match (why, h.spec.kind) {
                (Some(_), _) => Tier::Excluded,
                (None, Kind::Fallback) => Tier::Fallback,
                (None, Kind::Lease | Kind::Static) => Tier::Excluded,
            };
            rows.push(row(&e, now, why));
        }
        // Stable sort on the tier alone keeps fallbacks in config order.
        rows.sort_by_key(|r| r.tier);
        rows
    }
}

fn row(e: &Entry<'_>, now: Instant, excluded: Option<&'static str>) -> ScoreBreakdown {
    let h = e.handle;
    ScoreBreakdown {
        endpoint: h.spec.id.clone(),
        region: h.spec.region.code.clone(),
        tier: e.tier,
        excluded,
        distance_km: e.distance_km,
        in_flight: h.in_flight(),
        max_concurrency: h.spec.max_concurrency,
        queue_depth: h.queue_depth(),
        error_rate: h.error_rate(now),
        terms: e.terms,
        score_ms: e.score,
    }
}

impl Selector for ScoreSelector {
    fn order(&self, req: &RouteRequest<'_>, candidates: &Candidates<'_>) -> Order {
        let mut rng = fastrand::Rng::with_seed(fastrand::u64(..));
        self.order_with(&mut rng, Instant::now(), req, candidates)
    }
}

/// Moves the entries matching `pred` to the front, returning their count.
fn partition<T>(v: &mut [T], pred: impl Fn(&T) -> bool) -> usize {
    let mut n = 0;
    for i in 0..v.len() {
        if pred(&v[i]) {
            v.swap(n, i);
            n += 1;
        }
    }
    n
}

/// Per-request, per-region memo: endpoints share their region's distance
/// (computed once, on first use) and the region's best score.
struct RegionMemo<'c> {
    candidates: &'c Candidates<'c>,
    client: Option<(f64, f64)>,
    /// NaN until computed.
    distance: Vec<f64>,
    best: Vec<f64>,
}

impl<'c> RegionMemo<'c> {
    fn new(candidates: &'c Candidates<'c>, client: Option<(f64, f64)>) -> Self {
        let n = candidates.region_count();
        Self {
            candidates,
            client,
            distance: if client.is_some() {
                vec![f64::NAN; n]
            } else {
                Vec::new()
            },
            best: vec![f64::INFINITY; n],
        }
    }

    fn distance(&mut self, h: &EndpointHandle) -> Option<f64> {
        let client = self.client?;
        let slot = self.distance.get_mut(h.region_idx)?;
        if slot.is_nan() {
            *slot = self.candidates.distance_km(h, client)?;
        }
        // A non-finite distance (bad coordinates) is an unknown location.
        Some(*slot).filter(|d| d.is_finite())
    }
}
