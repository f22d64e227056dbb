//! `sim`: an in-process GPU marketplace that behaves like Akash (AKASH.md),
//! deterministic under a seed.
//!
//! Bids arrive after each provider's delay and expire; leases drain escrow
//! at their price and close as `insufficient_funds` when it runs dry; a
//! provider that goes down answers `status: null` and closes its leases as
//! `unstable` after a while. Each lease starts a replica through a
//! [`ReplicaLauncher`]. The replica's API key and served model are read back
//! out of the rendered SDL (`--api-key`, `--served-model-name` in the args),
//! exactly as a provider would hand them to vLLM, so no side channel exists.

mod catalogue;
mod state;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use leasegate_fleet::Secret;
use parking_lot::Mutex;
use tokio::time::Instant;

pub use catalogue::{SimConfig, SimProvider, default_catalogue};
use state::{Books, SimBidRec, SimDeployment, SimLeaseRec, secs, usd_per_sec};
pub use state::{Ledger, LedgerDeployment, LedgerLease};

use crate::launcher::{ReplicaLauncher, ReplicaSpec};
use crate::market::{
    Bid, BidId, BidState, Created, DeploymentState, DeploymentStatus, DeploymentSummary, Dseq,
    Escrow, LeaseState, LeaseStatus, Market, MarketError, Price, ProviderInfo, ServiceAddress, Tag,
};

/// The simulated market. Cheap to share behind an `Arc`.
pub struct SimMarket {
    cfg: SimConfig,
    origin: Instant,
    launcher: Arc<dyn ReplicaLauncher>,
    books: Mutex<Books>,
    rng: Mutex<fastrand::Rng>,
}

impl std::fmt::Debug for SimMarket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimMarket")
            .field("providers", &self.cfg.providers.len())
            .finish_non_exhaustive()
    }
}

/// Tokens of an SDL's container args, for reading flags back out.
fn sdl_tokens(sdl: &str) -> Vec<&str> {
    sdl.split(|c: char| c.is_whitespace() || matches!(c, ',' | '[' | ']' | '"' | '\''))
        .filter(|t| !t.is_empty())
        .collect()
}

fn flag_value(tokens: &[&str], flag: &str) -> Option<String> {
    let eq = format!("{flag}=");
    tokens.iter().enumerate().find_map(|(i, t)| {
        if *t == flag {
            tokens.get(i + 1).map(|v| v.to_string())
        } else {
            t.strip_prefix(eq.as_str()).map(str::to_string)
        }
    })
}

/// GPU models the SDL accepts: `- model: h100` (block YAML) or
/// `"model":"h100"` (flow YAML / JSON) under the gpu attributes.
fn sdl_gpu_models(sdl: &str) -> Vec<String> {
    let mut out: Vec<String> = sdl
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- model:"))
        .map(|m| m.trim().trim_matches('"').to_ascii_lowercase())
        .collect();
    for (i, _) in sdl.match_indices("\"model\"") {
        let rest = sdl[i + 7..].trim_start();
        let Some(rest) = rest.strip_prefix(':') else {
            continue;
        };
        let value: String = rest
            .trim_start()
            .trim_start_matches('"')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        if !value.is_empty() {
            out.push(value.to_ascii_lowercase());
        }
    }
    out
}

impl SimMarket {
    pub fn new(cfg: SimConfig, launcher: Arc<dyn ReplicaLauncher>) -> Self {
        let rng = fastrand::Rng::with_seed(cfg.seed);
        Self {
            cfg,
            origin: Instant::now(),
            launcher,
            books: Mutex::new(Books {
                next_dseq: 100_000,
                ..Books::default()
            }),
            rng: Mutex::new(rng),
        }
    }

