//! The built-in SDL template: one service, one GPU, the replica key on the
//! command line. Kept behind [`RenderSdl`] so real templates can replace it.
//!
//! The rendered text carries the replica key in clear: never log it.

use std::sync::Arc;

use leasegate_fleet::Secret;

use crate::pool::{Pool, PoolEngine};

/// What varies per replica when rendering a pool's SDL.
#[derive(Clone, Copy, Debug)]
pub struct RenderInput<'a> {
    pub replica_key: &'a Secret,
    /// The region this acquisition aims at, if any; a template may pin it
    /// (`location-region`) or leave placement to bid scoring.
    pub region: Option<&'a str>,
}

/// Renders a pool's SDL for one replica. An `Err` (a template that cannot
/// express the pool) abandons the acquisition with that reason.
pub type RenderSdl = Arc<dyn Fn(&Pool, &RenderInput<'_>) -> Result<String, String> + Send + Sync>;

pub fn builtin() -> RenderSdl {
    Arc::new(|pool, input| Ok(render_builtin(pool, input.replica_key)))
}

/// The default renderer for a market, by [`crate::market::Market::name`]:
/// the `deploy/akash/` templates for `akash` (they carry the tag
/// placeholder its `create_deployment` needs; pass
/// `akash::renderer((&AkashConfig).into())` to honour the operator's
/// expose/auditor/price settings), the built-in template otherwise.
pub fn for_market(name: &str) -> RenderSdl {
    match name {
        "akash" => crate::akash::renderer(crate::akash::RenderOptions::default()),
        _ => builtin(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_name_cannot_break_out_of_the_template() {
        let mut pool: Pool = toml::from_str(
            "name=\"p\"\nmodel=\"m\"\nengine=\"vllm\"\ngpu_models=[\"h100\"]\nmin_replicas=1\nmax_replicas=1\nmax_price_per_hour=2.7\n",
        )
        .unwrap();
        pool.model = "evil\", \"--trust-remote-code".into();
        let key = Secret::new("sk-lg-1");
        let input = RenderInput {
            replica_key: &key,
            region: None,
        };
        let sdl = builtin()(&pool, &input).unwrap();
        assert!(sdl.contains(r#""evil\", \"--trust-remote-code""#), "{sdl}");
        assert!(sdl.contains(r#""--api-key", "sk-lg-1""#));
        // $2.7/h is 4,500 uact per block.
        assert!(sdl.contains("amount: 4500"), "{sdl}");
    }
}
