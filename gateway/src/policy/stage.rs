//! The policy stage of one request: model access, admission, residency on the attempt order, and settlement at the end.

use std::{sync::Arc, time::Duration};

use super::{
    ClientKey, LimitKind, Policy, Rates, Ticket, estimate_tokens, residency,
    usage::{Price, TapSlot, UsageTail},
};
use crate::{
    error::ApiError,
    fleet::{Candidates, EndpointHandle},
};

/// Requests refused by a key's limits, by key name and limit.
pub const LIMITED: &str = "leasegate_client_limited_total";

/// What the policy stage keeps for a request until its response ends.
#[derive(Debug, Default)]
pub struct PolicyCtx {
    /// The key's name, for the access log.
    pub key: Option<String>,
    ticket: Option<Ticket>,
    price: Price,
    usage: Option<UsageTail>,
}

/// Checks the key's model access and limits; on success the request is counted.
///
/// A model the key may not use answers exactly like a model that does not
/// exist (404 `model_not_found`), so a key learns nothing about what others
/// are served. The token estimate is documented at [`estimate_tokens`].
pub fn admit(
    policy: &Policy,
    key: Option<&ClientKey>,
    model: &str,
    body_len: usize,
    max_tokens: Option<u64>,
    ctx: &mut PolicyCtx,
) -> Result<(), ApiError> {
    let Some(key) = key else { return Ok(()) };
    ctx.key = Some(key.name.clone());
    if !key.allows_model(model) {
        return Err(ApiError::UnknownModel(model.to_owned()));
    }
    let ticket = policy
        .limiter
        .admit(key, estimate_tokens(body_len, max_tokens))
        .map_err(|e| {
            let limit = match e.kind {
                LimitKind::Requests => "requests",
                LimitKind::Tokens => "tokens",
                LimitKind::Budget => "budget",
            };
            // Key names, never keys, label metrics and logs.
            metrics::counter!(LIMITED, "key" => key.name.clone(), "limit" => limit).increment(1);
            tracing::info!(key = %key.name, limit, "client key over its limit");
            ApiError::RateLimited(e)
        })?;
    ctx.ticket = Some(ticket);
    Ok(())
}

/// A key's residency pin applied to one request's candidates, fallbacks included.
#[derive(Debug)]
pub struct RegionPin<'k> {
    key: Option<&'k ClientKey>,
    /// Region codes of the candidates the pin allows; `None`: no pin.
    allowed: Option<Vec<String>>,
    /// Some candidate could have served but lies outside the pin.
    excluded_any: bool,
}

/// Works out which candidate regions `key` may use.
pub fn pin<'k>(key: Option<&'k ClientKey>, candidates: &Candidates<'_>) -> RegionPin<'k> {
    let Some(k) = key.filter(|k| k.residency.is_pinned()) else {
        return RegionPin {
            key,
            allowed: None,
            excluded_any: false,
        };
    };
    // Pools carry no pin of their own yet; the key's is the only one.
    let pool = residency::Residency::default();
    let mut allowed: Vec<String> = Vec::new();
    let mut excluded_any = false;
    for e in candidates.primary.iter().chain(candidates.fallback) {
        let code = &e.spec.region.code;
        if residency::allowed(&k.residency, &pool, code) {
            if !allowed.contains(code) {
                allowed.push(code.clone());
            }
        } else {
            excluded_any = true;
        }
    }
    RegionPin {
        key,
        allowed: Some(allowed),
        excluded_any,
    }
}

impl RegionPin<'_> {
    /// For [`crate::route::RouteRequest::allowed_regions`].
    pub fn regions(&self) -> Option<&[String]> {
        self.allowed.as_deref()
    }

    /// The selector's order, checked again against the pin (the selector is
    /// trusted to honour it, this makes it a guarantee). `Err` when the pin
    /// leaves nothing although endpoints elsewhere could have served.
    pub fn apply(
        &self,
        model: &str,
        mut order: Vec<Arc<EndpointHandle>>,
    ) -> Result<Vec<Arc<EndpointHandle>>, ApiError> {
        let Some(allowed) = &self.allowed else {
            return Ok(order);
        };
        order.retain(|e| allowed.contains(&e.spec.region.code));
        if order.is_empty() && self.excluded_any {
            return Err(self.unavailable(model));
        }
        Ok(order)
    }

    /// The answer when every allowed endpoint failed: when others could
    /// have served, residency is the reason and the client is told so.
    pub fn on_failure(&self, model: &str, err: ApiError) -> ApiError {
        if self.excluded_any {
            self.unavailable(model)
        } else {
            err
        }
    }

    fn unavailable(&self, model: &str) -> ApiError {
        ApiError::ResidencyUnavailable {
            model: model.to_owned(),
            residency: self
                .key
                .map_or_else(|| "any".into(), |k| k.residency.to_string()),
        }
    }
}

impl PolicyCtx {
    /// The rate headers for this request's answer.
    pub fn rates(&self) -> Rates {
        self.ticket.as_ref().map(|t| t.rates).unwrap_or_default()
    }

    /// Tells the key's tally why the request was refused after admission.
    ///
    /// Only the fallback spend cap is counted here: the key's own limits
    /// count themselves at admission. The request stack calls it on the
    /// error path, before [`PolicyCtx::settle`].
    pub fn refused(&self, err: &ApiError) {
        if let (ApiError::SpendCapReached { .. }, Some(ticket)) = (err, &self.ticket) {
            ticket.count_spend_cap();
        }
    }

    /// Remembers how the serving endpoint charges.
    pub fn served_by(&mut self, price: Price) {
        self.price = price;
    }

    /// A tap for the relayed body, so the usage in its last chunks can be
    /// read when it ends. Only requests with a ticket to settle are tapped.
    pub fn tap_slot(&mut self) -> TapSlot {
        if self.ticket.is_none() {
            return TapSlot(None);
        }
        let tail = UsageTail::default();
        self.usage = Some(tail.clone());
        TapSlot(Some(tail))
    }

    /// Settles the admission with the real usage (the estimate when the
    /// upstream reported none, e.g. a stream without `include_usage`) and
    /// records the cost. `served == false`: nothing was generated.
    pub fn settle(&mut self, served: bool, elapsed: Duration) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        if !served {
            ticket.settle(Some(0), 0.0);
            return;
        }
        let usage = self.usage.as_ref().and_then(UsageTail::parse);
        let cost = self.price.cost(usage, ticket.reserved(), elapsed);
        ticket.settle(usage.map(|u| u.total()), cost);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{KeyDigest, KeySet};

    #[test]
    fn a_spend_cap_refusal_is_counted_on_the_key_and_nothing_else_is() {
        let key = ClientKey::unlimited("tenant".into(), KeyDigest::of("lg-k"));
        let policy = Policy::new(KeySet::new(vec![key.clone()], &[], &mut vec![]), None);
        let mut ctx = PolicyCtx::default();
        admit(&policy, Some(&key), "m", 100, Some(10), &mut ctx).unwrap();
        ctx.refused(&ApiError::SpendCapReached {
            retry_after_secs: 1,
        });
        ctx.refused(&ApiError::UpstreamRateLimited);
        let hits = policy.limiter.hits("tenant").unwrap();
        assert_eq!((hits.spend_cap, hits.total()), (1, 1));
        // No key, no ticket: nothing to count and nothing breaks.
        PolicyCtx::default().refused(&ApiError::SpendCapReached {
            retry_after_secs: 1,
        });
    }
}
