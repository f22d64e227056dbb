//! The leasegate data plane: an OpenAI-compatible gateway that routes each
//! request to the best ready replica of the fleet and fails over before the
//! first byte reaches the client.

pub mod fleet;
pub mod geo;
pub mod health;
pub mod route;
pub mod usage;
