//! The request peek on a 1 MiB prompt and on a 1.2 KB one, against serde reading the whole body.
//!
//! The prompt is text as clients send it, with a newline and quotes every
//! line, so the JSON string has escapes every few dozen bytes. (A first scan
//! that found string ends with `memchr2` lost to serde here: the escapes cut
//! its runs short. The scan now takes 64 bytes per step whatever the escapes:
//! SIMD compares give bit masks, and arithmetic on them finds escaped bytes.)

use std::{borrow::Cow, hint::black_box};

use criterion::{Criterion, criterion_group, criterion_main};
use serde::Deserialize;

/// The baseline: serde over the whole body, skipping unknown fields, for the
/// same fields as `openai::peek`.
#[derive(Deserialize)]
#[allow(dead_code)]
struct SerdeOnly<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<serde_json::Value>,
    #[serde(borrow, default)]
    user: Option<Cow<'a, str>>,
    #[serde(default)]
    max_tokens: Option<serde_json::Value>,
    #[serde(default)]
    max_completion_tokens: Option<serde_json::Value>,
}

/// A chat request whose prompt is `size` bytes of text with escapes.
fn body(size: usize) -> Vec<u8> {
    let line = "Pallet 4 arrived \"wet\" at Lyon; carrier swapped, crate 17 on time.\n";
    let content: String = line.chars().cycle().take(size).collect();
    serde_json::to_vec(&serde_json::json!({
        "messages": [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": content},
        ],
        "model": "llama-3-8b",
        "stream": false,
        "max_tokens": 64,
    }))
    .unwrap_or_default()
}

fn bench(c: &mut Criterion) {
    for (name, size) in [("1MiB", 1 << 20), ("1KB", 1000)] {
        let body = body(size);
        c.bench_function(&format!("peek/{name}"), |b| {
            b.iter(|| black_box(leasegate_gateway::openai::peek(black_box(&body))).is_ok())
        });
        c.bench_function(&format!("peek/serde_only_{name}"), |b| {
            b.iter(|| black_box(serde_json::from_slice::<SerdeOnly<'_>>(black_box(&body))).is_ok())
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
