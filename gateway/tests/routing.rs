//! Routing end to end: GeoIP-located clients, slowed, overloaded and failing regions, residency.
//!
//! Three simulated replicas stand in `na-us-west`, `eu-central` and
//! `as-east`; a test-built City mmdb places one client network on each
//! continent; the gateway trusts 127.0.0.0/8 (the test peer) so
//! `X-Forwarded-For` names the client. Where a request landed is read from
//! the `x-leasegate-region` explain header and the replicas' own counters.
//! Shares are asserted with loose bounds, never wall-clock figures.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::support::mmdb_writer::{MmdbWriter, Value};
use crate::support::{FAST, Reply, chat, gateway, replica_with, send, url};
use http::Method;
use leasegate_fleet::{Endpoint, Engine, Kind, State, region};
use leasegate_gateway::Running;
use leasegate_replica_sim::{Behavior, Replica};

const EU_CLIENT: &str = "81.2.69.10";
const NA_CLIENT: &str = "216.160.83.60";
const AS_CLIENT: &str = "175.16.199.10";
const CHAT: &str = "/v1/chat/completions";

fn city(lat: f64, lon: f64, country: &str, continent: &str) -> Value {
    Value::map([
        ("continent", Value::map([("code", Value::str(continent))])),
        ("country", Value::map([("iso_code", Value::str(country))])),
        (
            "location",
            Value::map([
                ("latitude", Value::Double(lat)),
                ("longitude", Value::Double(lon)),
            ]),
        ),
    ])
}

/// Frankfurt, Seattle and Changchun client networks; loopback sits in
/// Frankfurt too, so a request whose forwarding header is ignored is
/// placed in Europe, which tells the two cases apart.
fn mmdb(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("routing")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut w = MmdbWriter::new("GeoIP2-City", 6, 28);
    w.insert(
        "81.2.69.0/24".parse().unwrap(),
        &city(50.11, 8.68, "DE", "EU"),
    );
    w.insert(
        "127.0.0.0/8".parse().unwrap(),
        &city(50.11, 8.68, "DE", "EU"),
    );
    w.insert(
        "216.160.83.0/24".parse().unwrap(),
        &city(47.61, -122.33, "US", "NA"),
    );
    w.insert(
        "175.16.199.0/24".parse().unwrap(),
        &city(43.88, 125.32, "CN", "AS"),
    );
    w.write_to(&dir, "city.mmdb")
}

fn endpoint(id: &str, url: &str, region_code: &str, max_concurrency: u32) -> Endpoint {
    Endpoint {
        id: id.into(),
        url: url.into(),
        kind: Kind::Lease,
        engine: Engine::Vllm,
        models: vec!["m".into()],
        region: region::lookup(region_code).unwrap().to_region(),
        provider: None,
        price_per_hour_usd: 1.0,
        max_concurrency,
        state: State::Ready,
        credential: None,
    }
}

fn behavior(ttft_ms: u64) -> Behavior {
    Behavior {
        models: vec!["m".into()],
        ttft: Duration::from_millis(ttft_ms),
        tokens: 2,
        ..Behavior::default()
    }
}

/// Config: [`FAST`] plus the mmdb, a trusted proxy range and explain headers.
fn config(mmdb: &Path, trusted: &str, extra: &str) -> String {
    format!(
        "{FAST}\n[geo]\nmmdb = ['{}']\ntrusted_proxies = [\"{trusted}\"]\n\n\
         [routing]\nexplain_headers = true\nprice_ms_per_usd_hour = 0.0\n{extra}",
        mmdb.display()
    )
}

/// One replica per region and a gateway over them.
struct World {
    eu: Replica,
    na: Replica,
    asia: Replica,
    gw: Running,
}

impl World {
    async fn start(name: &str, ttft_ms: u64, extra: &str, eu_capacity: u32) -> World {
        let eu = replica_with(behavior(ttft_ms)).await;
        let na = replica_with(behavior(ttft_ms)).await;
        let asia = replica_with(behavior(ttft_ms)).await;
        let fleet = vec![
            endpoint("eu", &eu.url(), "eu-central", eu_capacity),
            endpoint("na", &na.url(), "na-us-west", 64),
            endpoint("as", &asia.url(), "as-east", 64),
        ];
        let gw = gateway(&config(&mmdb(name), "127.0.0.0/8", extra), fleet).await;
        World { eu, na, asia, gw }
    }

    /// Sends one chat request as `client`; the region that served it.
    async fn ask(&self, client: &str) -> String {
        let r = ask(&self.gw, client, false).await;
        assert_eq!(r.status, 200, "{}", r.text());
        region_of(&r)
    }
}

