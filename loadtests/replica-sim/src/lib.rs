//! An OpenAI-compatible replica simulator with configurable latency and faults.
