//! Per-pool routing built once per config: weights, affinity and residency per pool, and explain.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use foldhash::HashMap;
use http::HeaderMap;
use tokio::time::Instant;

use crate::config::Config;
use crate::fleet::FleetView;
use crate::geo::GeoDb;
use crate::route::{AffinitySource, PoolRouting, RouteRequest, ScoreBreakdown, ScoreSelector};

/// Extra non-fallback entries an order keeps beyond the attempt limit: the
/// forwarder skips entries whose half-open trial slot another request took
/// without counting an attempt, so a few spares keep failover whole.
const SPARE_ENTRIES: usize = 3;

/// How one pool is routed.
#[derive(Debug)]
pub struct PoolRoute {
    selector: ScoreSelector,
    affinity: Option<AffinitySource>,
    regions: Option<Vec<String>>,
}

impl PoolRoute {
    fn new(p: &PoolRouting) -> Self {
        let mut selector = ScoreSelector::new(p.weights.clone());
        if p.affinity.is_some() {
            selector = selector.with_affinity(p.affinity_max_load);
        }
        Self {
            selector,
            affinity: p.affinity.clone(),
            regions: p.regions.clone(),
        }
    }

    pub fn selector(&self) -> &ScoreSelector {
        &self.selector
    }

    /// The pool's residency pin, if any.
    pub fn regions(&self) -> Option<&[String]> {
        self.regions.as_deref()
    }

    /// The regions a request may use under both the pool's pin and a
    /// client key's pin (`key`); `None` means anywhere. Both pinned and
    /// disjoint gives an empty list: nothing may serve, which is the point.
    pub fn allowed_regions<'a>(&'a self, key: Option<&'a [String]>) -> Option<Cow<'a, [String]>> {
        match (self.regions.as_deref(), key) {
            (None, None) => None,
            (Some(r), None) | (None, Some(r)) => Some(Cow::Borrowed(r)),
            (Some(pool), Some(key)) => Some(Cow::Owned(
                pool.iter().filter(|r| key.contains(r)).cloned().collect(),
            )),
        }
    }

    /// The request's session-affinity key when the pool enables affinity:
    /// the configured header (first value, if it is text) or the body's `user`.
    pub fn affinity_key<'a>(
        &self,
        headers: &'a HeaderMap,
        user: Option<&'a str>,
    ) -> Option<&'a str> {
        match self.affinity.as_ref()? {
            AffinitySource::User => user,
            AffinitySource::Header(name) => headers.get(name)?.to_str().ok(),
        }
        .filter(|k| !k.is_empty())
    }
}

/// Everything the request path needs to place a request, built from one
/// config. Building it cannot fail (the config was validated when parsed),
/// so a reload builds a new `Router` beside the old one and swaps it in.
#[derive(Debug)]
pub struct Router {
    fleet: FleetView,
    geo: Option<Arc<GeoDb>>,
    aliases: BTreeMap<String, String>,
    default: PoolRoute,
    /// By pool name (aliases in `[routing.pools]` resolved).
    pools: HashMap<String, PoolRoute>,
    explain_headers: bool,
    limit: usize,
}

impl Router {
    pub fn new(config: &Config, fleet: FleetView, geo: Option<Arc<GeoDb>>) -> Self {
        let routing = &config.routing;
        let default = PoolRoute::new(&PoolRouting {
            weights: routing.weights.clone(),
            affinity: None,
            affinity_max_load: 1.0,
            regions: None,
        });
        let pools = routing
            .pools
            .iter()
            .map(|(name, p)| {
                let pool = config.aliases.get(name).unwrap_or(name);
                (pool.clone(), PoolRoute::new(p))
            })
            .collect();
        Self {
            fleet,
            geo,
            aliases: config.aliases.clone(),
            default,
            pools,
            explain_headers: routing.explain_headers,
            limit: usize::try_from(config.retry.max_attempts)
                .unwrap_or(usize::MAX)
                .saturating_add(SPARE_ENTRIES),
        }
    }

    /// The pool a client-facing model name resolves to.
    pub fn pool_name<'a>(&'a self, model: &'a str) -> &'a str {
        self.aliases.get(model).map_or(model, String::as_str)
    }

    /// How `pool` (a resolved name) is routed.
    pub fn pool(&self, pool: &str) -> &PoolRoute {
        self.pools.get(pool).unwrap_or(&self.default)
    }