async fn ask(gw: &Running, client: &str, stream: bool) -> Reply {
    send(
        &url(gw.api_addr),
        Method::POST,
        CHAT,
        chat("m", stream),
        &[("x-forwarded-for", client)],
    )
    .await
}

fn region_of(r: &Reply) -> String {
    r.headers
        .get("x-leasegate-region")
        .expect("explain headers are on")
        .to_str()
        .unwrap()
        .to_owned()
}

fn chats(r: &Replica) -> u64 {
    r.stats().requests_by_path.get(CHAT).copied().unwrap_or(0)
}

fn share(regions: &[String], code: &str) -> f64 {
    regions.iter().filter(|r| *r == code).count() as f64 / regions.len().max(1) as f64
}

#[tokio::test]
async fn clients_from_each_continent_land_in_their_own_region() {
    let w = World::start("landing", 5, "", 64).await;
    for (client, home) in [
        (EU_CLIENT, "eu-central"),
        (NA_CLIENT, "na-us-west"),
        (AS_CLIENT, "as-east"),
    ] {
        for _ in 0..8 {
            assert_eq!(w.ask(client).await, home, "client {client}");
        }
    }
    // The replicas agree with the headers: each served exactly its own clients.
    assert_eq!((chats(&w.eu), chats(&w.na), chats(&w.asia)), (8, 8, 8));
    let r = ask(&w.gw, EU_CLIENT, false).await;
    assert_eq!(r.headers["x-leasegate-endpoint"], "eu");
    assert_eq!(r.headers["x-leasegate-tier"], "near");
}

/// The distance term is 25 ms per 1000 km here, so a normal 30 ms TTFT in
/// Frankfurt beats Asia and America (~200 ms and ~230 ms away) and a 10×
/// slower one (300 ms) does not. After the slowdown ends the stale
/// measurement fades (30 s time constant) and fresh samples pull it down.
#[tokio::test]
async fn a_slowed_region_loses_its_traffic_and_wins_it_back_after_recovery() {
    let w = World::start("slowed", 30, "rtt_ms_per_1000km = 25.0", 64).await;
    for _ in 0..5 {
        assert_eq!(w.ask(EU_CLIENT).await, "eu-central");
    }
    w.eu.set_behavior(behavior(300));
    // The average climbs sample by sample; let it catch up before judging.
    for _ in 0..15 {
        w.ask(EU_CLIENT).await;
    }
    let mut slowed = Vec::new();
    for _ in 0..40 {
        slowed.push(w.ask(EU_CLIENT).await);
    }
    assert!(
        share(&slowed, "eu-central") <= 0.3,
        "a 10x slower region keeps at most a trickle of re-checks: {slowed:?}"
    );
    w.eu.set_behavior(behavior(30));
    let mut recent: Vec<String> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut recovered = false;
    for _ in 0..3000 {
        recent.push(w.ask(EU_CLIENT).await);
        let tail = &recent[recent.len().saturating_sub(20)..];
        if tail.len() == 20 && share(tail, "eu-central") >= 0.75 {
            recovered = true;
            break;
        }
        if tokio::time::Instant::now() > deadline {
            break;
        }
    }
    assert!(
        recovered,
        "traffic returns home after recovery; last: {:?}",
        &recent[recent.len().saturating_sub(20)..]
    );
}

