//! What the admin API shows: JSON views of the fleet, endpoints and config, built field by field so no secret can slip in.
//!
//! Nothing here serializes a fleet or config type directly: `Secret`
//! serializes its value (the fleet feed needs that), so every view names the
//! fields it shows. Credentials appear as the environment variable they come
//! from or as `<redacted>`; client keys by name, without their digest.

use std::collections::HashMap;

use leasegate_fleet::{Credential, Endpoint, Kind, Region};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::{
    config::{Config, RegionSpec},
    fleet::{EndpointHandle, FleetState},
    policy::Policy,
    reload::{Live, ReloadStatus},
    route::{RouteRequest, ScoreSelector},
};

/// A URL as shown: without any `user:password@` part.
fn shown_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string().trim_end_matches('/').to_owned()
        }
        Err(_) => "<unparsable>".into(),
    }
}

fn credential(c: Option<&Credential>) -> Value {
    match c {
        None => Value::Null,
        Some(Credential::Env { var }) => json!({ "env": var }),
        Some(Credential::Key { .. }) => json!("<redacted>"),
    }
}

fn kind(k: Kind) -> &'static str {
    match k {
        Kind::Lease => "lease",
        Kind::Static => "static",
        Kind::Fallback => "fallback",
    }
}

fn region(r: &Region) -> Value {
    // Unknown coordinates travel as NaN; serde_json shows them as null.
    json!({ "code": r.code, "country": r.country, "lat": r.lat, "lon": r.lon })
}

/// One endpoint of the fleet, as the snapshot describes it.
pub fn endpoint(e: &Endpoint) -> Value {
    json!({
        "id": e.id,
        "url": shown_url(&e.url),
        "kind": kind(e.kind),
        "engine": serde_json::to_value(e.engine).unwrap_or(Value::Null),
        "models": e.models,
        "region": region(&e.region),
        "provider": e.provider.as_ref().map(|p| json!({
            "id": p.id, "name": p.name, "audited": p.audited, "uptime": p.uptime,
        })),
        "price_per_hour_usd": e.price_per_hour_usd,
        "max_concurrency": e.max_concurrency,
        "state": serde_json::to_value(e.state).unwrap_or(Value::Null),
        "credential": credential(e.credential.as_ref()),
    })
}

/// `GET /admin/fleet`.
pub fn fleet(state: &FleetState) -> Value {
    let snap = state.snapshot();
    json!({
        "version": snap.version,
        "generated_at_ms": snap.generated_at_ms,
        "endpoints": snap.endpoints.iter().map(endpoint).collect::<Vec<_>>(),
    })
}

/// Live health of one endpoint.
pub fn health(h: &EndpointHandle, drained: bool, now: Instant) -> Value {
    json!({
        "available": h.is_available_at(now),
        "breaker": serde_json::to_value(h.breaker_state()).unwrap_or(Value::Null),
        "probe_ok": h.probe_ok(),
        "in_flight": h.in_flight(),
        "load": h.load(),
        "queue_depth": h.queue_depth(),
        "ttfb_ewma_ms": h.ttfb_ewma_ms(now).map(|(ms, _)| ms),
        "error_rate": h.error_rate(now),
        "drained": drained,
    })
}

/// Each endpoint's current score terms for a client of unknown location,
/// by endpoint id, as the running weights compute them.
fn scores(live: &Live, state: &FleetState, now: Instant) -> HashMap<String, Value> {
    let shared = live.current();
    let selector = ScoreSelector::new(shared.config.routing.weights.clone());
    let mut out = HashMap::new();
    for model in state.endpoints().iter().flat_map(|e| e.spec.models.iter()) {
        if out.len() == state.endpoints().len() {
            break;
        }
        let candidates = state.candidates(model);
        for row in selector.explain(now, &RouteRequest::new(model), &candidates) {
            out.entry(row.endpoint.clone()).or_insert_with(
                || json!({ "tier": row.tier, "terms": row.terms, "score_ms": row.score_ms }),
            );
        }
    }
    out
}

