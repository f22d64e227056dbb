//! The leasegate control plane: keeps each pool's fleet of leased replicas
//! the right size, in the right regions, at the right price.

pub mod akash;
pub mod market;
