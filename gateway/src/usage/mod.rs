//! Usage, cost and overflow: token counts read from answers as they pass, their price, and when to spill to the fallback tier.
//!
//! The pieces are independent of the request stack so each can be tested on
//! its own:
//! - [`scan`]: finds `usage` in a JSON body frame by frame (non-streaming answers);
//! - [`sse`]: an SSE event filter that captures the usage chunk of a stream and
//!   drops it when the gateway, not the client, asked for it;
//! - [`splice`]: adds `stream_options.include_usage` to a streaming request;
//! - [`body`]: the `http_body` wrapper that runs one of the two over a relayed body;
//! - [`cost`]: prices usage (lease $/h spread over tokens, fallback per 1M tokens) and records metrics;
//! - [`overflow`]: the pure spill-to-fallback decision and its reason;
//! - [`spend`]: hourly and daily caps on fallback spend;
//! - [`report`]: spend since start and limits hit, for `GET /admin/usage` and `leasegate status`.

pub mod body;
pub mod config;
pub mod cost;
pub mod overflow;
pub mod report;
pub mod scan;
pub mod spend;
pub mod splice;
pub mod sse;
pub mod stage;
mod window;

use serde::Deserialize;

pub use body::{Meter, Metered, UsageSlot};
pub use cost::{
    Charge, CostRecorder, CostSummary, FallbackPrice, ModelSpend, Path, PathSpend, Spend, SpendSink,
};
pub use overflow::{
    Decision, FallbackLoad, Inputs, LeaseLoad, Mode, PolicyRule, PoolSlo, Reason, Tier,
};
pub use scan::UsageScan;
pub use spend::{CapReached, OnCap, Reservation, SpendCaps, SpendConfig, SpendStatus, UtcClock};
pub use splice::{StreamOptions, include_usage};
pub use sse::SseFilter;

/// Token counts of one answer, as the upstream reported them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

/// The `usage` object as OpenAI-compatible servers write it. Embeddings have
/// no `completion_tokens`; extra fields (`*_details`) are skipped unbuilt.
#[derive(Deserialize)]
struct RawUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    total_tokens: Option<u64>,
}

impl From<RawUsage> for Usage {
    fn from(r: RawUsage) -> Self {
        Usage {
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
            total_tokens: r
                .total_tokens
                .unwrap_or(r.prompt_tokens.saturating_add(r.completion_tokens)),
        }
    }
}

impl Usage {
    /// Parses one `usage` object; `None` when it is not one.
    pub fn from_json(object: &[u8]) -> Option<Usage> {
        serde_json::from_slice::<RawUsage>(object)
            .ok()
            .map(Usage::from)
    }
}
