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
        Self::scanned(object).or_else(|| {
            serde_json::from_slice::<RawUsage>(object)
                .ok()
                .map(Usage::from)
        })
    }

    /// The common case without serde: the peek's scan finds the three counts
    /// and each is plain digits. Anything else (`null`, a fraction, a repeated
    /// or escaped key, a malformed object) is left to serde, which decides.
    fn scanned(object: &[u8]) -> Option<Usage> {
        const NAMES: [&[u8]; 3] = [b"prompt_tokens", b"completion_tokens", b"total_tokens"];
        let [prompt, completion, total] = crate::openai::scan_fields(object, NAMES)?;
        let count = |raw: Option<&[u8]>| match raw {
            None => Some(None),
            Some(r) if !r.is_empty() && r.iter().all(u8::is_ascii_digit) => {
                std::str::from_utf8(r).ok()?.parse().ok().map(Some)
            }
            Some(_) => None,
        };
        Some(Usage::from(RawUsage {
            prompt_tokens: count(prompt)?.unwrap_or(0),
            completion_tokens: count(completion)?.unwrap_or(0),
            total_tokens: count(total)?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by_serde(object: &[u8]) -> Option<Usage> {
        serde_json::from_slice::<RawUsage>(object)
            .ok()
            .map(Usage::from)
    }

    #[test]
    fn the_scanned_counts_are_serdes_and_the_common_shapes_skip_serde() {
        let common: [&[u8]; 3] = [
            br#"{"prompt_tokens":12,"completion_tokens":30,"total_tokens":42}"#,
            br#"{ "prompt_tokens": 7, "total_tokens": 7 }"#,
            br#"{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7,
                "prompt_tokens_details":{"cached_tokens":0,"total_tokens":99}}"#,
        ];
        for object in common {
            let text = String::from_utf8_lossy(object);
            assert!(Usage::scanned(object).is_some(), "{text}");
            assert_eq!(Usage::from_json(object), by_serde(object), "{text}");
        }
        assert_eq!(
            Usage::from_json(common[2]),
            Some(Usage {
                prompt_tokens: 5,
                completion_tokens: 2,
                total_tokens: 7
            })
        );
        // Left to serde, with serde's answer.
        for object in [
            &br#"{"prompt_tokens":1,"completion_tokens":2,"total_tokens":null}"#[..],
            br#"{"prompt_tokens":1.5}"#,
            br#"{"prompt_tokens":-1}"#,
            br#"{"prompt_tokens":18446744073709551616}"#,
            br#"{"prompt_tokens":1,"prompt_tokens":2}"#,
            br#"{"prompt_\u0074okens":3}"#,
            br#"{"prompt_tokens":"3"}"#,
            br#"{"prompt_tokens":3"#,
            b"[]",
        ] {
            let text = String::from_utf8_lossy(object);
            assert!(Usage::scanned(object).is_none(), "{text}");
            assert_eq!(Usage::from_json(object), by_serde(object), "{text}");
        }
        assert_eq!(
            Usage::from_json(br#"{"prompt_tokens":1,"completion_tokens":2,"total_tokens":null}"#),
            Some(Usage {
                prompt_tokens: 1,
                completion_tokens: 2,
                total_tokens: 3
            })
        );
    }
}
