//! The gateway's integration tests, linked into one binary.
//!
//! One binary instead of one per file: each test binary links the whole
//! dependency tree, so a dozen of them cost minutes of linking and gigabytes
//! of disk on a small CI machine. The files stay apart by subject; run one
//! with `cargo test --test gateway proxy::`.
//!
//! Everything here shares one process: the global tracing subscriber is
//! installed only by `support::capture_logs`, and no test sets another.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

mod admin;
mod akash_chaos;
mod akash_e2e;
mod config;
mod failover;
mod geo;
mod overflow;
mod policy;
mod proxy;
mod reload_load;
mod route_probe;
mod routing;
mod sdk;
mod serve;
mod status;