    /// Numbers new deployments above `dseq`. The sim market ends with its
    /// process but a store file does not: a restarted `serve` starts above
    /// the dseqs its store already knows, so no old record is mistaken for
    /// a new deployment.
    pub fn starting_after(self, dseq: u64) -> Self {
        {
            let mut books = self.books.lock();
            books.next_dseq = books.next_dseq.max(dseq);
        }
        self
    }

    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    /// Settles the books to now and runs `f` on them. Replicas whose lease
    /// ended are dropped after the lock is released.
    fn with_books<R>(&self, f: impl FnOnce(&mut Books, Instant) -> R) -> R {
        let now = Instant::now();
        let (out, dropped) = {
            let mut books = self.books.lock();
            let dropped = books.settle(now, self.cfg.unstable_after);
            (f(&mut books, now), dropped)
        };
        drop(dropped);
        out
    }

    // ---- chaos controls ----

    /// The provider's control plane goes down: its replicas stop, its
    /// status is `null`, and its leases close as `unstable` later.
    pub fn kill_provider(&self, owner: &str) {
        let dropped: Vec<_> = self.with_books(|b, now| {
            b.down.entry(owner.to_string()).or_insert(now);
            b.deployments
                .values_mut()
                .filter_map(|d| d.lease.as_mut())
                .filter(|l| l.provider == owner)
                .filter_map(|l| l.replica.take())
                .collect()
        });
        drop(dropped);
    }

    /// The provider is back (new leases only; old ones stay as they are).
    pub fn revive_provider(&self, owner: &str) {
        self.with_books(|b, _| b.down.remove(owner));
    }

    /// Console cannot reach the provider for `for_how_long`: `status: null`
    /// while the replicas keep serving.
    pub fn null_status(&self, owner: &str, for_how_long: Duration) {
        self.with_books(|b, now| b.null_until.insert(owner.to_string(), now + for_how_long));
    }

    /// No provider bids while set.
    pub fn set_no_bids(&self, on: bool) {
        self.with_books(|b, _| b.no_bids = on);
    }

    /// Makes the replica of a lease fail (or pass) its health checks.
    pub fn set_replica_healthy(&self, dseq: &str, healthy: bool) {
        self.with_books(|b, _| {
            let lease = dseq
                .parse::<u64>()
                .ok()
                .and_then(|n| b.deployments.get(&n))
                .and_then(|d| d.lease.as_ref());
            if let Some(r) = lease.and_then(|l| l.replica.as_ref()) {
                r.set_healthy(healthy);
            }
        });
    }

    /// Which provider holds a deployment's lease.
    pub fn lease_provider(&self, dseq: &str) -> Option<String> {
        let n = dseq.parse::<u64>().ok()?;
        self.with_books(|b, _| {
            b.deployments
                .get(&n)?
                .lease
                .as_ref()
                .map(|l| l.provider.clone())
        })
    }

