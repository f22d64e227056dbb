//! The fake Console's endpoints: one function per route family, each
//! answering in the spec's shape.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::model::{Dep, LeaseRec, SdlFacts, World};
use crate::{Control, Inner, control};

pub(crate) fn reply(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

pub(crate) fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    reply(
        status,
        &json!({"error": status.canonical_reason().unwrap_or("Error"), "message": message}),
    )
}

fn param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

pub(crate) async fn route(
    inner: &Inner,
    method: &Method,
    path: &str,
    query: &str,
    body: Option<Value>,
) -> Response<Full<Bytes>> {
    let now = Instant::now();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let data = |v: Value| reply(StatusCode::OK, &json!({ "data": v }));
    match (method, segs.as_slice()) {
        (&Method::GET, ["_ledger"]) => {
            let mut w = inner.world.lock();
            w.tick(now);
            reply(StatusCode::OK, &json!(w.ledger()))
        }
        (&Method::POST, ["_control"]) => {
            match body.and_then(|b| serde_json::from_value::<Control>(b).ok()) {
                Some(c) => match control(inner, c) {
                    Ok(()) => reply(StatusCode::OK, &json!({"ok": true})),
                    Err(e) => error(StatusCode::NOT_FOUND, &e),
                },
                None => error(StatusCode::BAD_REQUEST, "expected a control op"),
            }
        }
        (&Method::GET, ["v1", "providers"]) => {
            let w = inner.world.lock();
            reply(
                StatusCode::OK,
                &Value::Array(w.providers.iter().map(World::provider_json).collect()),
            )
        }
        (&Method::GET, ["v1", "blocks"]) => {
            let w = inner.world.lock();
            let h = w.height(now);
            reply(
                StatusCode::OK,
                &json!([{
                "height": h, "proposer": {"address": "fake", "operatorAddress": "fake", "moniker": "fake", "avatarUrl": null},
                "transactionCount": 0, "totalTransactionCount": 0, "datetime": "2026-01-01T00:00:00.000Z"}]),
            )
        }
        (&Method::POST, ["v1", "deployments"]) => {
            let Some(sdl) = body
                .as_ref()
                .and_then(|b| b.pointer("/data/sdl"))
                .and_then(Value::as_str)
            else {
                return error(StatusCode::BAD_REQUEST, "data.sdl is required");
            };
            let facts = match SdlFacts::parse(sdl) {
                Ok(f) => f,
                Err(e) => return error(StatusCode::BAD_REQUEST, &e),
            };
            let deposit = body
                .as_ref()
                .and_then(|b| b.pointer("/data/deposit"))
                .and_then(Value::as_f64);
            let mut w = inner.world.lock();
            w.tick(now);
            let dseq = w.next_dseq;
            w.next_dseq += 1;
            let manifest = facts.manifest();
            let funds = deposit.map_or(w.initial_funds_uact, |usd| usd * 1e6);
            let settled = w.height(now);
            w.deps.insert(
                dseq,
                Dep {
                    dseq,
                    facts,
                    created: now,
                    closed: None,
                    funds,
                    settled_height: settled,
                    lease: None,
                    unreachable: false,
                    auto_top_up: true,
                },
            );
            reply(
                StatusCode::CREATED,
                &json!({"data": {
                "dseq": dseq.to_string(), "manifest": manifest,
                "signTx": {"code": 0, "transactionHash": format!("FAKETX{dseq}"), "rawLog": ""}}}),
            )
        }
        (&Method::GET, ["v1", "deployments"]) => {
            let skip: usize = param(query, "skip")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let limit: usize = param(query, "limit")
                .and_then(|s| s.parse().ok())
                .unwrap_or(1000)
                .max(1);
            let mut w = inner.world.lock();
            w.tick(now);
            let total = w.deps.len();
            let items: Vec<Value> = w
                .deps
                .values()
                .skip(skip)
                .take(limit)
                .map(|d| w.list_item_json(d, now))
                .collect();
            data(json!({"deployments": items, "pagination": {
                "total": total, "skip": skip, "limit": limit, "hasMore": skip + limit < total}}))
        }
        (_, ["v1", "deployments", dseq]) => deployment_call(inner, method, dseq, now),
        (&Method::GET, ["v1", "deployment", _owner, dseq]) => {
            let mut w = inner.world.lock();
            w.tick(now);
            match dseq.parse::<u64>().ok().and_then(|n| w.deps.get(&n)) {
                Some(d) => reply(StatusCode::OK, &w.detail_json(d, now)),
                None => error(StatusCode::NOT_FOUND, "deployment not found"),
            }
        }
        (&Method::GET, ["v1", "bids"]) => {
            let mut w = inner.world.lock();
            w.tick(now);
            match param(query, "dseq")
                .and_then(|d| d.parse::<u64>().ok())
                .and_then(|n| w.deps.get(&n))
            {
                Some(d) => data(Value::Array(w.bids_json(d, now))),
                None => error(StatusCode::NOT_FOUND, "deployment not found"),
            }
        }
        (&Method::POST, ["v1", "leases"]) => create_lease(inner, body, now).await,
        (&Method::POST, ["v1", "deposit-deployment"]) => {
            let dseq = body
                .as_ref()
                .and_then(|b| b.pointer("/data/dseq"))
                .and_then(Value::as_str)
                .and_then(|d| d.parse::<u64>().ok());
            let usd = body
                .as_ref()
                .and_then(|b| b.pointer("/data/deposit"))
                .and_then(Value::as_f64);
            let (Some(n), Some(usd)) = (dseq, usd) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "data.dseq and data.deposit are required",
                );
            };
            let mut w = inner.world.lock();
            w.tick(now);
            let h = w.height(now);
            let Some(d) = w.deps.get_mut(&n).filter(|d| d.closed.is_none()) else {
                return error(StatusCode::NOT_FOUND, "no active deployment");
            };
            // Settle what accrued, then add the deposit.
            let rate = d
                .lease
                .as_ref()
                .filter(|l| l.closed.is_none())
                .map_or(0.0, |l| l.price);
            d.funds = (d.funds - rate * (h - d.settled_height)).max(0.0) + usd * 1e6;
            d.settled_height = h;
            let d = &w.deps[&n];
            data(w.deployment_json(d, now))
        }
        (_, ["v2", "deployment-settings", dseq]) => {
            let mut w = inner.world.lock();
            let Some(d) = dseq.parse::<u64>().ok().and_then(|n| w.deps.get_mut(&n)) else {
                return reply(
                    StatusCode::NOT_FOUND,
                    &json!({"message": "Deployment settings not found"}),
                );
            };
            if method == Method::PATCH {
                match body
                    .as_ref()
                    .and_then(|b| b.pointer("/data/autoTopUpEnabled"))
                    .and_then(Value::as_bool)
                {
                    Some(on) => d.auto_top_up = on,
                    None => {
                        return error(StatusCode::BAD_REQUEST, "data.autoTopUpEnabled is required");
                    }
                }
            }
            data(json!({
                "id": format!("00000000-0000-4000-8000-{:012}", d.dseq), "userId": "fake-user",
                "dseq": d.dseq.to_string(), "autoTopUpEnabled": d.auto_top_up,
                "estimatedTopUpAmount": 0, "topUpFrequencyMs": 3_600_000,
                "createdAt": "2026-01-01T00:00:00.000Z", "updatedAt": "2026-01-01T00:00:00.000Z"}))
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "no such endpoint in the fake Console",
        ),
    }
}

