//! Pool specs (the desired state of one served model) and controller config.

use std::time::Duration;

use serde::Deserialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolEngine {
    Vllm,
    Tgi,
}

impl PoolEngine {
    pub fn fleet(self) -> leasegate_fleet::Engine {
        match self {
            Self::Vllm => leasegate_fleet::Engine::Vllm,
            Self::Tgi => leasegate_fleet::Engine::Tgi,
        }
    }
}

/// A target region and how much of the pool it should get when demand says
/// nothing.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionWeight {
    /// Akash `location-region`, e.g. `eu-central`.
    pub code: String,
    #[serde(default = "one")]
    pub weight: f64,
}

fn one() -> f64 {
    1.0
}

macro_rules! default_fns {
    ($($name:ident: $ty:ty = $val:expr;)*) => { $(fn $name() -> $ty { $val })* };
}

default_fns! {
    d_bid_window: Duration = Duration::from_secs(60);
    d_readiness: Duration = Duration::from_secs(15 * 60);
    d_runway: Duration = Duration::from_secs(6 * 3600);
    d_topup: Duration = Duration::from_secs(24 * 3600);
    d_unreachable: u32 = 3;
    d_unhealthy: Duration = Duration::from_secs(5 * 60);
    d_drain: Duration = Duration::from_secs(120);
    d_check: Duration = Duration::from_secs(30);
    d_probe: Duration = Duration::from_secs(5);
    d_concurrency: u32 = 32;
    d_rps: f64 = 4.0;
    d_up_cooldown: Duration = Duration::from_secs(60);
    d_down_cooldown: Duration = Duration::from_secs(600);
    d_backoff_base: Duration = Duration::from_secs(5);
    d_backoff_max: Duration = Duration::from_secs(300);
}

/// One pool: a model served by leased replicas, kept between min and max.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    pub name: String,
    /// The served model name (what clients ask for).
    pub model: String,
    pub engine: PoolEngine,
    /// Container image; a default per engine when absent.
    #[serde(default)]
    pub image: Option<String>,
    /// Accepted GPU models, lower case (`h100`, `a100`).
    pub gpu_models: Vec<String>,
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// Empty: anywhere, placed by demand alone.
    #[serde(default)]
    pub regions: Vec<RegionWeight>,
    pub max_price_per_hour: f64,
    #[serde(default)]
    pub audited_only: bool,
    /// Empty: every provider not denied.
    #[serde(default)]
    pub provider_allow: Vec<String>,
    #[serde(default)]
    pub provider_deny: Vec<String>,
    /// How long bids are collected before choosing.
    #[serde(default = "d_bid_window", with = "humantime_serde")]
    pub bid_window: Duration,
    /// From lease to a replica answering `/v1/models`.
    #[serde(default = "d_readiness", with = "humantime_serde")]
    pub readiness_timeout: Duration,
    /// Top up escrow when its runway falls below this.
    #[serde(default = "d_runway", with = "humantime_serde")]
    pub runway_threshold: Duration,
    /// A top-up buys this much runway at the lease's price.
    #[serde(default = "d_topup", with = "humantime_serde")]
    pub topup: Duration,
    /// Consecutive `status: null` checks before a lease is replaced.
    #[serde(default = "d_unreachable")]
    pub unreachable_checks: u32,
    /// A replica failing health checks this long is replaced.
    #[serde(default = "d_unhealthy", with = "humantime_serde")]
    pub unhealthy_after: Duration,
    /// A draining lease closes after this even with requests in flight.
    #[serde(default = "d_drain", with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Steady-state check period of each lease.
    #[serde(default = "d_check", with = "humantime_serde")]
    pub check_interval: Duration,
    /// Check period while an acquisition waits for its replica.
    #[serde(default = "d_probe", with = "humantime_serde")]
    pub probe_interval: Duration,
    /// Capacity hint published to the gateway.
    #[serde(default = "d_concurrency")]
    pub max_concurrency: u32,
    /// Requests per second one replica serves; demand / this = replicas.
    #[serde(default = "d_rps")]
    pub target_rps_per_replica: f64,
    #[serde(default = "d_up_cooldown", with = "humantime_serde")]
    pub scale_up_cooldown: Duration,
    #[serde(default = "d_down_cooldown", with = "humantime_serde")]
    pub scale_down_cooldown: Duration,
}

