//! The attempt order a selector hands the forwarder, with why each entry is where it is.

use std::ops::Deref;
use std::sync::Arc;

use crate::fleet::EndpointHandle;

/// Why an endpoint holds its place in an [`Order`]; shown in the
/// `x-leasegate-tier` explain header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// The session-affinity target of the request's key.
    Affinity,
    /// In the client's nearest acceptable region(s).
    Near,
    /// Another region: the near tier was slower, loaded or failing.
    Far,
    Fallback,
}

impl Placement {
    pub fn as_str(self) -> &'static str {
        match self {
            Placement::Affinity => "affinity",
            Placement::Near => "near",
            Placement::Far => "far",
            Placement::Fallback => "fallback",
        }
    }
}

/// Endpoints to try, in order: the affinity target (if any), the near
/// tier, the far tier, then fallbacks. Dereferences to the endpoint slice
/// the forwarder walks; the tier boundaries cost three counters, not a
/// second vector.
#[derive(Clone, Debug, Default)]
pub struct Order {
    endpoints: Vec<Arc<EndpointHandle>>,
    sticky: bool,
    /// Entries (the sticky one included) before the far tier.
    near_end: usize,
    /// Entries before the fallbacks.
    primary_end: usize,
}

impl Order {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self {
            endpoints: Vec::with_capacity(n),
            ..Self::default()
        }
    }

    /// Must come first, before any other push.
    pub(crate) fn push_sticky(&mut self, e: &Arc<EndpointHandle>) {
        if self.endpoints.is_empty() {
            self.sticky = true;
            self.push_primary(e, true);
        }
    }

    /// Near entries must all be pushed before far ones, and both before fallbacks.
    pub(crate) fn push_primary(&mut self, e: &Arc<EndpointHandle>, near: bool) {
        self.endpoints.push(Arc::clone(e));
        self.primary_end = self.endpoints.len();
        if near {
            self.near_end = self.primary_end;
        }
    }

    pub(crate) fn push_fallback(&mut self, e: Arc<EndpointHandle>) {
        self.endpoints.push(e);
    }

    /// The endpoints in attempt order.
    pub fn endpoints(&self) -> &[Arc<EndpointHandle>] {
        &self.endpoints
    }

    /// Why the entry at `i` is where it is; `None` past the end.
    pub fn placement(&self, i: usize) -> Option<Placement> {
        if i >= self.endpoints.len() {
            None
        } else if i == 0 && self.sticky {
            Some(Placement::Affinity)
        } else if i < self.near_end {
            Some(Placement::Near)
        } else if i < self.primary_end {
            Some(Placement::Far)
        } else {
            Some(Placement::Fallback)
        }
    }

    /// The placement of `e` in this order (pointer identity).
    pub fn placement_of(&self, e: &EndpointHandle) -> Option<Placement> {
        let i = self
            .endpoints
            .iter()
            .position(|x| std::ptr::eq(Arc::as_ptr(x), e))?;
        self.placement(i)
    }
}

impl Deref for Order {
    type Target = [Arc<EndpointHandle>];

    fn deref(&self) -> &Self::Target {
        &self.endpoints
    }
}
