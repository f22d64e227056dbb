//! Fleet publication: snapshots of the ready and draining leases, through a
//! watch channel in-process and `GET /fleet?after=VERSION` (long poll)
//! across processes.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use leasegate_fleet::{Credential, Endpoint, Kind, Provider, Region, Snapshot, State};
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::pool::Pool;
use crate::reconcile::endpoint_id;
use crate::store::{Intent, IntentKind, LeaseRecord, Step, Store, StoreError};

/// Builds the endpoints the fleet should list now, sorted by id.
pub fn endpoints(pools: &[Pool], intents: &[Intent], leases: &[LeaseRecord]) -> Vec<Endpoint> {
    let by_dseq: HashMap<&str, &LeaseRecord> =
        leases.iter().map(|l| (l.dseq.0.as_str(), l)).collect();
    let mut out: Vec<Endpoint> = intents
        .iter()
        .filter(|i| i.kind == IntentKind::Acquire)
        .filter_map(|i| {
            let state = match i.step {
                // A lease being replaced keeps serving until its successor is ready.
                Step::Ready | Step::Replacing => State::Ready,
                Step::Draining => State::Draining,
                _ => return None,
            };
            let pool = pools.iter().find(|p| p.name == i.pool)?;
            let lease = by_dseq.get(i.dseq.as_ref()?.0.as_str())?;
            Some(Endpoint {
                id: endpoint_id(&lease.dseq),
                url: lease.url.clone()?,
                kind: Kind::Lease,
                engine: pool.engine.fleet(),
                models: vec![pool.model.clone()],
                region: Region {
                    code: lease.region.clone(),
                    country: lease.country.clone(),
                    lat: lease.lat,
                    lon: lease.lon,
                },
                provider: Some(Provider {
                    id: lease.provider.clone(),
                    name: lease.provider.clone(),
                    audited: lease.audited,
                    uptime: lease.uptime,
                }),
                price_per_hour_usd: lease.price_usd_per_hour,
                max_concurrency: pool.max_concurrency,
                state,
                credential: lease.replica_key.clone().map(|key| Credential::Key { key }),
            })
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// Publishes a new snapshot whenever the endpoint list changes.
#[derive(Debug)]
pub struct Publisher {
    tx: watch::Sender<Arc<Snapshot>>,
    lock: Mutex<()>,
}

impl Publisher {
    pub fn new() -> (Self, watch::Receiver<Arc<Snapshot>>) {
        let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
        (
            Self {
                tx,
                lock: Mutex::new(()),
            },
            rx,
        )
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.tx.subscribe()
    }

    pub fn current(&self) -> Arc<Snapshot> {
        self.tx.borrow().clone()
    }

    /// Publishes `endpoints` as a new version unless they equal the current
    /// ones. Returns the version now current.
    pub fn publish(&self, store: &dyn Store, endpoints: Vec<Endpoint>) -> Result<u64, StoreError> {
        // Serialises compare-and-publish across pools.
        let _g = self.lock.lock();
        let cur = self.tx.borrow().clone();
        if cur.version > 0 && cur.endpoints == endpoints {
            return Ok(cur.version);
        }
        let version = store.next_fleet_version()?;
        let generated_at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.tx.send_replace(Arc::new(Snapshot {
            version,
            generated_at_ms,
            endpoints,
        }));
        Ok(version)
    }
}

/// The long-poll wait when nothing newer is there.
pub const LONG_POLL: Duration = Duration::from_secs(30);

fn after_param(query: Option<&str>) -> Result<u64, ()> {
    let Some(q) = query else { return Ok(0) };
    for pair in q.split('&') {
        if let Some(v) = pair.strip_prefix("after=") {
            return v.parse().map_err(|_| ());
        }
    }
    Ok(0)
}

fn json(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// `GET /fleet?after=VERSION`: the current snapshot as JSON at once when its
/// version is above `after`, else waits up to `wait` for one and answers
/// `304 Not Modified` if none came. The snapshot carries replica keys: mount
/// this only behind the admin listener's authentication.
pub async fn fleet_handler<B>(
    rx: watch::Receiver<Arc<Snapshot>>,
    req: Request<B>,
    wait: Duration,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != http::Method::GET {
        return Ok(json(
            StatusCode::METHOD_NOT_ALLOWED,
            br#"{"error":{"message":"use GET","type":"invalid_request_error","param":null,"code":"method_not_allowed"}}"#.to_vec(),
        ));
    }
    let Ok(after) = after_param(req.uri().query()) else {
        return Ok(json(
            StatusCode::BAD_REQUEST,
            br#"{"error":{"message":"after must be an unsigned integer","type":"invalid_request_error","param":"after","code":"invalid_after"}}"#.to_vec(),
        ));
    };
    let mut rx = rx;
    let newer = async {
        loop {
            let cur = rx.borrow_and_update().clone();
            if cur.version > after {
                return Some(cur);
            }
            if rx.changed().await.is_err() {
                return None;
            }
        }
    };
    match tokio::time::timeout(wait, newer).await {
        Ok(Some(snap)) => {
            let body = serde_json::to_vec(&*snap).unwrap_or_default();
            Ok(json(StatusCode::OK, body))
        }
        // Timed out, or the controller is gone: nothing newer to give.
        _ => {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            Ok(r)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    fn endpoint(id: &str) -> Endpoint {
        Endpoint {
            id: id.into(),
            url: "http://127.0.0.1:1".into(),
            kind: Kind::Lease,
            engine: leasegate_fleet::Engine::Vllm,
            models: vec!["m".into()],
            region: Region {
                code: "eu-central".into(),
                country: None,
                lat: 0.0,
                lon: 0.0,
            },
            provider: None,
            price_per_hour_usd: 1.0,
            max_concurrency: 1,
            state: State::Ready,
            credential: None,
        }
    }

    async fn get(rx: &watch::Receiver<Arc<Snapshot>>, q: &str) -> (StatusCode, Option<Snapshot>) {
        let req = Request::get(format!("/fleet{q}")).body(()).unwrap();
        let resp = fleet_handler(rx.clone(), req, LONG_POLL).await.unwrap();
        let status = resp.status();
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        (status, serde_json::from_slice(&body).ok())
    }

    #[tokio::test(start_paused = true)]
    async fn long_poll_answers_at_once_when_newer_else_waits_then_304() {
        let store = SqliteStore::in_memory().unwrap();
        let (publisher, rx) = Publisher::new();
        let v1 = publisher.publish(&store, vec![endpoint("a")]).unwrap();
        // Same endpoints: no new version.
        assert_eq!(publisher.publish(&store, vec![endpoint("a")]).unwrap(), v1);
        let (s, snap) = get(&rx, "?after=0").await;
        assert_eq!((s, snap.unwrap().version), (StatusCode::OK, v1));
        // Nothing newer: waits the whole poll, then 304.
        let t0 = tokio::time::Instant::now();
        let (s, _) = get(&rx, &format!("?after={v1}")).await;
        assert_eq!(s, StatusCode::NOT_MODIFIED);
        assert!(t0.elapsed() >= LONG_POLL);
        // A publication during the wait answers the waiting poll.
        let waiting = tokio::spawn({
            let rx = rx.clone();
            async move { get(&rx, &format!("?after={v1}")).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        let v2 = publisher
            .publish(&store, vec![endpoint("a"), endpoint("b")])
            .unwrap();
        let (s, snap) = waiting.await.unwrap();
        let snap = snap.unwrap();
        assert_eq!(
            (s, snap.version, snap.endpoints.len()),
            (StatusCode::OK, v2, 2)
        );
        let (s, _) = get(&rx, "?after=x").await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
    }
}