    /// Whether answers carry the `x-leasegate-*` explain headers.
    pub fn explain_headers(&self) -> bool {
        self.explain_headers
    }

    /// The most non-fallback entries an order needs.
    pub fn order_limit(&self) -> usize {
        self.limit
    }

    /// The ranked candidates of `model` (or an alias) for a client at
    /// `client_ip`, located with the GeoIP database (no database, no IP or
    /// an unknown IP: no geography term), with each score term. This is the
    /// admin API's `GET /admin/explain`.
    pub fn explain(&self, client_ip: Option<IpAddr>, model: &str) -> Vec<ScoreBreakdown> {
        let location = client_ip
            .and_then(|ip| self.geo.as_ref()?.lookup(ip))
            .map(|l| (l.lat, l.lon));
        self.explain_at(location, model, None)
    }

    /// [`Router::explain`] with the location given (e.g. from a region
    /// code) and a client key's residency pin applied on top of the pool's.
    pub fn explain_at(
        &self,
        location: Option<(f64, f64)>,
        model: &str,
        key_regions: Option<&[String]>,
    ) -> Vec<ScoreBreakdown> {
        let pool_name = self.pool_name(model);
        let pool = self.pool(pool_name);
        let allowed = pool.allowed_regions(key_regions);
        let req = RouteRequest {
            model: pool_name,
            client_location: location,
            affinity_key: None,
            allowed_regions: allowed.as_deref(),
            limit: None,
        };
        let state = self.fleet.current();
        pool.selector
            .explain(Instant::now(), &req, &state.candidates(pool_name))
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;
    use leasegate_fleet::Kind;

    use super::*;
    use crate::fleet::testing::{at, ep, view_with};
    use crate::route::{Placement, Selector, Tier};

    fn router(extra: &str) -> Router {
        let config = Config::parse(extra).unwrap();
        let view = view_with(vec![
            ep("fra", Kind::Lease, &["m"]),
            at(
                ep("tyo", Kind::Lease, &["m"]),
                "ap-northeast-1",
                35.7,
                139.7,
            ),
            at(ep("fb", Kind::Fallback, &["m"]), "us-east-1", 39.0, -77.5),
        ]);
        Router::new(&config, view, None)
    }

    #[test]
    fn pool_settings_follow_aliases_and_pin_explain_too() {
        let r = router(
            "[aliases]\ngpt = \"m\"\n[routing.pools.gpt]\nregions = [\"eu\"]\naffinity = \"header:x-session\"\n",
        );
        assert_eq!(r.pool_name("gpt"), "m");
        let pool = r.pool("m");
        assert!(pool.regions().unwrap().iter().any(|c| c == "eu-central"));
        let mut headers = HeaderMap::new();
        headers.insert("x-session", HeaderValue::from_static("s1"));
        assert_eq!(pool.affinity_key(&headers, Some("u")), Some("s1"));
        assert_eq!(r.pool("other").affinity_key(&headers, Some("u")), None);

        let rows = r.explain(None, "gpt");
        let tiers: Vec<(&str, Tier)> = rows.iter().map(|x| (x.endpoint.as_str(), x.tier)).collect();
        assert_eq!(
            tiers,
            [
                ("fra", Tier::Near),
                ("tyo", Tier::Excluded),
                ("fb", Tier::Excluded)
            ],
            "the pin excludes Tokyo and the US fallback"
        );
        assert_eq!(rows[1].excluded, Some("region not allowed"));
        // A key pin narrows the pool pin; disjoint pins allow nothing.
        let key = ["ap-northeast-1".to_owned()];
        assert!(
            r.explain_at(None, "m", Some(&key))
                .iter()
                .all(|x| x.tier == Tier::Excluded)
        );
    }

    #[test]
    fn the_order_says_why_each_entry_is_where_it_is() {
        let r = router("");
        let state = r.fleet.current();
        let req = RouteRequest {
            client_location: Some((50.1, 8.7)),
            limit: Some(r.order_limit()),
            ..RouteRequest::new("m")
        };
        let order = r.pool("m").selector().order(&req, &state.candidates("m"));
        let got: Vec<(&str, Placement)> = order
            .iter()
            .enumerate()
            .map(|(i, e)| (e.spec.id.as_str(), order.placement(i).unwrap()))
            .collect();
        assert_eq!(
            got,
            [
                ("fra", Placement::Near),
                ("tyo", Placement::Far),
                ("fb", Placement::Fallback)
            ]
        );
        assert_eq!(order.placement(3), None);
    }
}