    /// Chaos for demos and end-to-end tests: every `every`, kill one
    /// provider that holds an active lease (drawn from the seed), and revive
    /// it `revive_after` later. Stops when the market is dropped.
    pub fn spawn_chaos(
        self: &Arc<Self>,
        every: Duration,
        revive_after: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        let mut rng = fastrand::Rng::with_seed(self.cfg.seed ^ 0xC4A05);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(m) = weak.upgrade() else { return };
                let mut holders: Vec<String> = m.with_books(|b, _| {
                    b.deployments
                        .values()
                        .filter_map(|d| d.lease.as_ref())
                        .filter(|l| {
                            l.state == LeaseState::Active && !b.down.contains_key(&l.provider)
                        })
                        .map(|l| l.provider.clone())
                        .collect()
                });
                holders.sort();
                holders.dedup();
                if holders.is_empty() {
                    continue;
                }
                let victim = holders[rng.usize(..holders.len())].clone();
                tracing::info!(provider = %victim, "sim chaos: provider down");
                m.kill_provider(&victim);
                let weak = Arc::downgrade(&m);
                tokio::spawn(async move {
                    tokio::time::sleep(revive_after).await;
                    if let Some(m) = weak.upgrade() {
                        m.revive_provider(&victim);
                    }
                });
            }
        })
    }

    /// The market's own record of every deployment and lease.
    pub fn ledger(&self) -> Ledger {
        self.with_books(|b, _| Ledger::build(b, self.origin))
    }

    fn provider(&self, owner: &str) -> Option<&SimProvider> {
        self.cfg.providers.iter().find(|p| p.owner == owner)
    }

    fn make_bids(&self, gpu: &[String], now: Instant) -> Vec<SimBidRec> {
        let mut rng = self.rng.lock();
        let mut bids = Vec::new();
        for p in &self.cfg.providers {
            // Draw for every provider so one provider's state does not shift
            // everyone else's random stream.
            let skip = rng.f64() < p.no_bid_chance;
            let jitter = 0.5 + rng.f64();
            let noise = 0.97 + rng.f64() * 0.06;
            let offer = p
                .prices
                .iter()
                .find(|(m, _)| gpu.is_empty() || gpu.contains(m));
            if skip {
                continue;
            }
            if let Some((model, price)) = offer {
                let arrives = now + p.bid_delay.mul_f64(jitter);
                bids.push(SimBidRec {
                    provider: p.owner.clone(),
                    gpu_model: model.clone(),
                    uact_per_block: (price * noise).round(),
                    arrives,
                    expires: arrives + self.cfg.bid_ttl,
                });
            }
        }
        bids
    }
}

fn parse_dseq(dseq: &Dseq) -> Result<u64, MarketError> {
    dseq.0
        .parse()
        .map_err(|_| MarketError::NotFound(format!("deployment {dseq}")))
}

fn uact(amount_per_block: f64) -> Price {
    Price {
        denom: "uact".into(),
        amount_per_block,
    }
}

