//! Percentile summaries of microsecond samples, rendered as JSON objects.

use std::time::Duration;

pub fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// `{"n":..,"mean_us":..,"p50_us":..,"p90_us":..,"p99_us":..,"p999_us":..,"max_us":..}`.
pub fn summary(mut v: Vec<u32>) -> String {
    if v.is_empty() {
        return "{\"n\":0}".to_string();
    }
    v.sort_unstable();
    let n = v.len();
    let pct = |p: f64| -> u32 {
        // Nearest-rank percentile.
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        v[rank.clamp(1, n) - 1]
    };
    let mean = v.iter().map(|&x| u64::from(x)).sum::<u64>() as f64 / n as f64;
    format!(
        "{{\"n\":{n},\"mean_us\":{mean:.1},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{}}}",
        pct(50.0),
        pct(90.0),
        pct(99.0),
        pct(99.9),
        v[n - 1]
    )
}

/// Outcome counters shared by the modes.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub ok: u64,
    pub non_2xx: u64,
    pub errors: u64,
}

impl Counts {
    pub fn add(&mut self, o: Counts) {
        self.ok += o.ok;
        self.non_2xx += o.non_2xx;
        self.errors += o.errors;
    }

    pub fn json(&self) -> String {
        format!(
            "\"ok\":{},\"non_2xx\":{},\"errors\":{}",
            self.ok, self.non_2xx, self.errors
        )
    }
}
