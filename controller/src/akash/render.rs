//! The controller's [`RenderSdl`] hook for the `akash` market: a pool and
//! one replica's key and region become [`SdlParams`] for the templates in
//! `deploy/akash/`.
//!
//! The rendered text keeps the `{{leasegate_tag}}` placeholder, which
//! `AkashMarket::create_deployment` fills with the intent's tag. Only the
//! akash market gets these SDLs: the sim market keeps the built-in template
//! (see [`crate::sdl::for_market`]), although it would tolerate these too,
//! since it only reads the engine flags.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::config::AkashConfig;
use super::sdl::{self, DEFAULT_AUDITOR, Expose, GpuSpec, SdlParams};
use crate::pool::{Pool, PoolEngine};
use crate::sdl::{RenderInput, RenderSdl};

/// Default images, pinned so a replacement runs what the replica it
/// replaces ran.
pub const VLLM_IMAGE: &str = "vllm/vllm-openai:v0.11.0";
pub const TGI_IMAGE: &str = "ghcr.io/huggingface/text-generation-inference:3.3.6";

/// What the operator's `[market.akash]` section adds to a pool's spec.
#[derive(Clone, Debug, PartialEq)]
pub struct RenderOptions {
    pub expose: Expose,
    /// Auditors for `signedBy` when every pool must be audited; empty means
    /// only pools with `audited_only` get [`DEFAULT_AUDITOR`].
    pub signed_by: Vec<String>,
    /// Per GPU model, USD per hour; a pool's cap is never raised by these.
    pub price_caps: BTreeMap<String, f64>,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self {
            expose: Expose::Ingress,
            signed_by: Vec::new(),
            price_caps: BTreeMap::new(),
        }
    }
}

impl From<&AkashConfig> for RenderOptions {
    fn from(cfg: &AkashConfig) -> Self {
        Self {
            expose: cfg.expose,
            signed_by: cfg.signed_by(),
            price_caps: cfg.price_caps_usd_per_hour.clone(),
        }
    }
}

/// The price cap for a pool in USD per hour: its own `max_price_per_hour`,
/// lowered to the highest configured cap among its GPU models when any of
/// them has one (a bid on the dearest accepted GPU must still fit).
pub fn price_cap_usd(pool: &Pool, opts: &RenderOptions) -> f64 {
    let configured = pool
        .gpu_models
        .iter()
        .filter_map(|g| opts.price_caps.get(&g.to_ascii_lowercase()))
        .copied()
        .fold(None, |m: Option<f64>, c| Some(m.map_or(c, |m| m.max(c))));
    configured.map_or(pool.max_price_per_hour, |c| c.min(pool.max_price_per_hour))
}

/// The template parameters for one replica of `pool`.
pub fn params(pool: &Pool, input: &RenderInput<'_>, opts: &RenderOptions) -> SdlParams {
    let (engine, image) = match pool.engine {
        PoolEngine::Vllm => (leasegate_fleet::Engine::Vllm, VLLM_IMAGE),
        PoolEngine::Tgi => (leasegate_fleet::Engine::Tgi, TGI_IMAGE),
    };
    let signed_by = if !opts.signed_by.is_empty() {
        opts.signed_by.clone()
    } else if pool.audited_only {
        vec![DEFAULT_AUDITOR.to_owned()]
    } else {
        Vec::new()
    };
    SdlParams {
        engine,
        image: pool.image.clone().unwrap_or_else(|| image.to_owned()),
        model: pool.model.clone(),
        served_model_name: None,
        gpus: pool
            .gpu_models
            .iter()
            .map(|g| GpuSpec {
                model: g.clone(),
                ram: None,
            })
            .collect(),
        gpu_units: 1,
        cpu_units: 8.0,
        memory: "64Gi".into(),
        storage: "200Gi".into(),
        shm: "16Gi".into(),
        expose: opts.expose,
        price_cap_uact: sdl::uact_per_block(price_cap_usd(pool, opts)),
        replica_key: input.replica_key.clone(),
        hf_token: None,
        region: input.region.map(str::to_owned),
        signed_by,
        extra_args: Vec::new(),
    }
}

/// The hook the controller calls per acquisition.
pub fn renderer(opts: RenderOptions) -> RenderSdl {
    Arc::new(move |pool, input| {
        // The error names the field, never the key's value.
        sdl::render(&params(pool, input, &opts)).map_err(|e| e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use leasegate_fleet::Secret;

    fn pool() -> Pool {
        toml::from_str(
            "name=\"p\"\nmodel=\"meta-llama/Llama-3.1-8B-Instruct\"\nengine=\"vllm\"\ngpu_models=[\"h100\",\"a100\"]\nmin_replicas=1\nmax_replicas=1\nmax_price_per_hour=2.7\naudited_only=true\n",
        )
        .unwrap()
    }

    #[test]
    fn a_pool_becomes_a_tagged_akash_sdl_with_its_key_region_cap_and_auditor() {
        let key = Secret::new("sk-lg-0123456789abcdef");
        let input = RenderInput {
            replica_key: &key,
            region: Some("eu-central"),
        };
        let sdl = renderer(RenderOptions::default())(&pool(), &input).unwrap();
        assert!(sdl.contains(super::super::tag::PLACEHOLDER), "{sdl}");
        assert!(
            sdl.contains(r#""--api-key","sk-lg-0123456789abcdef""#),
            "{sdl}"
        );
        assert!(sdl.contains(r#"{"location-region":"eu-central"}"#), "{sdl}");
        assert!(sdl.contains(DEFAULT_AUDITOR), "{sdl}");
        // $2.7/h is 4,500 uact per block.
        assert!(sdl.contains("amount: 4500"), "{sdl}");
        assert!(
            sdl.contains(r#"[{"model":"h100"},{"model":"a100"}]"#),
            "{sdl}"
        );
        assert!(sdl.contains(VLLM_IMAGE));
    }

    #[test]
    fn configured_caps_lower_but_never_raise_the_pool_cap() {
        let mut opts = RenderOptions::default();
        opts.price_caps.insert("h100".into(), 3.0);
        opts.price_caps.insert("a100".into(), 2.0);
        assert_eq!(price_cap_usd(&pool(), &opts), 2.7);
        opts.price_caps.insert("h100".into(), 2.5);
        assert_eq!(price_cap_usd(&pool(), &opts), 2.5);
        opts.price_caps.clear();
        opts.price_caps.insert("l40s".into(), 1.0);
        assert_eq!(price_cap_usd(&pool(), &opts), 2.7);
    }

    #[test]
    fn a_short_key_is_refused_without_showing_it() {
        let key = Secret::new("short-secret");
        let input = RenderInput {
            replica_key: &key,
            region: None,
        };
        let err = renderer(RenderOptions::default())(&pool(), &input).unwrap_err();
        assert!(
            err.contains("replica_key") && !err.contains("short-secret"),
            "{err}"
        );
    }
}
