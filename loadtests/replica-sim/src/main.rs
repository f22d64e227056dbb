//! The `replica-sim` binary.

fn main() {}
