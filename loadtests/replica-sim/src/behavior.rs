//! What a simulated replica does: latency, output length, faults and limits.

use std::fmt;
use std::time::Duration;

/// The serving engine a replica pretends to be; it decides the `/metrics` names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Engine {
    /// `vllm:num_requests_waiting`, `vllm:num_requests_running`.
    #[default]
    Vllm,
    /// `tgi_queue_size`, `tgi_batch_current_size`.
    Tgi,
}

/// The live behaviour of a [`crate::Replica`]. A change applies to requests that
/// arrive after it; requests already being served keep the behaviour they started with.
#[derive(Clone, PartialEq)]
pub struct Behavior {
    /// Models listed by `/v1/models` and accepted in requests; others get 404.
    pub models: Vec<String>,
    pub engine: Engine,
    /// Delay before the first token, counted from when the request leaves the queue.
    pub ttft: Duration,
    /// Delay between consecutive tokens.
    pub inter_token: Duration,
    /// Output tokens per completion; a smaller `max_tokens` in the request wins.
    pub tokens: u32,
    /// Length of each `/v1/embeddings` vector.
    pub embedding_dim: usize,
    /// Fraction (0..=1) of inference requests answered with `error_status`.
    pub error_rate: f64,
    /// Status of injected errors; the body is an OpenAI-shaped error.
    pub error_status: u16,
    /// A stream sends this many token chunks, then nothing more and never closes.
    pub stall_after: Option<u32>,
    /// A stream sends this many token chunks, then the connection is dropped.
    pub disconnect_after: Option<u32>,
    /// Accept TCP connections but never read from them or answer on them.
    pub blackhole: bool,
    /// Requests generating at once; the rest wait in FIFO order.
    pub max_concurrency: u32,
    /// When set, `/v1/*` requires `Authorization: Bearer <key>` (like `vllm --api-key`).
    pub api_key: Option<String>,
    /// Seed of the error draws: the same seed and request order give the same errors.
    pub seed: u64,
}

impl Default for Behavior {
    fn default() -> Self {
        Self {
            models: vec!["sim-model".to_owned()],
            engine: Engine::Vllm,
            ttft: Duration::ZERO,
            inter_token: Duration::ZERO,
            tokens: 16,
            embedding_dim: 8,
            error_rate: 0.0,
            error_status: 503,
            stall_after: None,
            disconnect_after: None,
            blackhole: false,
            max_concurrency: 256,
            api_key: None,
            seed: 0,
        }
    }
}

impl Behavior {
    pub(crate) fn serves(&self, model: &str) -> bool {
        self.models.iter().any(|m| m == model)
    }
}

// Hand-written so the API key never reaches a log line.
impl fmt::Debug for Behavior {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Behavior")
            .field("models", &self.models)
            .field("engine", &self.engine)
            .field("ttft", &self.ttft)
            .field("inter_token", &self.inter_token)
            .field("tokens", &self.tokens)
            .field("embedding_dim", &self.embedding_dim)
            .field("error_rate", &self.error_rate)
            .field("error_status", &self.error_status)
            .field("stall_after", &self.stall_after)
            .field("disconnect_after", &self.disconnect_after)
            .field("blackhole", &self.blackhole)
            .field("max_concurrency", &self.max_concurrency)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("seed", &self.seed)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_api_key() {
        let b = Behavior {
            api_key: Some("sk-very-secret".into()),
            ..Behavior::default()
        };
        let text = format!("{b:?}");
        assert!(!text.contains("sk-very-secret"), "{text}");
        assert!(text.contains("<redacted>"));
    }
}
