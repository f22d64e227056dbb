//! Prices each answer's usage and records tokens and dollars per model, path and client key.
//!
//! **Fallbacks** are billed as the provider bills: input and output tokens
//! at their configured price per 1M.
//!
//! **Leases and static endpoints** cost $/h whether busy or idle, so a
//! token's price is the endpoint's hourly spend spread over the tokens it
//! served. The estimator keeps, per endpoint, the tokens of the last hour
//! in one-minute buckets and charges
//!
//! ```text
//! usd_per_token = price_per_hour × covered_hours / tokens_in_window
//! ```
//!
//! where the window includes the request being charged and `covered_hours`
//! is the part of the hour the endpoint has been serving (at least one
//! minute, at most one hour), so an endpoint that started ten minutes ago
//! is charged for ten minutes, not an hour. Under steady traffic the
//! charges of an hour add up to the hour's price. A busy lease is cheap per
//! token and a nearly idle one is dear, which is the signal operators and
//! the overflow decision want; the bias is that a quiet period followed by
//! a burst charges the burst's first requests for the quiet (the estimate
//! lags by up to the window).
//!
//! Metrics (labels bounded by config: models, three paths, key names):
//! - `leasegate_tokens_total{model,path,key}` (counter);
//! - `leasegate_cost_usd_total{model,path,key}`: a gauge only ever increased,
//!   because the metrics crate's counters are integers;
//! - `leasegate_cost_per_1m_tokens_usd{model,path}`: dollars per 1M tokens over
//!   the last hour.
//!
//! - `leasegate_hyperscaler_equivalent_usd_total{model}`: what the same
//!   tokens would have cost on the model's fallback at its list price, so
//!   the saving against hyperscaler-only is this minus the cost.
//!
//! `key` is the client key's configured name (`-` without one), never the
//! key or its hash.

use std::{collections::BTreeMap, fmt, sync::Arc};

use foldhash::{HashMap, HashMapExt};
use leasegate_fleet::{Endpoint, Kind};
use metrics::{Counter, Gauge};
use parking_lot::Mutex;
use tokio::time::Instant;

use super::{SpendCaps, Usage, window::Window};

pub const TOKENS: &str = "leasegate_tokens_total";
pub const COST: &str = "leasegate_cost_usd_total";
pub const COST_PER_1M: &str = "leasegate_cost_per_1m_tokens_usd";
pub const HYPERSCALER: &str = "leasegate_hyperscaler_equivalent_usd_total";

/// Which tier served a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Path {
    Lease,
    Static,
    Fallback,
}

impl Path {
    pub fn as_str(self) -> &'static str {
        match self {
            Path::Lease => "lease",
            Path::Static => "static",
            Path::Fallback => "fallback",
        }
    }

    fn index(self) -> usize {
        match self {
            Path::Lease => 0,
            Path::Static => 1,
            Path::Fallback => 2,
        }
    }

    const ALL: [Path; 3] = [Path::Lease, Path::Static, Path::Fallback];
}

impl From<Kind> for Path {
    fn from(k: Kind) -> Self {
        match k {
            Kind::Lease => Path::Lease,
            Kind::Static => Path::Static,
            Kind::Fallback => Path::Fallback,
        }
    }
}

/// A fallback's list prices.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FallbackPrice {
    pub input_per_1m_usd: f64,
    pub output_per_1m_usd: f64,
}

impl FallbackPrice {
    pub fn cost(&self, u: &Usage) -> f64 {
        (u.prompt_tokens as f64 * self.input_per_1m_usd
            + u.completion_tokens as f64 * self.output_per_1m_usd)
            / 1e6
    }
}

/// One finished answer to price.
#[derive(Clone, Copy, Debug)]
pub struct Charge<'a> {
    /// The model as the client named it.
    pub model: &'a str,
    pub endpoint: &'a Endpoint,
    /// The client key's configured name.
    pub key: Option<&'a str>,
    pub usage: Usage,
}

/// What one answer cost.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spend {
    pub path: Path,
    pub tokens: u64,
    pub usd: f64,
}

/// Told about every priced answer, e.g. per-key budgets.
///
/// Called on the request's end hook, synchronously: it must not block.
pub trait SpendSink: Send + Sync + fmt::Debug {
    fn spent(&self, key: Option<&str>, model: &str, spend: &Spend);
}

/// Metric handles for one (model, key), registered once and reused.
#[derive(Debug)]
struct KeyHandles {
    tokens: [Counter; 3],
    cost: [Gauge; 3],
}

#[derive(Debug)]
struct ModelState {
    windows: [Window; 3],
    per_1m: [Gauge; 3],
    hyperscaler: Gauge,
    keys: HashMap<String, KeyHandles>,
    /// Since start, per path, for the status view.
    spent: [PathSpend; 3],
}

