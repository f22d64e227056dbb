//! The leasegate control plane: keeps each pool's fleet of leased replicas
//! the right size, in the right regions, at the right price.

pub mod akash;
pub mod controller;
pub mod demand;
pub mod fleet;
pub mod fleet_follow;
pub mod launcher;
pub mod market;
pub mod ops;
pub mod pool;
pub mod probe;
pub mod reconcile;
pub mod sdl;
pub mod status;
pub mod store;

pub use controller::{Controller, ControllerHandle, Deps};
pub use pool::{ControllerConfig, Pool};
