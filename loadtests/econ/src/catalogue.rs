//! The simulated world's numbers: Akash providers at 2026 prices, the pool,
//! how fast a replica serves, and what the hyperscaler charges.
//!
//! Every figure here is an assumption, stated once so the report can quote
//! it (see the crate README for the reasoning behind each).

use std::time::Duration;

use leasegate_controller::market::sim::{SimConfig, SimProvider};
use leasegate_controller::pool::{Pool, PoolEngine, RegionWeight};
use leasegate_gateway::usage::{FallbackPrice, Usage};
use serde::Serialize;

/// The served model: an open 70B model in FP8 on one H100 80GB.
pub const MODEL: &str = "llama-3.3-70b-instruct";

/// uact per block for a USD-per-hour price (600 blocks an hour).
fn uact(usd_per_hour: f64) -> f64 {
    usd_per_hour * 1e6 / 600.0
}

#[allow(clippy::too_many_arguments)]
fn provider(
    owner: &str,
    region: &str,
    country: &str,
    (lat, lon): (f64, f64),
    h100_usd_h: f64,
    bid_delay_s: u64,
    no_bid_chance: f64,
    uptime_7d: f64,
) -> SimProvider {
    SimProvider {
        owner: owner.into(),
        region: region.into(),
        country: country.into(),
        city: String::new(),
        lat,
        lon,
        // Most GPU providers also rent A100 80GB at about $1.7/h; the pool
        // does not take them (70B FP8 needs the H100's FP8 path and memory).
        prices: vec![
            ("h100".into(), uact(h100_usd_h)),
            ("a100".into(), uact(1.71)),
        ],
        bid_delay: Duration::from_secs(bid_delay_s),
        no_bid_chance,
        audited: true,
        uptime_7d,
    }
}

/// H100 providers at $2.60–2.73/h (AKASH.md, 2026), bidding after one to
/// three minutes, each skipping 15–35% of orders.
pub fn providers() -> Vec<SimProvider> {
    vec![
        provider(
            "akash1-nae-1",
            "na-us-east",
            "US",
            (39.0, -77.5),
            2.65,
            60,
            0.15,
            0.995,
        ),
        provider(
            "akash1-nae-2",
            "na-us-east",
            "US",
            (40.7, -74.0),
            2.69,
            90,
            0.2,
            0.99,
        ),
        provider(
            "akash1-nae-3",
            "na-us-east",
            "US",
            (33.7, -84.4),
            2.62,
            120,
            0.3,
            0.98,
        ),
        provider(
            "akash1-nae-4",
            "na-us-east",
            "US",
            (41.9, -87.6),
            2.71,
            150,
            0.25,
            0.985,
        ),
        provider(
            "akash1-naw-1",
            "na-us-west",
            "US",
            (34.0, -118.2),
            2.60,
            100,
            0.25,
            0.98,
        ),
        provider(
            "akash1-naw-2",
            "na-us-west",
            "US",
            (45.5, -122.7),
            2.66,
            140,
            0.35,
            0.97,
        ),
        provider(
            "akash1-euc-1",
            "eu-central",
            "DE",
            (50.1, 8.7),
            2.68,
            70,
            0.15,
            0.993,
        ),
        provider(
            "akash1-euc-2",
            "eu-central",
            "DE",
            (52.5, 13.4),
            2.72,
            110,
            0.25,
            0.985,
        ),
        provider(
            "akash1-euc-3",
            "eu-central",
            "CH",
            (47.4, 8.5),
            2.73,
            160,
            0.3,
            0.98,
        ),
        provider(
            "akash1-euw-1",
            "eu-west",
            "NL",
            (52.4, 4.9),
            2.64,
            130,
            0.3,
            0.97,
        ),
        provider(
            "akash1-ase-1",
            "as-east",
            "JP",
            (35.7, 139.7),
            2.70,
            80,
            0.2,
            0.99,
        ),
        provider(
            "akash1-ase-2",
            "as-east",
            "KR",
            (37.6, 127.0),
            2.73,
            150,
            0.3,
            0.98,
        ),
        provider(
            "akash1-ase-3",
            "as-east",
            "JP",
            (34.7, 135.5),
            2.67,
            170,
            0.35,
            0.975,
        ),
    ]
}

/// The sim market: 2026 prices, bids in minutes, `unstable` closure after
/// 7.5 minutes down, and eight minutes from lease to a serving replica
/// (image pull plus loading ~70 GB of weights).
pub fn market(seed: u64) -> SimConfig {
    SimConfig {
        seed,
        providers: providers(),
        bid_ttl: Duration::from_secs(300),
        unstable_after: Duration::from_secs(450),
        replica_start_delay: Duration::from_secs(480),
        initial_deposit_usd: 10.0,
    }
}

/// How one leased replica serves (vLLM, 70B FP8, one H100).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ServiceModel {
    /// Sequences decoded together; also the published `max_concurrency`.
    pub batch_slots: u32,
    /// Decode time per output token of one sequence at full batch.
    pub time_per_output_token_s: f64,
    /// How fast one request's prompt is prefilled (its TTFT): chunked
    /// prefill runs a new request's prompt ahead of decode steps.
    pub prefill_tokens_per_s: f64,
    /// Prompt tokens per second the GPU sustains beside decode: what a
    /// prompt costs in throughput, charged to its slot's occupancy.
    pub sustained_prompt_tokens_per_s: f64,
    /// Scheduling and first-step overhead.
    pub base_ttft_s: f64,
}

