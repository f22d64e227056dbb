//! The `akash` market in the binary: built from `[market.akash]`
//! (`leasegate_controller::akash::AkashConfig`, see `config/akash.toml`),
//! and `leasegate controller close-all`, which stops everything this
//! controller owns and shows its progress on stderr.

use std::{io::Write, sync::Arc};

use leasegate_controller::{
    akash::{self, AkashConfig, AkashMarket, CloseStep},
    market::Market,
    sdl::RenderSdl,
};
use tokio::time::Instant;

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
    close_owned(
        &*market,
        &settings.controller.id,
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    )
    .await
}

/// Closes what controller `id` owns on `market`: one `closed DSEQ` line
/// per deployment and a total on `out` (for scripts), each step on
/// `progress` as it completes (for the operator waiting on a slow market).
async fn close_owned(
    market: &dyn Market,
    id: &str,
    out: &mut (dyn Write + Send),
    progress: &mut (dyn Write + Send),
) -> CliResult {
    let start = Instant::now();
    let mut step_start = start;
    let _ = writeln!(
        progress,
        "listing deployments on the {} market...",
        market.name()
    );
    let closed = akash::close_all_owned_with(market, id, &mut |step| {
        let _ = match step {
            CloseStep::Listed { owned, open } => writeln!(
                progress,
                "{owned} of {open} open deployment(s) belong to controller {id:?}"
            ),
            CloseStep::Closing { dseq, n, of } => {
                step_start = Instant::now();
                writeln!(progress, "closing deployment {dseq} ({n}/{of})...")
            }
            CloseStep::Closed { dseq } => writeln!(
                progress,
                "deployment {dseq} closed in {:.1}s",
                step_start.elapsed().as_secs_f64()
            ),
        };
    })
    .await?;
    for dseq in &closed {
        writeln!(out, "closed {dseq}")?;
    }
    writeln!(
        out,
        "closed {} deployment(s) owned by controller {id:?}",
        closed.len()
    )?;
    let _ = writeln!(progress, "done in {:.1}s", start.elapsed().as_secs_f64());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::unified::{Defaults, parse};
    use super::*;
    use leasegate_controller::{
        launcher::MemReplicas,
        market::{
            Tag,
            sim::{SimConfig, SimMarket},
        },
    };

    #[tokio::test(start_paused = true)]
    async fn close_all_shows_each_step_on_stderr_and_lists_what_it_closed_on_stdout() {
        let market = SimMarket::new(SimConfig::fast(1), Arc::new(MemReplicas::new()));
        let tag = |controller: &str, intent: &str| Tag {
            controller_id: controller.into(),
            intent_id: intent.into(),
        };
        let mut mine = Vec::new();
        for (controller, intent) in [("ctl-a", "i1"), ("ctl-b", "i2"), ("ctl-a", "i3")] {
            let created = market
                .create_deployment("sdl", &tag(controller, intent))
                .await
                .unwrap();
            if controller == "ctl-a" {
                mine.push(created.dseq.to_string());
            }
        }
        let (mut out, mut progress) = (Vec::new(), Vec::new());
        close_owned(&market, "ctl-a", &mut out, &mut progress)
            .await
            .unwrap();
        let out = String::from_utf8(out).unwrap();
        let progress = String::from_utf8(progress).unwrap();
        let want_out = format!(
            "closed {}\nclosed {}\nclosed 2 deployment(s) owned by controller \"ctl-a\"\n",
            mine[0], mine[1]
        );
        assert_eq!(out, want_out);
        let lines: Vec<&str> = progress.lines().collect();
        assert_eq!(lines[0], "listing deployments on the sim market...");
        assert_eq!(
            lines[1],
            "2 of 3 open deployment(s) belong to controller \"ctl-a\""
        );
        assert_eq!(lines[2], format!("closing deployment {} (1/2)...", mine[0]));
        assert!(lines[3].starts_with(&format!("deployment {} closed in ", mine[0])));
        assert_eq!(lines[4], format!("closing deployment {} (2/2)...", mine[1]));
        assert!(lines[6].starts_with("done in "), "{progress}");
        // Safe to repeat: nothing left to close.
        let (mut out, mut progress) = (Vec::new(), Vec::new());
        close_owned(&market, "ctl-a", &mut out, &mut progress)
            .await
            .unwrap();
        assert!(String::from_utf8(progress).unwrap().contains("0 of 1 open"));
        assert!(
            String::from_utf8(out)
                .unwrap()
                .starts_with("closed 0 deployment(s)")
        );
    }

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
