//! The request peek on a 1 MiB prompt and on a 1.2 KB one.
//!
//! The prompt is text as clients send it, with a newline and quotes every
//! line, so the JSON string has escapes every few dozen bytes. (A hand-written
//! scan that skipped strings with `memchr2` was measured here against serde:
//! faster on escape-free text, slower than serde's word-at-a-time skip on
//! this one, so the peek stays serde.)

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};

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
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
