//! The demand trace: seeded, diurnal per region with phase shifts, bursts,
//! and per-request prompt and output token counts.
//!
//! Requests are drawn step by step from one seeded generator, so every
//! strategy of a run sees exactly the same requests in the same order.

use serde::Serialize;

/// Where clients are and how much they ask for.
#[derive(Clone, Debug, Serialize)]
pub struct ClientRegion {
    /// Short name in reports (`na`, `eu`, `as`).
    pub name: String,
    /// The Akash region the gateway reports this demand under (the
    /// controller places leases by these codes).
    pub code: String,
    pub lat: f64,
    pub lon: f64,
    /// Requests per second at the daily peak, before bursts.
    pub peak_rps: f64,
    /// Local time = UTC + this; demand peaks at 16:00 local.
    pub utc_offset_h: f64,
}

/// A window of extra demand in one region.
#[derive(Clone, Debug, Serialize)]
pub struct Burst {
    pub region: usize,
    pub start_s: f64,
    pub duration_s: f64,
    /// Demand is multiplied by this while the burst lasts.
    pub factor: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct TraceConfig {
    pub seed: u64,
    pub regions: Vec<ClientRegion>,
    /// Demand at the nightly trough as a share of the peak.
    pub trough_share: f64,
    /// Bursts placed by hand (tests); random ones are added to them.
    pub bursts: Vec<Burst>,
    /// Random bursts per region per day.
    pub bursts_per_region_day: f64,
    /// Median prompt and output lengths (log-normal around them).
    pub prompt_median: f64,
    pub output_median: f64,
}

impl TraceConfig {
    /// Three regions a third of a day apart; peaks of 16, 12 and 8 rps.
    pub fn three_regions(seed: u64) -> Self {
        let region = |name: &str, code: &str, (lat, lon), peak_rps, utc_offset_h| ClientRegion {
            name: name.into(),
            code: code.into(),
            lat,
            lon,
            peak_rps,
            utc_offset_h,
        };
        Self {
            seed,
            regions: vec![
                region("na", "na-us-east", (39.0, -77.5), 16.0, -5.0),
                region("eu", "eu-central", (50.1, 8.7), 12.0, 1.0),
                region("as", "as-east", (35.7, 139.7), 8.0, 9.0),
            ],
            trough_share: 0.25,
            bursts: Vec::new(),
            bursts_per_region_day: 4.0,
            prompt_median: 900.0,
            output_median: 220.0,
        }
    }
}

/// One client request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Request {
    /// Seconds since the start of the simulation.
    pub at: f64,
    pub region: usize,
    pub prompt_tokens: u32,
    pub output_tokens: u32,
}

