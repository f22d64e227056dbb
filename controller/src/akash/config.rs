//! The `akash` market section of the controller config (`config/akash.toml`).
//!
//! Standalone for now: the controller's own config can embed [`AkashConfig`]
//! as its `[market.akash]` table. The API key itself is never in the file,
//! only the name of the environment variable that holds it.

use std::collections::BTreeMap;
use std::time::Duration;

use leasegate_fleet::Secret;
use serde::Deserialize;

use super::client::RetryPolicy;
use super::sdl::{DEFAULT_AUDITOR, Expose};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AkashConfig {
    /// `https://console-api.akash.network`, or the sandbox.
    pub base_url: String,
    /// The environment variable holding the Console API key.
    pub api_key_env: String,
    /// Per Console call attempt.
    #[serde(with = "humantime_serde", default = "default_timeout")]
    pub request_timeout: Duration,
    /// Attempts per idempotent call, the first included.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Initial escrow deposit in USD; ignored by Console when the managed
    /// wallet sets deposits itself.
    #[serde(default)]
    pub deposit_usd: f64,
    /// Deposit more when the runway falls below this.
    #[serde(with = "humantime_serde", default = "default_min_runway")]
    pub min_runway: Duration,
    /// Only providers signed by one of `auditors` may bid.
    #[serde(default = "yes")]
    pub audited_only: bool,
    #[serde(default = "default_auditors")]
    pub auditors: Vec<String>,
    #[serde(default = "default_expose")]
    pub expose: Expose,
    /// The most a replica may cost per GPU model, USD per hour.
    pub price_caps_usd_per_hour: BTreeMap<String, f64>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(20)
}
fn default_attempts() -> u32 {
    4
}
fn default_min_runway() -> Duration {
    Duration::from_secs(12 * 3600)
}
fn yes() -> bool {
    true
}
fn default_auditors() -> Vec<String> {
    vec![DEFAULT_AUDITOR.to_owned()]
}
fn default_expose() -> Expose {
    Expose::Ingress
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("akash: {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("akash: the API key variable {0} is not set or empty")]
    MissingKey(String),
}

impl AkashConfig {
    /// Checks the values serde cannot: URLs, ranges, caps.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_owned(),
            })
        };
        if !(self.base_url.starts_with("https://") || self.base_url.starts_with("http://")) {
            return bad(
                "base_url",
                "must start with https:// (or http:// for a local fake)",
            );
        }
        if self.api_key_env.trim().is_empty() {
            return bad("api_key_env", "must name an environment variable");
        }
        if self.max_attempts == 0 || self.max_attempts > 10 {
            return bad("max_attempts", "must be between 1 and 10");
        }
        if !(self.deposit_usd.is_finite() && self.deposit_usd >= 0.0) {
            return bad("deposit_usd", "must be zero or positive");
        }
        if self.audited_only && self.auditors.is_empty() {
            return bad(
                "auditors",
                "audited_only needs at least one auditor address",
            );
        }
        if self.price_caps_usd_per_hour.is_empty() {
            return bad("price_caps_usd_per_hour", "list at least one GPU model");
        }
        if let Some((m, _)) = self
            .price_caps_usd_per_hour
            .iter()
            .find(|(_, v)| !(v.is_finite() && **v > 0.0))
        {
            return Err(ConfigError::Invalid {
                key: "price_caps_usd_per_hour",
                reason: format!("{m}: must be a positive number"),
            });
        }
        Ok(())
    }

    /// Reads the API key from the configured environment variable.
    pub fn api_key_from_env(&self) -> Result<Secret, ConfigError> {
        match std::env::var(&self.api_key_env) {
            Ok(v) if !v.trim().is_empty() => Ok(Secret::new(v.trim())),
            _ => Err(ConfigError::MissingKey(self.api_key_env.clone())),
        }
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            timeout: self.request_timeout,
            attempts: self.max_attempts,
            ..RetryPolicy::default()
        }
    }

    /// Auditors to put in `signedBy`, or none when any provider may bid.
    pub fn signed_by(&self) -> Vec<String> {
        if self.audited_only {
            self.auditors.clone()
        } else {
            Vec::new()
        }
    }
}
