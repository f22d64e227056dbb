//! The leasegate data plane: an OpenAI-compatible gateway that routes each
//! request to the best ready replica of the fleet and fails over before the
//! first byte reaches the client.

pub mod fleet;
pub mod geo;
pub mod health;
pub mod route;

pub mod admin;
pub mod auth;
pub mod cli;
pub mod config;
pub mod demand;
pub mod error;
pub mod metrics;
pub mod openai;
pub mod server;
pub mod upstream;
pub mod usage;

pub use server::run::{Extras, Gateway, Running, StartError};
