//! Endpoint health: passive outlier detection on request outcomes and active probes.

mod outlier;
mod probe;

use std::time::Duration;

use serde::Deserialize;

pub use outlier::{Admission, Breaker, BreakerState};
pub use probe::{
    ProbeClient, ProbeError, parse_queue_depth, probe_client, probe_once, spawn_prober,
};

/// Health settings, the `[health]` table of the config.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// How often each endpoint is probed.
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    /// Deadline for each probe request (also the probe's connect timeout).
    #[serde(with = "humantime_serde")]
    pub probe_timeout: Duration,
    /// Consecutive failed requests that eject an endpoint.
    pub consecutive_failures: u32,
    /// First ejection time; each failed half-open trial doubles it.
    #[serde(with = "humantime_serde")]
    pub base_ejection_time: Duration,
    /// Cap on the doubled ejection time.
    #[serde(with = "humantime_serde")]
    pub max_ejection_time: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            probe_interval: Duration::from_secs(10),
            probe_timeout: Duration::from_secs(2),
            consecutive_failures: 5,
            base_ejection_time: Duration::from_secs(10),
            max_ejection_time: Duration::from_secs(300),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parses_humantime_and_refuses_unknown_keys() {
        let cfg: HealthConfig =
            toml::from_str("probe_interval = \"5s\"\nbase_ejection_time = \"250ms\"").unwrap();
        assert_eq!(cfg.probe_interval, Duration::from_secs(5));
        assert_eq!(cfg.base_ejection_time, Duration::from_millis(250));
        assert_eq!(cfg.consecutive_failures, 5, "unset keys keep defaults");
        let err = toml::from_str::<HealthConfig>("probe_intervall = \"5s\"").unwrap_err();
        assert!(err.to_string().contains("probe_intervall"), "{err}");
    }
}