/// Tokens and dollars of one (model, path) since start.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PathSpend {
    pub tokens: u64,
    pub usd: f64,
    /// The same tokens at the fallback's list prices.
    pub hyperscaler_usd: f64,
}

/// One row of [`CostRecorder::by_model`].
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSpend {
    /// The model as clients named it.
    pub model: String,
    pub path: Path,
    pub spend: PathSpend,
}

#[derive(Debug, Default)]
struct State {
    endpoints: HashMap<String, Window>,
    models: HashMap<String, ModelState>,
    totals: CostSummary,
}

/// Spend since start, for the status view.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CostSummary {
    pub tokens: u64,
    pub lease_usd: f64,
    pub static_usd: f64,
    pub fallback_usd: f64,
    /// The same tokens at the fallback's list prices (0 for models no fallback serves).
    pub hyperscaler_usd: f64,
}

impl CostSummary {
    pub fn total_usd(&self) -> f64 {
        self.lease_usd + self.static_usd + self.fallback_usd
    }

    /// What running on leases saved against sending everything to the fallback.
    pub fn saving_usd(&self) -> f64 {
        self.hyperscaler_usd - self.total_usd()
    }
}

/// Prices usage, records metrics, feeds the fallback spend caps and the sinks.
///
/// The state (estimator windows, metric handles, totals) is shared with the
/// recorders of later config generations (see [`CostRecorder::carrying`]),
/// so a reload neither resets the spend shown nor the lease estimates.
#[derive(Debug)]
pub struct CostRecorder {
    epoch: Instant,
    prices: HashMap<String, FallbackPrice>,
    caps: Option<Arc<SpendCaps>>,
    sinks: Vec<Arc<dyn SpendSink>>,
    /// Pool model to the list price of the fallback that serves it.
    list_prices: HashMap<String, FallbackPrice>,
    /// Client-facing alias to its pool model.
    aliases: BTreeMap<String, String>,
    state: Arc<Mutex<State>>,
}