#[async_trait]
impl Market for SimMarket {
    fn name(&self) -> &'static str {
        "sim"
    }

    async fn create_deployment(&self, sdl: &str, tag: &Tag) -> Result<Created, MarketError> {
        let tokens = sdl_tokens(sdl);
        let models = flag_value(&tokens, "--served-model-name")
            .map(|m| vec![m])
            .unwrap_or_default();
        let api_key = flag_value(&tokens, "--api-key");
        let gpu = sdl_gpu_models(sdl);
        let now = Instant::now();
        let bids = self.make_bids(&gpu, now);
        let initial = self.cfg.initial_deposit_usd;
        Ok(self.with_books(|b, now| {
            let no_bids = b.no_bids;
            let down = b.down.clone();
            b.next_dseq += 1;
            let dseq = b.next_dseq;
            let manifest = format!("sim-manifest-{dseq}");
            b.deployments.insert(
                dseq,
                SimDeployment {
                    tag: Some(tag.clone()),
                    manifest: manifest.clone(),
                    models,
                    api_key,
                    state: DeploymentState::Active,
                    created: now,
                    closed: None,
                    funds_usd: initial,
                    settled_at: now,
                    deposits_usd: initial,
                    bids: if no_bids {
                        Vec::new()
                    } else {
                        bids.into_iter()
                            .filter(|x| !down.contains_key(&x.provider))
                            .collect()
                    },
                    lease: None,
                },
            );
            Created {
                dseq: Dseq(dseq.to_string()),
                manifest,
            }
        }))
    }

    async fn bids(&self, dseq: &Dseq) -> Result<Vec<Bid>, MarketError> {
        let n = parse_dseq(dseq)?;
        self.with_books(|b, now| {
            let d = b
                .deployments
                .get(&n)
                .ok_or_else(|| MarketError::NotFound(format!("deployment {dseq}")))?;
            let leased = d.lease.as_ref().map(|l| l.bseq);
            Ok(d.bids
                .iter()
                .enumerate()
                .filter(|(_, x)| x.arrives <= now)
                .map(|(i, x)| {
                    let bseq = i as u32 + 1;
                    let state = match leased {
                        Some(l) if l == bseq => BidState::Active,
                        Some(_) => BidState::Lost,
                        None if d.state == DeploymentState::Closed || now >= x.expires => {
                            BidState::Closed
                        }
                        None => BidState::Open,
                    };
                    Bid {
                        id: BidId {
                            dseq: dseq.clone(),
                            gseq: 1,
                            oseq: 1,
                            provider: x.provider.clone(),
                            bseq,
                        },
                        state,
                        price: uact(x.uact_per_block),
                        gpu_models: vec![x.gpu_model.clone()],
                    }
                })
                .collect())
        })
    }

    async fn create_lease(&self, bid: &BidId, manifest: &str) -> Result<(), MarketError> {
        let n = parse_dseq(&bid.dseq)?;
        let start_delay = self.cfg.replica_start_delay;
        let spec = self.with_books(|b, now| {
            let provider_down = b.down.contains_key(&bid.provider);
            let d = b
                .deployments
                .get_mut(&n)
                .ok_or_else(|| MarketError::NotFound(format!("deployment {}", bid.dseq)))?;
            if let Some(l) = &d.lease {
                // A retry of the same call after an unclear failure.
                return if l.provider == bid.provider && l.bseq == bid.bseq {
                    Ok(None)
                } else {
                    Err(MarketError::Rejected {
                        status: 400,
                        body: "deployment already has a lease".into(),
                    })
                };
            }
            if d.state != DeploymentState::Active {
                return Err(MarketError::Rejected {
                    status: 400,
                    body: "deployment closed".into(),
                });
            }
            if d.manifest != manifest {
                return Err(MarketError::Rejected {
                    status: 400,
                    body: "manifest does not match the deployment".into(),
                });
            }
            let idx = (bid.bseq as usize).wrapping_sub(1);
            let rec = d
                .bids
                .get(idx)
                .filter(|x| x.provider == bid.provider && x.arrives <= now && now < x.expires)
                .ok_or_else(|| MarketError::Rejected {
                    status: 400,
                    body: "bid not open".into(),
                })?;
            if provider_down {
                return Err(MarketError::Unavailable(
                    "provider unreachable: manifest not sent".into(),
                ));
            }
            d.lease = Some(SimLeaseRec {
                provider: bid.provider.clone(),
                bseq: bid.bseq,
                uact_per_block: rec.uact_per_block,
                state: LeaseState::Active,
                reason: None,
                created: now,
                closed: None,
                services_at: now + start_delay,
                url: None,
                replica: None,
            });
            Ok(Some(ReplicaSpec {
                provider: bid.provider.clone(),
                dseq: bid.dseq.0.clone(),
                models: d.models.clone(),
                api_key: d.api_key.clone().map(Secret::new),
            }))
        })?;
        let Some(spec) = spec else { return Ok(()) };
        let replica = match self.launcher.launch(spec).await {
            Ok(r) => r,
            Err(e) => {
                // Like a container that never starts: the lease stays, the
                // service never answers, the controller's readiness fails.
                tracing::warn!(dseq = %bid.dseq, error = %e, "sim replica did not start");
                return Ok(());
            }
        };
        let leftover = self.with_books(|b, _| {
            let live = b.deployments.get_mut(&n).and_then(|d| d.lease.as_mut());
            match live {
                Some(l) if l.state == LeaseState::Active && !b.down.contains_key(&l.provider) => {
                    l.url = Some(replica.url());
                    l.replica = Some(replica);
                    None
                }
                _ => Some(replica),
            }
        });
        drop(leftover);
        Ok(())
    }

    async fn status(&self, dseq: &Dseq) -> Result<DeploymentStatus, MarketError> {
        let n = parse_dseq(dseq)?;
        self.with_books(|b, now| {
            let d = b
                .deployments
                .get(&n)
                .ok_or_else(|| MarketError::NotFound(format!("deployment {dseq}")))?;
            let mut rate = 0.0;
            let leases = d
                .lease
                .iter()
                .map(|l| {
                    let active = l.state == LeaseState::Active;
                    let unreachable = b.down.contains_key(&l.provider)
                        || b.null_until.get(&l.provider).is_some_and(|t| now < *t);
                    let services = if !active {
                        Some(Vec::new())
                    } else if unreachable {
                        None
                    } else if now < l.services_at {
                        Some(Vec::new())
                    } else {
                        Some(
                            l.url
                                .iter()
                                .map(|u| ServiceAddress { url: u.clone() })
                                .collect(),
                        )
                    };
                    if active {
                        rate += usd_per_sec(l.uact_per_block);
                    }
                    LeaseStatus {
                        bid: BidId {
                            dseq: dseq.clone(),
                            gseq: 1,
                            oseq: 1,
                            provider: l.provider.clone(),
                            bseq: l.bseq,
                        },
                        state: l.state,
                        close_reason: l.reason.clone(),
                        price: uact(l.uact_per_block),
                        services,
                    }
                })
                .collect();
            // With nothing draining it, the runway is unbounded; `secs`
            // caps it at a decade.
            let runway = secs(d.funds_usd / rate);
            Ok(DeploymentStatus {
                dseq: dseq.clone(),
                state: d.state,
                leases,
                escrow: Some(Escrow {
                    funds_usd: d.funds_usd,
                    runway,
                }),
            })
        })
    }

    async fn deposit(&self, dseq: &Dseq, usd: f64) -> Result<(), MarketError> {
        let n = parse_dseq(dseq)?;
        self.with_books(|b, _| match b.deployments.get_mut(&n) {
            None => Err(MarketError::NotFound(format!("deployment {dseq}"))),
            Some(d) if d.state == DeploymentState::Closed => Err(MarketError::Rejected {
                status: 400,
                body: "deployment closed".into(),
            }),
            Some(d) => {
                d.funds_usd += usd;
                d.deposits_usd += usd;
                Ok(())
            }
        })
    }

    async fn close(&self, dseq: &Dseq) -> Result<(), MarketError> {
        let Ok(n) = dseq.0.parse::<u64>() else {
            return Ok(());
        };
        let dropped = self.with_books(|b, now| {
            let d = b.deployments.get_mut(&n)?;
            if d.state == DeploymentState::Active {
                d.state = DeploymentState::Closed;
                d.closed = Some(now);
            }
            let l = d.lease.as_mut()?;
            if l.state == LeaseState::Active {
                l.state = LeaseState::Closed;
                l.closed = Some(now);
            }
            l.replica.take()
        });
        drop(dropped);
        Ok(())
    }

    async fn list_deployments(&self) -> Result<Vec<DeploymentSummary>, MarketError> {
        self.with_books(|b, _| {
            Ok(b.deployments
                .iter()
                .filter(|(_, d)| d.state == DeploymentState::Active)
                .map(|(n, d)| DeploymentSummary {
                    dseq: Dseq(n.to_string()),
                    state: d.state,
                    tag: d.tag.clone(),
                })
                .collect())
        })
    }

    async fn providers(&self) -> Result<Vec<ProviderInfo>, MarketError> {
        let down = self.with_books(|b, _| b.down.clone());
        Ok(self
            .cfg
            .providers
            .iter()
            .map(|p| ProviderInfo {
                owner: p.owner.clone(),
                host_uri: format!("https://{}.sim.invalid:8443", p.owner),
                online: !down.contains_key(&p.owner),
                audited: p.audited,
                uptime_7d: p.uptime_7d,
                gpu_models: p.gpu_models(),
                region: Some(p.region.clone()),
                country: Some(p.country.clone()),
                city: Some(p.city.clone()),
                lat: Some(p.lat),
                lon: Some(p.lon),
            })
            .collect())
    }
}

impl SimMarket {
    /// The catalogue entry of a provider, for tests that pick one.
    pub fn provider_info(&self, owner: &str) -> Option<SimProvider> {
        self.provider(owner).cloned()
    }
}

#[cfg(test)]
mod tests;
