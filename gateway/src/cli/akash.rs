//! `--market akash`: the Akash market from `[market.akash]`, and the SDL each
//! pool's replicas are deployed with (the templates in `deploy/akash/`).

use std::sync::Arc;

use leasegate_controller::{
    akash::{
        AkashConfig, AkashMarket,
        sdl::{self, GpuSpec, SdlParams},
    },
    pool::{Pool, PoolEngine},
    sdl::{RenderInput, RenderSdl},
};

/// The market, with the API key read from the configured variable.
pub fn market(cfg: &AkashConfig) -> Result<AkashMarket, String> {
    AkashMarket::from_config(cfg).map_err(|e| e.to_string())
}

/// Renders a pool's replica with the Akash templates: the pool's GPU models,
/// its region, the auditors, and a price cap that is the lower of the pool's
/// `max_price_per_hour` and the highest `[market.akash]` cap of its GPUs.
pub fn render(cfg: &AkashConfig) -> RenderSdl {
    let cfg = cfg.clone();
    Arc::new(move |pool: &Pool, input: &RenderInput<'_>| {
        sdl::render(&params(&cfg, pool, input)).map_err(|e| e.to_string())
    })
}

fn params(cfg: &AkashConfig, pool: &Pool, input: &RenderInput<'_>) -> SdlParams {
    let cap = pool
        .gpu_models
        .iter()
        .filter_map(|g| cfg.price_caps_usd_per_hour.get(g))
        .fold(0.0_f64, |a, b| a.max(*b));
    let cap = if cap > 0.0 {
        cap.min(pool.max_price_per_hour)
    } else {
        pool.max_price_per_hour
    };
    let image = pool.image.clone().unwrap_or_else(|| {
        match pool.engine {
            PoolEngine::Vllm => "vllm/vllm-openai:v0.11.0",
            PoolEngine::Tgi => "ghcr.io/huggingface/text-generation-inference:3.3.4",
        }
        .to_owned()
    });
    SdlParams {
        engine: pool.engine.fleet(),
        image,
        model: pool.model.clone(),
        served_model_name: None,
        gpus: pool
            .gpu_models
            .iter()
            .map(|m| GpuSpec {
                model: m.clone(),
                ram: None,
            })
            .collect(),
        gpu_units: 1,
        cpu_units: 8.0,
        memory: "64Gi".into(),
        storage: "100Gi".into(),
        shm: "10Gi".into(),
        expose: cfg.expose,
        price_cap_uact: sdl::uact_per_block(cap),
        replica_key: input.replica_key.clone(),
        hf_token: None,
        region: input.region.map(str::to_owned),
        signed_by: if pool.audited_only {
            cfg.auditors.clone()
        } else {
            cfg.signed_by()
        },
        extra_args: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use leasegate_fleet::Secret;

    use super::*;

    #[test]
    fn a_pool_renders_with_its_gpus_region_key_and_the_lower_price_cap() {
        let cfg: AkashConfig = toml::from_str(include_str!("../../../config/akash.toml")).unwrap();
        let pool = crate::cli::unified::parse("", crate::cli::unified::Defaults::Serve)
            .unwrap()
            .control
            .pools
            .remove(0);
        let key = Secret::new("replica-key-0123456789abcdef");
        let input = RenderInput {
            replica_key: &key,
            region: Some("eu-central"),
        };
        let p = params(&cfg, &pool, &input);
        assert_eq!(p.gpus.len(), 2);
        // h100 caps at $3.00/h in akash.toml, the pool at $3.00/h too.
        assert_eq!(p.price_cap_uact, sdl::uact_per_block(3.0));
        assert_eq!(p.region.as_deref(), Some("eu-central"));
        let text = render(&cfg)(&pool, &input).unwrap();
        assert!(text.contains("eu-central"));
        assert!(text.contains(&pool.model));
    }
}
