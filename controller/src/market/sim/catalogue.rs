//! The sim market's configuration and its default provider catalogue.

use std::time::Duration;

/// One simulated provider.
#[derive(Clone, Debug, PartialEq)]
pub struct SimProvider {
    /// The provider's account address (its id on the market).
    pub owner: String,
    /// Akash `location-region`.
    pub region: String,
    pub country: String,
    pub city: String,
    pub lat: f64,
    pub lon: f64,
    /// GPU model (lower case) → asking price in uact per block.
    pub prices: Vec<(String, f64)>,
    /// Typical time from deployment creation to this provider's bid.
    pub bid_delay: Duration,
    /// Probability (0–1) that the provider does not bid at all.
    pub no_bid_chance: f64,
    pub audited: bool,
    pub uptime_7d: f64,
}

impl SimProvider {
    pub fn gpu_models(&self) -> Vec<String> {
        self.prices.iter().map(|(m, _)| m.clone()).collect()
    }
}

/// Everything the sim market does over time; tests shrink the durations.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Bid jitter, no-bid draws and price noise all come from this seed.
    pub seed: u64,
    pub providers: Vec<SimProvider>,
    /// Providers cancel open bids after this (Akash: about 5 minutes).
    pub bid_ttl: Duration,
    /// A provider that is down closes its leases as `unstable` after this
    /// (Akash: about 7–8 minutes of unhealthy containers).
    pub unstable_after: Duration,
    /// From lease creation until the service URI answers (image pull, load).
    pub replica_start_delay: Duration,
    /// Escrow funded at deployment creation, in USD.
    pub initial_deposit_usd: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            providers: default_catalogue(),
            bid_ttl: Duration::from_secs(300),
            unstable_after: Duration::from_secs(450),
            replica_start_delay: Duration::from_secs(60),
            // Console's minimum deposit is small; a few hours of an H100.
            initial_deposit_usd: 10.0,
        }
    }
}

impl SimConfig {
    /// Every market delay divided by `factor` (bids, bid lifetime,
    /// `unstable` closure, replica start): `scaled(seed, 20.0)` suits a demo,
    /// [`SimConfig::fast`] suits tests.
    pub fn scaled(seed: u64, factor: f64) -> Self {
        let base = Self::default();
        let mut providers = base.providers;
        for p in &mut providers {
            p.bid_delay = p.bid_delay.div_f64(factor);
        }
        Self {
            seed,
            providers,
            bid_ttl: base.bid_ttl.div_f64(factor),
            unstable_after: base.unstable_after.div_f64(factor),
            replica_start_delay: base.replica_start_delay.div_f64(factor),
            initial_deposit_usd: base.initial_deposit_usd,
        }
    }

    /// Durations scaled down for tests: bids in tens of milliseconds.
    pub fn fast(seed: u64) -> Self {
        Self {
            bid_ttl: Duration::from_secs(30),
            unstable_after: Duration::from_secs(20),
            replica_start_delay: Duration::from_millis(200),
            ..Self::scaled(seed, 1000.0)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn provider(
    owner: &str,
    region: &str,
    country: &str,
    city: &str,
    (lat, lon): (f64, f64),
    prices: &[(&str, f64)],
    bid_delay_s: u64,
    no_bid_chance: f64,
    audited: bool,
    uptime_7d: f64,
) -> SimProvider {
    SimProvider {
        owner: owner.to_string(),
        region: region.to_string(),
        country: country.to_string(),
        city: city.to_string(),
        lat,
        lon,
        prices: prices.iter().map(|(m, p)| (m.to_string(), *p)).collect(),
        bid_delay: Duration::from_secs(bid_delay_s),
        no_bid_chance,
        audited,
        uptime_7d,
    }
}

/// Providers modelled on the 2026 market: H100 at about 4,400–4,500
/// uact/block ($2.6–2.7/h), A100 80GB at about 2,850 ($1.71/h).
pub fn default_catalogue() -> Vec<SimProvider> {
    vec![
        provider(
            "akash1sim-usw-a",
            "na-us-west",
            "US",
            "Los Angeles",
            (34.05, -118.24),
            &[("h100", 4450.0), ("a100", 2850.0)],
            20,
            0.1,
            true,
            0.995,
        ),
        provider(
            "akash1sim-usw-b",
            "na-us-west",
            "US",
            "Portland",
            (45.52, -122.68),
            &[("a100", 2800.0)],
            40,
            0.2,
            false,
            0.97,
        ),
        provider(
            "akash1sim-use-a",
            "na-us-east",
            "US",
            "Ashburn",
            (39.04, -77.49),
            &[("h100", 4500.0)],
            25,
            0.1,
            true,
            0.99,
        ),
        provider(
            "akash1sim-euc-a",
            "eu-central",
            "DE",
            "Frankfurt",
            (50.11, 8.68),
            &[("h100", 4480.0), ("a100", 2870.0)],
            30,
            0.15,
            true,
            0.993,
        ),
        provider(
            "akash1sim-euw-a",
            "eu-west",
            "NL",
            "Amsterdam",
            (52.37, 4.90),
            &[("h100", 4400.0)],
            60,
            0.3,
            false,
            0.95,
        ),
        provider(
            "akash1sim-ase-a",
            "as-east",
            "JP",
            "Tokyo",
            (35.68, 139.69),
            &[("h100", 4520.0), ("a100", 2900.0)],
            45,
            0.2,
            true,
            0.985,
        ),
        provider(
            "akash1sim-ass-a",
            "as-southeast",
            "SG",
            "Singapore",
            (1.35, 103.82),
            &[("a100", 2830.0)],
            50,
            0.25,
            false,
            0.96,
        ),
    ]
}
