//! The built-in SDL template: one service, one GPU, the replica key on the
//! command line. Kept behind [`RenderSdl`] so real templates can replace it.
//!
//! The rendered text carries the replica key in clear: never log it.

use std::sync::Arc;

use leasegate_fleet::Secret;

use crate::pool::{Pool, PoolEngine};

/// Renders a pool's SDL with one replica's API key.
pub type RenderSdl = Arc<dyn Fn(&Pool, &Secret) -> String + Send + Sync>;

pub fn builtin() -> RenderSdl {
    Arc::new(render_builtin)
}

/// YAML-quotes a value (double quotes, escaped) so a model name cannot
/// break out of the template.
fn q(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

pub fn render_builtin(pool: &Pool, key: &Secret) -> String {
    let (image, args) = match pool.engine {
        PoolEngine::Vllm => (
            pool.image.as_deref().unwrap_or("vllm/vllm-openai:v0.11.0"),
            format!(
                "[\"--model\", {m}, \"--served-model-name\", {m}, \"--api-key\", {k}, \"--port\", \"8000\"]",
                m = q(&pool.model),
                k = q(key.expose()),
            ),
        ),
        // TGI has no key flag of its own; the image's wrapper is expected to
        // enforce `--api-key` in front of the router.
        PoolEngine::Tgi => (
            pool.image
                .as_deref()
                .unwrap_or("ghcr.io/huggingface/text-generation-inference:3.3.6"),
            format!(
                "[\"--model-id\", {m}, \"--served-model-name\", {m}, \"--api-key\", {k}, \"--port\", \"8000\"]",
                m = q(&pool.model),
                k = q(key.expose()),
            ),
        ),
    };
    let gpus: String = pool
        .gpu_models
        .iter()
        .map(|g| format!("                - model: {g}\n"))
        .collect();
    format!(
        "---
version: \"2.0\"
services:
  replica:
    image: {image}
    args: {args}
    expose:
      - port: 8000
        as: 8000
        to:
          - global: true
profiles:
  compute:
    replica:
      resources:
        cpu:
          units: 8
        memory:
          size: 64Gi
        storage:
          size: 200Gi
        gpu:
          units: 1
          attributes:
            vendor:
              nvidia:
{gpus}  placement:
    akash:
      pricing:
        replica:
          denom: uact
          amount: {max_uact}
deployment:
  replica:
    akash:
      profile: replica
      count: 1
",
        max_uact = (pool.max_price_per_hour * 1e6 / crate::market::BLOCKS_PER_HOUR).round()
    )
}