impl Pool {
    /// Checks what serde cannot; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        let err = |m: String| Err(format!("pool {:?}: {m}", self.name));
        if self.name.is_empty() || self.model.is_empty() {
            return err("name and model must not be empty".into());
        }
        if self.min_replicas > self.max_replicas {
            return err(format!(
                "min_replicas ({}) exceeds max_replicas ({})",
                self.min_replicas, self.max_replicas
            ));
        }
        if self.max_price_per_hour.is_nan() || self.max_price_per_hour <= 0.0 {
            return err("max_price_per_hour must be positive".into());
        }
        // Akash providers cancel their bids after five minutes; a window
        // near that chooses among bids that are about to vanish.
        if self.bid_window.is_zero() || self.bid_window > Duration::from_secs(270) {
            return err("bid_window must be between 1ms and 4m30s".into());
        }
        if self.gpu_models.is_empty() {
            return err("gpu_models must list at least one model".into());
        }
        if self.target_rps_per_replica.is_nan() || self.target_rps_per_replica <= 0.0 {
            return err("target_rps_per_replica must be positive".into());
        }
        if self
            .regions
            .iter()
            .any(|r| r.weight.is_nan() || r.weight < 0.0)
        {
            return err("region weights must be non-negative".into());
        }
        Ok(())
    }

    pub fn allows_provider(&self, owner: &str) -> bool {
        !self.provider_deny.iter().any(|p| p == owner)
            && (self.provider_allow.is_empty() || self.provider_allow.iter().any(|p| p == owner))
    }

    pub fn region_weight(&self, code: &str) -> Option<f64> {
        self.regions
            .iter()
            .find(|r| r.code == code)
            .map(|r| r.weight)
    }
}

/// Retry timing after a failed reconcile.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    #[serde(default = "d_backoff_base", with = "humantime_serde")]
    pub base: Duration,
    #[serde(default = "d_backoff_max", with = "humantime_serde")]
    pub max: Duration,
    /// Spread retries by up to ±20% so pools do not retry in lockstep.
    #[serde(default)]
    pub jitter: bool,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: d_backoff_base(),
            max: d_backoff_max(),
            jitter: false,
        }
    }
}

/// The controller's whole configuration.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerConfig {
    /// Written into every deployment's tag; a restarted controller adopts
    /// only deployments carrying its own id.
    pub controller_id: String,
    #[serde(default)]
    pub pools: Vec<Pool>,
    #[serde(default)]
    pub backoff: Backoff,
}

impl ControllerConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.controller_id.is_empty() {
            return Err("controller_id must not be empty".into());
        }
        for (i, p) in self.pools.iter().enumerate() {
            p.validate()?;
            if self.pools[..i].iter().any(|q| q.name == p.name) {
                return Err(format!("pool {:?} is defined twice", p.name));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_parses_with_defaults_and_rejects_unknown_fields() {
        let cfg: ControllerConfig = toml::from_str(
            r#"
            controller_id = "c1"
            [[pools]]
            name = "llama"
            model = "llama-3-8b"
            engine = "vllm"
            gpu_models = ["h100", "a100"]
            min_replicas = 1
            max_replicas = 3
            max_price_per_hour = 3.0
            regions = [{ code = "eu-central", weight = 2.0 }, { code = "na-us-west" }]
            bid_window = "30s"
            "#,
        )
        .unwrap();
        cfg.validate().unwrap();
        let p = &cfg.pools[0];
        assert_eq!(p.bid_window, Duration::from_secs(30));
        assert_eq!(p.unreachable_checks, 3);
        assert_eq!(p.region_weight("na-us-west"), Some(1.0));
        let bad = toml::from_str::<ControllerConfig>(
            "controller_id = \"c\"\n[[pools]]\nname=\"a\"\nmodel=\"m\"\nengine=\"vllm\"\ngpu_models=[\"h100\"]\nmin_replicas=1\nmax_replicas=1\nmax_price_per_hour=1.0\nbogus=1\n",
        );
        assert!(bad.unwrap_err().to_string().contains("bogus"));
    }

    #[test]
    fn min_above_max_is_refused() {
        let mut cfg: ControllerConfig = toml::from_str(
            "controller_id = \"c\"\n[[pools]]\nname=\"a\"\nmodel=\"m\"\nengine=\"tgi\"\ngpu_models=[\"h100\"]\nmin_replicas=3\nmax_replicas=1\nmax_price_per_hour=1.0\n",
        )
        .unwrap();
        assert!(cfg.validate().unwrap_err().contains("min_replicas"));
        cfg.pools[0].max_replicas = 3;
        cfg.validate().unwrap();
    }

    #[test]
    fn a_bid_window_past_the_providers_five_minutes_is_refused() {
        let mut cfg: ControllerConfig = toml::from_str(
            "controller_id = \"c\"\n[[pools]]\nname=\"a\"\nmodel=\"m\"\nengine=\"tgi\"\ngpu_models=[\"h100\"]\nmin_replicas=1\nmax_replicas=1\nmax_price_per_hour=1.0\nbid_window=\"5m\"\n",
        )
        .unwrap();
        assert!(cfg.validate().unwrap_err().contains("bid_window"));
        cfg.pools[0].bid_window = Duration::from_secs(90);
        cfg.validate().unwrap();
    }
}