fn deployment_call(
    inner: &Inner,
    method: &Method,
    dseq: &str,
    now: Instant,
) -> Response<Full<Bytes>> {
    let mut w = inner.world.lock();
    w.tick(now);
    let Some(n) = dseq.parse::<u64>().ok().filter(|n| w.deps.contains_key(n)) else {
        return error(StatusCode::NOT_FOUND, "deployment not found");
    };
    match *method {
        Method::GET => reply(
            StatusCode::OK,
            &json!({"data": w.deployment_json(&w.deps[&n], now)}),
        ),
        Method::DELETE => {
            if let Some(d) = w.deps.get_mut(&n) {
                if d.closed.is_none() {
                    d.closed = Some((now, "owner".into()));
                }
                if let Some(l) = d.lease.as_mut().filter(|l| l.closed.is_none()) {
                    l.state = "closed";
                    l.closed = Some((now, "owner".into()));
                    l.replica = None;
                }
            }
            reply(StatusCode::OK, &json!({"data": {"success": true}}))
        }
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "unsupported"),
    }
}

async fn create_lease(inner: &Inner, body: Option<Value>, now: Instant) -> Response<Full<Bytes>> {
    let lease = body.as_ref().and_then(|b| b.pointer("/leases/0")).cloned();
    let manifest_ok = body
        .as_ref()
        .and_then(|b| b.get("manifest"))
        .and_then(Value::as_str)
        .is_some_and(|m| !m.is_empty());
    let (Some(lease), true) = (lease, manifest_ok) else {
        return error(
            StatusCode::BAD_REQUEST,
            "manifest and leases[0] are required",
        );
    };
    let n = lease
        .get("dseq")
        .and_then(Value::as_str)
        .and_then(|d| d.parse::<u64>().ok());
    let provider = lease
        .get("provider")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let (n, facts, price) = {
        let mut w = inner.world.lock();
        w.tick(now);
        let Some(d) = n
            .and_then(|n| w.deps.get(&n))
            .filter(|d| d.closed.is_none())
        else {
            return error(StatusCode::NOT_FOUND, "no active deployment");
        };
        if let Some(l) = &d.lease {
            // Idempotent: the same lease again is a success, another is refused.
            return if l.provider == provider {
                reply(StatusCode::OK, &json!({"data": w.deployment_json(d, now)}))
            } else {
                error(StatusCode::BAD_REQUEST, "the order already has a lease")
            };
        }
        let age = now.saturating_duration_since(d.created);
        let Some((_, p)) = w.bidders(d).into_iter().find(|(_, p)| p.owner == provider) else {
            return error(StatusCode::BAD_REQUEST, "no bid from this provider");
        };
        if age < p.bid_delay || age >= p.bid_delay + w.bid_ttl {
            return error(StatusCode::BAD_REQUEST, "bid is not open");
        }
        (d.dseq, d.facts.clone(), p.price_uact)
    };
    let replica = if inner.cfg.start_replicas {
        let behavior = leasegate_replica_sim::Behavior {
            models: vec![facts.model()],
            engine: if facts.is_tgi() {
                leasegate_replica_sim::Engine::Tgi
            } else {
                leasegate_replica_sim::Engine::Vllm
            },
            api_key: facts.replica_key(),
            ..leasegate_replica_sim::Behavior::default()
        };
        match leasegate_replica_sim::Replica::start(behavior).await {
            Ok(r) => Some(Arc::new(r)),
            Err(e) => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("replica start failed: {e}"),
                );
            }
        }
    } else {
        None
    };
    let mut w = inner.world.lock();
    let h = w.height(now);
    let Some(d) = w.deps.get_mut(&n).filter(|d| d.closed.is_none()) else {
        return error(StatusCode::NOT_FOUND, "no active deployment");
    };
    if d.lease.is_none() {
        d.settled_height = h;
        d.lease = Some(LeaseRec {
            provider,
            price,
            created: now,
            closed: None,
            state: "active",
            replica_url: replica.as_ref().map(|r| r.url()),
            replica,
        });
    }
    let d = &w.deps[&n];
    reply(StatusCode::OK, &json!({"data": w.deployment_json(d, now)}))
}