/// `GET /admin/endpoints`.
pub fn endpoints(live: &Live) -> Value {
    let state = live.fleet().current();
    let now = Instant::now();
    let mut scores = scores(live, &state, now);
    let list: Vec<Value> = state
        .endpoints()
        .iter()
        .map(|h| {
            let mut v = endpoint(&h.spec);
            if let Some(obj) = v.as_object_mut() {
                obj.insert("health".into(), health(h, live.is_drained(&h.spec.id), now));
                let score = scores.remove(&h.spec.id).unwrap_or(Value::Null);
                obj.insert("score".into(), score);
            }
            v
        })
        .collect();
    json!({ "version": state.version(), "endpoints": list })
}

fn region_spec(r: &RegionSpec) -> Value {
    json!({ "code": r.code, "lat": r.coords.map(|c| c.0), "lon": r.coords.map(|c| c.1) })
}

fn keys(policy: &Policy) -> Vec<Value> {
    policy
        .keys
        .iter()
        .map(|k| {
            json!({
                "name": k.name,
                "allowed_models": k.allowed_models,
                "requests_per_minute": k.limits.requests_per_minute.map(|n| n.get()),
                "tokens_per_minute": k.limits.tokens_per_minute.map(|n| n.get()),
                "budget_usd_per_day": k.limits.budget_usd_per_day,
                "regions": k.residency.to_string(),
                "allow_region_header": k.allow_region_header,
                "usage": policy.limiter.usage(&k.name),
            })
        })
        .collect()
}

fn duration(d: std::time::Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// `GET /admin/config`: the running config, redacted, and the reload status.
pub fn config(c: &Config, policy: &Policy, admin_token_set: bool, status: &ReloadStatus) -> Value {
    let t = &c.timeouts;
    json!({
        "status": status,
        "config": {
            "listen": {
                "api": c.listen.api.to_string(),
                "admin": c.listen.admin.to_string(),
                "tls": c.listen.tls.as_ref().map(|t| json!({
                    "cert": t.cert.display().to_string(),
                    "key": t.key.display().to_string(),
                })),
            },
            "timeouts": {
                "connect": duration(t.connect), "headers": duration(t.headers),
                "first_token": duration(t.first_token), "inter_chunk": duration(t.inter_chunk),
                "total": duration(t.total), "header_read": duration(t.header_read),
                "drain": duration(t.drain),
            },
            "retry": {
                "max_attempts": c.retry.max_attempts,
                "budget_ratio": c.retry.budget_ratio,
                "budget_min_per_sec": c.retry.budget_min_per_sec,
            },
            "limits": {
                "max_body_bytes": c.limits.max_body_bytes,
                "max_concurrency": c.limits.max_concurrency,
            },
            "aliases": c.aliases,
            "endpoints": c.endpoints.iter().map(|e| json!({
                "id": e.id, "url": shown_url(e.url.as_str()), "models": e.models,
                "engine": serde_json::to_value(e.engine).unwrap_or(Value::Null),
                "region": region_spec(&e.region), "price_per_hour_usd": e.price_per_hour_usd,
                "max_concurrency": e.max_concurrency, "credential": credential(e.credential.as_ref()),
            })).collect::<Vec<_>>(),
            "fallbacks": c.fallbacks.iter().map(|f| json!({
                "id": f.id, "url": shown_url(f.url.as_str()), "models": f.models,
                "price_per_1m_input_usd": f.price_per_1m_input_usd,
                "price_per_1m_output_usd": f.price_per_1m_output_usd,
                "region": region_spec(&f.region), "max_concurrency": f.max_concurrency,
                "credential": credential(f.credential.as_ref()),
            })).collect::<Vec<_>>(),
            "keys": keys(policy),
            "admin": { "token_env": c.admin.token_env, "token_configured": admin_token_set },
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_userinfo() {
        assert_eq!(
            shown_url("https://user:hunter2@api.example.com/v1"),
            "https://api.example.com/v1"
        );
        assert_eq!(shown_url("http://127.0.0.1:9"), "http://127.0.0.1:9");
    }

    #[test]
    fn inline_keys_are_redacted_and_env_keys_named() {
        let key = Credential::Key {
            key: leasegate_fleet::Secret::new("sk-inline"),
        };
        assert_eq!(credential(Some(&key)), json!("<redacted>"));
        let env = Credential::Env { var: "K".into() };
        assert_eq!(credential(Some(&env)), json!({ "env": "K" }));
    }
}
