//! The controller's integration tests, linked into one binary to save link
//! time and disk (see `gateway/tests/main.rs`); run one file's tests with
//! `cargo test -p leasegate-controller --test controller crash::`.
//!
//! `akash_secrets.rs` stays a binary of its own: it installs a global
//! tracing subscriber to read everything the market logs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

#[path = "akash/support.rs"]
mod akash_support;

mod akash;
mod akash_controller;
mod crash;
mod ops;
mod real_replicas;
mod sim_controller;
