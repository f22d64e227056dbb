//! `--market akash`: the Akash market from `[market.akash]`, the SDL each
//! pool's replicas are deployed with (the controller's adapter over the
//! templates in `deploy/akash/`), and `leasegate controller close-all`,
//! which stops everything this controller owns.

use std::sync::Arc;

use leasegate_controller::{
    akash::{self, AkashConfig, AkashMarket},
    market::Market,
    sdl::RenderSdl,
};

use super::{
    CliResult,
    unified::{ControlSettings, MarketKind},
};

/// The market, with the API key read from the configured variable (the
/// message names the variable, never a value).
pub fn market(cfg: &AkashConfig) -> Result<AkashMarket, String> {
    cfg.api_key_from_env().map_err(|e| e.to_string())?;
    AkashMarket::from_config(cfg).map_err(|e| e.to_string())
}

/// Renders a pool's replica with the Akash templates: the pool's GPU models,
/// its region, the auditors, and a price cap that is the lower of the pool's
/// `max_price_per_hour` and the highest `[market.akash]` cap of its GPUs.
pub fn render(cfg: &AkashConfig) -> RenderSdl {
    akash::renderer(cfg.into())
}

/// Closes every open deployment tagged with this controller's id, and
/// nothing else; prints each dseq. Safe to repeat.
pub async fn close_all(settings: &ControlSettings) -> CliResult {
    let cfg = match (&settings.market.kind, &settings.market.akash) {
        (MarketKind::Akash, Some(cfg)) => cfg,
        _ => {
            return Err(
                "close-all needs the akash market: [market] kind = \"akash\" (or --market akash) and [market.akash]"
                    .into(),
            );
        }
    };
    let market: Arc<dyn Market> = Arc::new(market(cfg)?);
    let id = &settings.controller.id;
    let closed = akash::close_all_owned(&*market, id).await?;
    for dseq in &closed {
        println!("closed {dseq}");
    }
    println!(
        "closed {} deployment(s) owned by controller {id:?}",
        closed.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use leasegate_controller::akash::render::params;
    use leasegate_controller::akash::sdl;
    use leasegate_controller::sdl::RenderInput;
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
        let p = params(&pool, &input, &(&cfg).into());
        assert_eq!(p.gpus.len(), 2);
        // h100 caps at $3.00/h in akash.toml, the pool at $3.00/h too.
        assert_eq!(p.price_cap_uact, sdl::uact_per_block(3.0));
        assert_eq!(p.region.as_deref(), Some("eu-central"));
        assert_eq!(p.signed_by, cfg.auditors);
        let text = render(&cfg)(&pool, &input).unwrap();
        assert!(text.contains("eu-central"));
        assert!(text.contains(&pool.model));
    }
}
