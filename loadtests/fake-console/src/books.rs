//! Verdicts over the fake's [`Ledger`]: what a chaos or crash test asks of
//! the market's own books, never of the controller's view of itself.

use std::collections::HashMap;

use crate::model::{Ledger, LedgerDeployment};

impl LedgerDeployment {
    pub fn is_open(&self) -> bool {
        self.closed_ms.is_none()
    }

    /// Open, with a lease the provider still runs (and we still pay for).
    pub fn has_active_lease(&self) -> bool {
        self.is_open()
            && self
                .leases
                .iter()
                .any(|l| l.state == "active" && l.closed_ms.is_none())
    }
}

impl Ledger {
    pub fn by_dseq(&self, dseq: &str) -> Option<&LedgerDeployment> {
        self.deployments.iter().find(|d| d.dseq == dseq)
    }

    pub fn open(&self) -> Vec<&LedgerDeployment> {
        self.deployments.iter().filter(|d| d.is_open()).collect()
    }

    pub fn active_leases(&self) -> Vec<&LedgerDeployment> {
        self.deployments
            .iter()
            .filter(|d| d.has_active_lease())
            .collect()
    }

    /// Open deployments without an active lease: escrow held for nothing.
    pub fn orphans(&self) -> Vec<&LedgerDeployment> {
        self.deployments
            .iter()
            .filter(|d| d.is_open() && !d.has_active_lease())
            .collect()
    }

    /// The most leases ever created under one group name (one intent's
    /// tag); more than 1 is a double lease.
    pub fn max_leases_per_tag(&self) -> usize {
        let mut per: HashMap<&str, usize> = HashMap::new();
        for d in &self.deployments {
            *per.entry(d.group_name.as_str()).or_default() += d.leases.len();
        }
        per.into_values().max().unwrap_or(0)
    }
}
