//! A fake Akash Console API.
