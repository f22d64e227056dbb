//! Session affinity: a ketama consistent-hash ring over a pool's non-fallback endpoints.

use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;

use pingora_ketama::{Bucket, Continuum};
use sha2::{Digest, Sha256};

use crate::fleet::EndpointHandle;

/// Sends one conversation to one endpoint so its KV cache is reused.
///
/// The key's endpoint is the first one on the ring, walking from the key,
/// that is available, permitted and in the request's near tier: a ring over
/// the whole pool would otherwise pin a Frankfurt user to a Tokyo replica,
/// and when an endpoint is ejected its keys move consistently to its ring
/// successor instead of scattering. If that endpoint is at or above
/// `max_load`, scoring decides for this request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Affinity {
    pub max_load: f64,
}

impl Affinity {
    pub fn new(max_load: f64) -> Self {
        Self { max_load }
    }
}

/// The ring of one pool of one fleet version.
///
/// pingora-ketama places nodes by socket address, but endpoints are URLs
/// that may not resolve, and a URL can change while the replica (and its
/// cache) stays. So each endpoint gets a synthetic address hashed from its
/// stable id: the same id lands on the same ring points in every version,
/// and only the keys of endpoints that come or go move.
pub struct Ring {
    continuum: Continuum,
    index: HashMap<SocketAddr, usize>,
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("nodes", &self.index.len())
            .finish()
    }
}

fn synthetic_addr(id: &str) -> SocketAddr {
    let digest = Sha256::digest(id.as_bytes());
    let mut ip = [0u8; 16];
    ip.copy_from_slice(&digest[..16]);
    SocketAddr::new(
        Ipv6Addr::from(ip).into(),
        u16::from_be_bytes([digest[16], digest[17]]),
    )
}

impl Ring {
    /// Builds the ring over `endpoints`; ketama addresses at most 65,536 nodes.
    pub fn build(endpoints: &[Arc<EndpointHandle>]) -> Self {
        let mut index = HashMap::with_capacity(endpoints.len());
        let buckets: Vec<Bucket> = endpoints
            .iter()
            .take(usize::from(u16::MAX))
            .enumerate()
            .map(|(i, e)| {
                let addr = synthetic_addr(&e.spec.id);
                index.insert(addr, i);
                Bucket::new(addr, 1)
            })
            .collect();
        Self {
            continuum: Continuum::new(&buckets),
            index,
        }
    }

    /// Index (into the endpoints the ring was built from) owning `key`.
    pub fn lookup(&self, key: &str) -> Option<usize> {
        self.walk(key).next()
    }

    /// Endpoint indices in ring order starting at `key`'s owner: the
    /// consistent successors when the owner cannot take the key. The walk
    /// wraps around forever and repeats nodes, so callers bound it.
    pub fn walk<'r>(&'r self, key: &str) -> impl Iterator<Item = usize> + 'r {
        self.continuum
            .node_iter(key.as_bytes())
            .filter_map(|addr| self.index.get(addr).copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::testing::{ep, snap, view_with};
    use leasegate_fleet::Kind;

    #[test]
    fn keys_stay_put_when_an_unrelated_endpoint_leaves() {
        let ids: Vec<String> = (0..8).map(|i| format!("e{i}")).collect();
        let view = view_with(ids.iter().map(|id| ep(id, Kind::Lease, &["m"])).collect());
        let before = view.current();
        let ring = Ring::build(before.candidates("m").primary);
        let owner = |state: &crate::fleet::FleetState, ring: &Ring, k: &str| {
            let c = state.candidates("m");
            ring.lookup(k).map(|i| c.primary[i].spec.id.clone())
        };
        let keys: Vec<String> = (0..400).map(|i| format!("user-{i}")).collect();
        let first: Vec<_> = keys.iter().map(|k| owner(&before, &ring, k)).collect();
        let mut per = HashMap::new();
        for o in &first {
            *per.entry(o.clone().unwrap()).or_insert(0) += 1;
        }
        assert_eq!(per.len(), 8, "every endpoint owns some keys: {per:?}");
        view.publish(snap(
            2,
            ids.iter()
                .filter(|id| *id != "e3")
                .map(|id| ep(id, Kind::Lease, &["m"]))
                .collect(),
        ));
        let after = view.current();
        let ring2 = Ring::build(after.candidates("m").primary);
        for (k, was) in keys.iter().zip(&first) {
            let now = owner(&after, &ring2, k);
            if was.as_deref() != Some("e3") {
                assert_eq!(&now, was, "key {k} moved although its endpoint stayed");
            } else {
                assert_ne!(now.as_deref(), Some("e3"));
            }
        }
    }
}