/// The generator. Deterministic under `TraceConfig::seed`.
#[derive(Debug)]
pub struct Trace {
    cfg: TraceConfig,
    bursts: Vec<Burst>,
    rng: fastrand::Rng,
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut fastrand::Rng) -> f64 {
    let u = rng.f64().max(f64::MIN_POSITIVE);
    let v = rng.f64();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// A Poisson draw: exact for small means, normal beyond (the error there is
/// far below the trace's own noise).
fn poisson(rng: &mut fastrand::Rng, mean: f64) -> u32 {
    if mean <= 0.0 {
        return 0;
    }
    if mean < 30.0 {
        let limit = (-mean).exp();
        let (mut k, mut p) = (0u32, rng.f64());
        while p > limit {
            k += 1;
            p *= rng.f64();
        }
        return k;
    }
    (mean + mean.sqrt() * normal(rng)).round().max(0.0) as u32
}

fn lognormal(rng: &mut fastrand::Rng, median: f64, sigma: f64, lo: f64, hi: f64) -> u32 {
    (median * (sigma * normal(rng)).exp()).clamp(lo, hi).round() as u32
}

impl Trace {
    /// `horizon_s` bounds where random bursts may start.
    pub fn new(cfg: TraceConfig, horizon_s: f64) -> Self {
        let mut rng = fastrand::Rng::with_seed(cfg.seed);
        let mut bursts = cfg.bursts.clone();
        for region in 0..cfg.regions.len() {
            let n = poisson(&mut rng, cfg.bursts_per_region_day * horizon_s / 86_400.0);
            for _ in 0..n {
                bursts.push(Burst {
                    region,
                    start_s: rng.f64() * horizon_s,
                    // Launches and batch jobs: 5 to 30 minutes, 1.5x to 3x.
                    duration_s: 300.0 + rng.f64() * 1500.0,
                    factor: 1.5 + rng.f64() * 1.5,
                });
            }
        }
        bursts.sort_by(|a, b| a.start_s.total_cmp(&b.start_s));
        Self { cfg, bursts, rng }
    }

    pub fn config(&self) -> &TraceConfig {
        &self.cfg
    }

    pub fn bursts(&self) -> &[Burst] {
        &self.bursts
    }

    /// The request rate of `region` at `t` seconds (UTC midnight = 0).
    pub fn rate(&self, region: usize, t: f64) -> f64 {
        let Some(r) = self.cfg.regions.get(region) else {
            return 0.0;
        };
        let local_h = (t / 3600.0 + r.utc_offset_h).rem_euclid(24.0);
        // Lowest at 04:00 local, highest at 16:00.
        let wave = 0.5 - 0.5 * (std::f64::consts::TAU * (local_h - 4.0) / 24.0).cos();
        let base = r.peak_rps * (self.cfg.trough_share + (1.0 - self.cfg.trough_share) * wave);
        let factor: f64 = self
            .bursts
            .iter()
            .filter(|b| b.region == region && t >= b.start_s && t < b.start_s + b.duration_s)
            .map(|b| b.factor)
            .product();
        base * factor
    }

    /// Appends the requests arriving in `[t0, t0 + dt)`, sorted by time.
    pub fn step(&mut self, t0: f64, dt: f64, out: &mut Vec<Request>) {
        let start = out.len();
        for region in 0..self.cfg.regions.len() {
            let mean = self.rate(region, t0 + dt / 2.0) * dt;
            let n = poisson(&mut self.rng, mean);
            for _ in 0..n {
                let at = t0 + self.rng.f64() * dt;
                let prompt_tokens =
                    lognormal(&mut self.rng, self.cfg.prompt_median, 0.8, 16.0, 16_000.0);
                let output_tokens =
                    lognormal(&mut self.rng, self.cfg.output_median, 0.6, 8.0, 2_048.0);
                out.push(Request {
                    at,
                    region,
                    prompt_tokens,
                    output_tokens,
                });
            }
        }
        out[start..].sort_by(|a, b| a.at.total_cmp(&b.at));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_requests_and_demand_follows_the_sun() {
        let cfg = TraceConfig::three_regions(7);
        let (mut a, mut b) = (Trace::new(cfg.clone(), 86_400.0), Trace::new(cfg, 86_400.0));
        let (mut ra, mut rb) = (Vec::new(), Vec::new());
        for s in 0..600 {
            a.step(f64::from(s), 1.0, &mut ra);
            b.step(f64::from(s), 1.0, &mut rb);
        }
        assert_eq!(ra, rb);
        assert!(!ra.is_empty());
        // Europe peaks at 15:00 UTC and bottoms out at 03:00 UTC.
        let t = Trace::new(
            TraceConfig {
                bursts_per_region_day: 0.0,
                ..TraceConfig::three_regions(1)
            },
            86_400.0,
        );
        let (peak, trough) = (t.rate(1, 15.0 * 3600.0), t.rate(1, 3.0 * 3600.0));
        assert!((peak - 12.0).abs() < 1e-9, "{peak}");
        assert!((trough - 3.0).abs() < 1e-9, "{trough}");
    }
}