impl CostRecorder {
    /// `prices`: fallback endpoint id to its prices.
    pub fn new(prices: HashMap<String, FallbackPrice>, caps: Option<Arc<SpendCaps>>) -> Self {
        Self {
            epoch: Instant::now(),
            prices,
            caps,
            sinks: Vec::new(),
            list_prices: HashMap::new(),
            aliases: BTreeMap::new(),
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    /// Continues `previous`'s record: same start, windows and totals, with
    /// this recorder's prices from now on.
    pub fn carrying(mut self, previous: &CostRecorder) -> Self {
        self.epoch = previous.epoch;
        self.state = Arc::clone(&previous.state);
        self
    }

    /// When the record began (the first generation's start).
    pub fn since(&self) -> Instant {
        self.epoch
    }

    /// Prices to compare against: per pool model, the fallback's list
    /// price; `aliases` map client names to pool models.
    pub fn with_list_prices(
        mut self,
        list_prices: HashMap<String, FallbackPrice>,
        aliases: BTreeMap<String, String>,
    ) -> Self {
        self.list_prices = list_prices;
        self.aliases = aliases;
        self
    }

    /// Spend since start, with the hyperscaler-only comparison.
    pub fn summary(&self) -> CostSummary {
        self.state.lock().totals
    }

    /// Spend since start per model and path, sorted, paths with no tokens left out.
    pub fn by_model(&self) -> Vec<ModelSpend> {
        let state = self.state.lock();
        let mut rows: Vec<ModelSpend> = state
            .models
            .iter()
            .flat_map(|(model, m)| {
                Path::ALL
                    .iter()
                    .zip(m.spent)
                    .filter(|(_, s)| s.tokens > 0 || s.usd > 0.0)
                    .map(|(path, spend)| ModelSpend {
                        model: model.clone(),
                        path: *path,
                        spend,
                    })
            })
            .collect();
        drop(state);
        rows.sort_by(|a, b| (&a.model, a.path.index()).cmp(&(&b.model, b.path.index())));
        rows
    }

    /// Adds a consumer of every spend (a budget, a demand signal).
    pub fn with_sink(mut self, sink: Arc<dyn SpendSink>) -> Self {
        self.sinks.push(sink);
        self
    }

    pub fn caps(&self) -> Option<&Arc<SpendCaps>> {
        self.caps.as_ref()
    }

    /// Prices one answer and records it everywhere.
    pub fn record(&self, c: &Charge<'_>) -> Spend {
        let now = Instant::now();
        let path = Path::from(c.endpoint.kind);
        let tokens = c.usage.total_tokens;
        let spend = {
            let mut state = self.state.lock();
            let usd = match path {
                Path::Fallback => match self.prices.get(&c.endpoint.id) {
                    Some(p) => p.cost(&c.usage),
                    None => {
                        tracing::warn!(endpoint = %c.endpoint.id, "fallback without prices; charged 0");
                        0.0
                    }
                },
                Path::Lease | Path::Static => self.lease_cost(&mut state, now, c.endpoint, tokens),
            };
            let spend = Spend { path, tokens, usd };
            self.record_metrics(&mut state, now, c, &spend);
            spend
        };
        if path == Path::Fallback
            && let Some(caps) = &self.caps
        {
            caps.add(spend.usd);
        }
        for sink in &self.sinks {
            sink.spent(c.key, c.model, &spend);
        }
        spend
    }

    fn lease_cost(&self, state: &mut State, now: Instant, ep: &Endpoint, tokens: u64) -> f64 {
        if !state.endpoints.contains_key(&ep.id) {
            // Endpoints come and go with leases; forget the long-gone ones
            // when a new one appears, so the map follows the fleet.
            state.endpoints.retain(|_, w| !w.idle(now));
        }
        let w = state
            .endpoints
            .entry(ep.id.clone())
            .or_insert_with(|| Window::hour(self.epoch));
        w.add(now, tokens, 0.0);
        let (in_window, _) = w.sums(now);
        if in_window == 0 || ep.price_per_hour_usd.is_nan() || ep.price_per_hour_usd <= 0.0 {
            return 0.0;
        }
        let hours = w.covered(now).as_secs_f64() / 3600.0;
        ep.price_per_hour_usd * hours * tokens as f64 / in_window as f64
    }

    fn record_metrics(&self, state: &mut State, now: Instant, c: &Charge<'_>, s: &Spend) {
        let i = s.path.index();
        let model = match state.models.get_mut(c.model) {
            Some(m) => m,
            None => state
                .models
                .entry(c.model.to_owned())
                .or_insert_with(|| ModelState {
                    windows: std::array::from_fn(|_| Window::hour(self.epoch)),
                    per_1m: Path::ALL.map(|p| {
                        metrics::gauge!(COST_PER_1M, "model" => c.model.to_owned(), "path" => p.as_str())
                    }),
                    hyperscaler: metrics::gauge!(HYPERSCALER, "model" => c.model.to_owned()),
                    keys: HashMap::new(),
                    spent: [PathSpend::default(); 3],
                }),
        };
        let key = c.key.unwrap_or("-");
        let handles = match model.keys.get(key) {
            Some(h) => h,
            None => model.keys.entry(key.to_owned()).or_insert_with(|| KeyHandles {
                tokens: Path::ALL.map(|p| {
                    metrics::counter!(TOKENS, "model" => c.model.to_owned(), "path" => p.as_str(), "key" => key.to_owned())
                }),
                cost: Path::ALL.map(|p| {
                    metrics::gauge!(COST, "model" => c.model.to_owned(), "path" => p.as_str(), "key" => key.to_owned())
                }),
            }),
        };
        handles.tokens[i].increment(s.tokens);
        handles.cost[i].increment(s.usd);
        let pool = self.aliases.get(c.model).map_or(c.model, String::as_str);
        let list = self.list_prices.get(pool).map_or(0.0, |p| p.cost(&c.usage));
        model.hyperscaler.increment(list);
        let row = &mut model.spent[i];
        row.tokens = row.tokens.saturating_add(s.tokens);
        row.usd += s.usd;
        row.hyperscaler_usd += list;
        let t = &mut state.totals;
        t.tokens = t.tokens.saturating_add(s.tokens);
        t.hyperscaler_usd += list;
        match s.path {
            Path::Lease => t.lease_usd += s.usd,
            Path::Static => t.static_usd += s.usd,
            Path::Fallback => t.fallback_usd += s.usd,
        }
        let w = &mut model.windows[i];
        w.add(now, s.tokens, s.usd);
        let (tokens, usd) = w.sums(now);
        if tokens > 0 {
            model.per_1m[i].set(usd / tokens as f64 * 1e6);
        }
    }

    /// Dollars per token of one endpoint right now, for cheapest-first
    /// choices: a fallback's blended list price, or a lease's estimate.
    pub fn usd_per_1m(&self, ep: &Endpoint) -> Option<f64> {
        match Path::from(ep.kind) {
            Path::Fallback => self
                .prices
                .get(&ep.id)
                .map(|p| (p.input_per_1m_usd + p.output_per_1m_usd) / 2.0),
            Path::Lease | Path::Static => {
                let now = Instant::now();
                let state = self.state.lock();
                let w = state.endpoints.get(&ep.id)?;
                let (tokens, _) = w.sums(now);
                (tokens > 0).then(|| {
                    ep.price_per_hour_usd * w.covered(now).as_secs_f64() / 3600.0 / tokens as f64
                        * 1e6
                })
            }
        }
    }
}

#[cfg(test)]
mod tests;
