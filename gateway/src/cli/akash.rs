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
    let cfg = section
        .akash
        .clone()
        .ok_or("[market.akash] is required with kind = \"akash\"")?;
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

/// The market and the SDL renderer that fits it; the Console API key is
/// read from the variable `api_key_env` names (never from the file).
pub fn market(section: &MarketSection) -> Result<(Arc<AkashMarket>, RenderSdl), String> {
    let cfg = config(section)?;
    // Said plainly up front; the message names the variable, not its value.
    cfg.api_key_from_env().map_err(|e| e.to_string())?;
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

#[cfg(test)]
mod tests {
    use super::super::unified::{Defaults, parse};
    use super::*;

    fn with_market_akash(akash: toml::Table) -> String {
        let mut market = toml::Table::new();
        market.insert("kind".into(), "akash".into());
        market.insert("akash".into(), toml::Value::Table(akash));
        let mut doc = toml::Table::new();
        doc.insert("market".into(), toml::Value::Table(market));
        toml::to_string(&doc).unwrap()
    }

    #[test]
    fn config_akash_toml_is_the_market_akash_table_and_typos_name_their_key() {
        let example: toml::Table = include_str!("../../../config/akash.toml").parse().unwrap();
        let u = parse(&with_market_akash(example.clone()), Defaults::Serve).unwrap();
        let cfg = config(&u.control.market).unwrap();
        assert_eq!(cfg.api_key_env, "AKASH_CONSOLE_API_KEY");
        let mut typo = example;
        typo.insert("bid_windw".into(), "30s".into());
        let problems: Vec<String> = parse(&with_market_akash(typo), Defaults::Serve)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("market.akash:") && p.contains("bid_windw")),
            "{problems:?}"
        );
    }
}
