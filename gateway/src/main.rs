//! The `leasegate` binary: parses the CLI, loads config and wires the parts.

fn main() {}
