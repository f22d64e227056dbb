//! A modelled replica: first come, first served over a fixed number of
//! batch slots, with the time each slot is busy kept for the idle-spend
//! figure. No real replica runs in the simulation; this stands in for one.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Microseconds, so slot times order exactly.
fn us(t: f64) -> u64 {
    (t.max(0.0) * 1e6) as u64
}

#[derive(Debug)]
pub struct Replica {
    /// When each slot is next free.
    slots: BinaryHeap<Reverse<u64>>,
    /// Only time from here on is counted (the warm-up is not).
    count_from: f64,
    busy_since: f64,
    busy_until: f64,
    busy_s: f64,
}

/// Where one admitted request stands.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Admitted {
    /// Time queued before a slot took it.
    pub wait_s: f64,
    /// When its slot frees.
    pub done_at: f64,
}

impl Replica {
    pub fn new(slots: u32, count_from: f64) -> Self {
        Self {
            slots: (0..slots.max(1)).map(|_| Reverse(0)).collect(),
            count_from,
            busy_since: 0.0,
            busy_until: 0.0,
            busy_s: 0.0,
        }
    }

    /// Takes a request arriving at `t` that holds a slot for `service_s`.
    pub fn admit(&mut self, t: f64, service_s: f64) -> Admitted {
        let free = self.slots.pop().map_or(0, |Reverse(f)| f);
        let start = t.max(free as f64 / 1e6);
        let done_at = start + service_s;
        self.slots.push(Reverse(us(done_at)));
        if t > self.busy_until {
            self.close_interval();
            self.busy_since = t;
        }
        self.busy_until = self.busy_until.max(done_at);
        Admitted {
            wait_s: start - t,
            done_at,
        }
    }

    fn close_interval(&mut self) {
        let from = self.busy_since.max(self.count_from);
        self.busy_s += (self.busy_until - from).max(0.0);
        self.busy_since = self.busy_until;
    }

    /// Seconds with at least one request in flight, up to `end`.
    pub fn busy_seconds(&self, end: f64) -> f64 {
        let from = self.busy_since.max(self.count_from);
        self.busy_s + (self.busy_until.min(end) - from).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queues_beyond_its_slots_and_counts_busy_time_once() {
        let mut r = Replica::new(2, 0.0);
        assert_eq!(r.admit(0.0, 10.0).wait_s, 0.0);
        assert_eq!(r.admit(1.0, 10.0).wait_s, 0.0);
        // Both slots busy until 10 s: the third waits for the first.
        let third = r.admit(2.0, 10.0);
        assert!((third.wait_s - 8.0).abs() < 1e-6, "{third:?}");
        assert!((third.done_at - 20.0).abs() < 1e-6);
        // Busy 0..20, idle 20..30, busy 30..31.
        r.admit(30.0, 1.0);
        assert!((r.busy_seconds(100.0) - 21.0).abs() < 1e-6);
        assert!((r.busy_seconds(30.5) - 20.5).abs() < 1e-6);
    }
}
