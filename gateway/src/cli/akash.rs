//! The `akash` market in the binary: built from `[market.akash]`
//! (`leasegate_controller::akash::AkashConfig`, see `config/akash.toml`),
//! and `leasegate controller close-all`, which stops everything this
//! controller owns.

use std::sync::Arc;

use leasegate_controller::{
    akash::{self, AkashConfig, AkashMarket},
    market::Market,
    sdl::RenderSdl,
};

use super::{
    CliResult,
    unified::{ControlSettings, MarketKind, MarketSection},
};

/// `[market.akash]` parsed and checked; the key path is in the message.
pub fn config(section: &MarketSection) -> Result<AkashConfig, String> {
    let table = section
        .akash
        .clone()
        .ok_or("[market.akash] is required with kind = \"akash\"")?;
    let cfg: AkashConfig = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| e.message().trim_end().to_owned())?;
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

/// The market and the SDL renderer that fits it; the Console API key is
/// read from the variable `api_key_env` names (never from the file).
pub fn market(section: &MarketSection) -> Result<(Arc<AkashMarket>, RenderSdl), String> {
    let cfg = config(section)?;
    akash::build(&cfg).map_err(|e| format!("akash market: {e}"))
}

/// Closes every open deployment tagged with this controller's id, and
/// nothing else; prints each dseq. Safe to repeat.
pub async fn close_all(settings: &ControlSettings) -> CliResult {
    if settings.market.kind != MarketKind::Akash {
        return Err(
            "close-all needs the akash market ([market] kind = \"akash\" or --market akash)".into(),
        );
    }
    let (market, _) = market(&settings.market)?;
    let market: Arc<dyn Market> = market;
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