/// EU announces a capacity of 1 and a full endpoint costs 1000 ms here
/// (load_ms), far more than the distance to Asia (~300 ms at 40 ms per
/// 1000 km): one stream in flight there sends new requests elsewhere until
/// it finishes.
#[tokio::test]
async fn an_overloaded_region_sheds_new_requests_and_gets_them_back_when_idle() {
    let extra = "rtt_ms_per_1000km = 40.0\nload_ms = 1000.0";
    let w = Arc::new(World::start("overloaded", 0, extra, 1).await);
    let held = Behavior {
        inter_token: Duration::from_millis(100),
        tokens: 40,
        ..behavior(0)
    };
    w.eu.set_behavior(held.clone());
    w.na.set_behavior(held.clone());
    w.asia.set_behavior(held);
    let mut streams = Vec::new();
    for i in 0..4u64 {
        let w2 = Arc::clone(&w);
        streams.push(tokio::spawn(
            async move { ask(&w2.gw, EU_CLIENT, true).await },
        ));
        for _ in 0..200 {
            let total = w.eu.stats().in_flight + w.na.stats().in_flight + w.asia.stats().in_flight;
            if total > i {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    assert_eq!(
        w.eu.stats().in_flight,
        1,
        "EU takes its capacity, then sheds"
    );
    // Short requests now: only the held streams are slow.
    w.na.set_behavior(behavior(0));
    w.asia.set_behavior(behavior(0));
    let mut busy = Vec::new();
    for _ in 0..10 {
        busy.push(w.ask(EU_CLIENT).await);
    }
    assert!(share(&busy, "eu-central") <= 0.1, "{busy:?}");
    for s in streams {
        assert_eq!(s.await.unwrap().status, 200);
    }
    w.eu.set_behavior(behavior(0));
    let mut idle = Vec::new();
    for _ in 0..10 {
        idle.push(w.ask(EU_CLIENT).await);
    }
    assert!(share(&idle, "eu-central") >= 0.8, "{idle:?}");
}

#[tokio::test]
async fn a_replica_failing_half_its_requests_loses_most_of_its_traffic() {
    let flaky = replica_with(Behavior {
        error_rate: 0.5,
        error_status: 500,
        seed: 7,
        ..behavior(0)
    })
    .await;
    let good = replica_with(behavior(0)).await;
    let na = replica_with(behavior(0)).await;
    let fleet = vec![
        endpoint("eu-flaky", &flaky.url(), "eu-central", 64),
        endpoint("eu-good", &good.url(), "eu-central", 64),
        endpoint("na", &na.url(), "na-us-west", 64),
    ];
    let gw = gateway(&config(&mmdb("flaky"), "127.0.0.0/8", ""), fleet).await;
    for _ in 0..30 {
        let r = ask(&gw, EU_CLIENT, false).await;
        assert_eq!(r.status, 200, "failover hides the failures: {}", r.text());
    }
    let before = chats(&flaky);
    let mut served = Vec::new();
    for _ in 0..30 {
        let r = ask(&gw, EU_CLIENT, false).await;
        assert_eq!(r.status, 200, "{}", r.text());
        served.push(
            r.headers["x-leasegate-endpoint"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    let tried = chats(&flaky) - before;
    // Even odds would send it ~15 of 30; the error penalty and ejection
    // leave it a few re-checks at most.
    assert!(
        tried <= 6,
        "the flaky replica was still tried {tried} times of 30"
    );
    assert!(served.iter().all(|e| e.starts_with("eu-")), "{served:?}");
}

#[tokio::test]
async fn untrusted_forwarded_for_is_ignored() {
    let eu = replica_with(behavior(0)).await;
    let asia = replica_with(behavior(0)).await;
    let fleet = vec![
        endpoint("eu", &eu.url(), "eu-central", 64),
        endpoint("as", &asia.url(), "as-east", 64),
    ];
    // The peer (loopback) is not in the trusted range: its header is a claim.
    let gw = gateway(&config(&mmdb("untrusted"), "10.0.0.0/8", ""), fleet).await;
    for _ in 0..8 {
        let r = ask(&gw, AS_CLIENT, false).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            region_of(&r),
            "eu-central",
            "placed by the peer, not the header"
        );
    }
    assert_eq!(chats(&asia), 0);
}

/// The pool is pinned through an alias name, which resolves to the pool:
/// the pin holds for both names.
#[tokio::test]
async fn an_eu_pinned_pool_never_leaves_the_eu_even_when_the_eu_is_down() {
    let fb = replica_with(behavior(0)).await;
    let extra = format!(
        "[routing.pools.gpt]\nregions = [\"eu\"]\n\n[aliases]\ngpt = \"m\"\n\n\
         [[fallbacks]]\nid = \"fb-us\"\nurl = \"{}\"\nregion = \"us-east-1\"\nmodels = {{ m = \"m\" }}\n",
        fb.url()
    );
    let w = World::start("residency", 0, &extra, 64).await;
    let base = url(w.gw.api_addr);
    let send_as = |model: &'static str| {
        let base = base.clone();
        async move {
            send(
                &base,
                Method::POST,
                CHAT,
                chat(model, false),
                &[("x-forwarded-for", AS_CLIENT)],
            )
            .await
        }
    };
    // An Asian client goes to Europe, by the pool's name or its alias's.
    for model in ["m", "gpt", "m", "gpt"] {
        let r = send_as(model).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(region_of(&r), "eu-central");
    }
    let World { eu, na, asia, gw } = w;
    eu.shutdown().await;
    let mut last = None;
    for _ in 0..10 {
        let r = send_as("gpt").await;
        assert_ne!(r.status, 200, "nothing outside the EU may answer");
        if r.status == 503 {
            last = Some(r);
            break;
        }
    }
    let r = last.expect("once the EU endpoint is ejected the answer is a 503");
    let e = r.openai_error(503);
    assert_eq!(e["code"], "no_upstream_available", "{e}");
    assert_eq!(chats(&asia), 0);
    assert_eq!(chats(&na), 0);
    assert_eq!(chats(&fb), 0, "the non-EU fallback is never used");
    drop(gw);
}