impl Default for ServiceModel {
    fn default() -> Self {
        // 70 GB of FP8 weights leave ~8 GB of KV cache on an 80 GB card:
        // at ~160 KB per token (80 layers, 8 KV heads, FP8), about 32
        // sequences of this trace's length. Decode is memory-bound (21 ms to
        // read the weights once per step at 3.35 TB/s); 40 ms per step
        // leaves room for the prefill chunks that share the GPU, and 3,000
        // prompt tokens/s is the prefill rate sustained beside decode (one
        // prompt alone prefills at ~8,000 tokens/s: 140 GFLOP per token at
        // ~1.1 PFLOP/s of FP8). The result,
        // ~2.9 requests/s and ~4,300 tokens/s per GPU, is deliberately on the
        // conservative side of published vLLM figures.
        Self {
            batch_slots: 32,
            time_per_output_token_s: 0.040,
            prefill_tokens_per_s: 8_000.0,
            sustained_prompt_tokens_per_s: 3_000.0,
            base_ttft_s: 0.08,
        }
    }
}

impl ServiceModel {
    pub fn prefill_s(&self, prompt_tokens: u32) -> f64 {
        self.base_ttft_s + f64::from(prompt_tokens) / self.prefill_tokens_per_s
    }

    /// How long a sequence holds its batch slot, its prompt's share of
    /// the GPU included.
    pub fn service_s(&self, prompt_tokens: u32, output_tokens: u32) -> f64 {
        self.base_ttft_s
            + f64::from(prompt_tokens) / self.sustained_prompt_tokens_per_s
            + f64::from(output_tokens) * self.time_per_output_token_s
    }
}

/// The hyperscaler fallback: per-token prices and its latency.
#[derive(Clone, Debug, Serialize)]
pub struct FallbackModel {
    pub name: String,
    pub usd_per_1m_input: f64,
    pub usd_per_1m_output: f64,
    /// Where its API endpoint is (for the network round trip).
    pub region: String,
    pub lat: f64,
    pub lon: f64,
    /// Time to first token before network: queueing and prefill at the provider.
    pub base_ttft_s: f64,
    pub prefill_tokens_per_s: f64,
    /// Mean of the exponential tail added to each request's TTFT.
    pub tail_mean_s: f64,
}

impl Default for FallbackModel {
    fn default() -> Self {
        // On-demand list price of Llama 3.3 70B Instruct on the big clouds'
        // model APIs (Bedrock, Vertex MaaS): $0.72 per 1M input and output
        // tokens; assumed unchanged into 2026.
        Self {
            name: "hyperscaler-llama-3.3-70b".into(),
            usd_per_1m_input: 0.72,
            usd_per_1m_output: 0.72,
            region: "us-east-1".into(),
            lat: 38.9,
            lon: -77.4,
            base_ttft_s: 0.35,
            prefill_tokens_per_s: 20_000.0,
            tail_mean_s: 0.12,
        }
    }
}

impl FallbackModel {
    /// What one answer costs, priced by the gateway's own cost code.
    pub fn cost_usd(&self, prompt_tokens: u32, output_tokens: u32) -> f64 {
        let price = FallbackPrice {
            input_per_1m_usd: self.usd_per_1m_input,
            output_per_1m_usd: self.usd_per_1m_output,
        };
        price.cost(&Usage {
            prompt_tokens: u64::from(prompt_tokens),
            completion_tokens: u64::from(output_tokens),
            total_tokens: u64::from(prompt_tokens) + u64::from(output_tokens),
        })
    }
}

/// The one pool: H100 only, in the three demand regions plus their
/// neighbours (so a region whose providers are down can borrow nearby).
pub fn pool(service: &ServiceModel, min_replicas: u32, max_replicas: u32) -> Pool {
    let region = |code: &str, weight: f64| RegionWeight {
        code: code.into(),
        weight,
    };
    // A replica turns a request over in about eleven seconds, so 32 slots
    // carry ~2.9 rps; scaling aims a little below that.
    let mean_service = service.service_s(1_240, 263);
    let capacity_rps = f64::from(service.batch_slots) / mean_service;
    Pool {
        name: "llama-70b".into(),
        model: MODEL.into(),
        engine: PoolEngine::Vllm,
        image: None,
        gpu_models: vec!["h100".into()],
        min_replicas,
        max_replicas,
        regions: vec![
            region("na-us-east", 2.0),
            region("eu-central", 1.5),
            region("as-east", 1.0),
            region("na-us-west", 0.0),
            region("eu-west", 0.0),
        ],
        max_price_per_hour: 3.0,
        audited_only: false,
        provider_allow: Vec::new(),
        provider_deny: Vec::new(),
        bid_window: Duration::from_secs(180),
        readiness_timeout: Duration::from_secs(1200),
        runway_threshold: Duration::from_secs(6 * 3600),
        topup: Duration::from_secs(24 * 3600),
        unreachable_checks: 3,
        unhealthy_after: Duration::from_secs(300),
        drain_timeout: Duration::from_secs(120),
        check_interval: Duration::from_secs(30),
        probe_interval: Duration::from_secs(10),
        max_concurrency: service.batch_slots,
        target_rps_per_replica: capacity_rps * 0.9,
        scale_up_cooldown: Duration::from_secs(60),
        scale_down_cooldown: Duration::from_secs(900),
    }
}
