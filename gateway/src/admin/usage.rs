//! `GET /admin/usage`: spend since start with the saving against hyperscaler-only, and the limits each client key hit (by name).

use serde_json::Value;

use crate::{reload::Live, usage::report::UsageReport};

/// The report of the running generation (spend and limiter state carry across reloads).
pub fn view(live: &Live) -> Value {
    let shared = live.current();
    let report = UsageReport::build(&shared.accounting, &shared.policy);
    serde_json::to_value(report).unwrap_or(Value::Null)
}
