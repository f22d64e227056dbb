//! An SSE filter over relayed frames: captures the usage chunk and, when the gateway injected `include_usage`, removes what the client did not ask for.
//!
//! Two modes:
//! - **observe** (the client asked for usage, or the gateway did not ask):
//!   frames pass through untouched and a [`UsageScan`] reads usage from them;
//! - **strip** (the gateway spliced `include_usage` in): events are parsed
//!   incrementally, the usage chunk (`choices: []` with a `usage` object) is
//!   dropped, and the `"usage":null` member the upstream then adds to every
//!   other chunk is cut out, so the client gets the bytes it would have had
//!   without the splice.
//!
//! In strip mode an event that spans frames is held until its blank line
//! arrives, then released (so the client never sees half an event it might
//! have to lose). Events end at a blank line under any of the SSE line
//! endings (`\n`, `\r\n`, `\r`), also when the terminator is split across
//! frames. A frame made only of whole, untouched events is passed on as the
//! same buffer; bytes are copied only for a frame that ends mid-event or
//! holds an edited or dropped event. Held bytes are bounded by
//! [`MAX_HELD_BYTES`]: past that the event is released as is and the filter
//! falls back to observing (the stream stays correct; only the strip stops).

use bytes::{Bytes, BytesMut};
use memchr::memchr2;
use serde::Deserialize;
use serde::de::IgnoredAny;

use super::{
    RawUsage, Usage, UsageScan,
    scan::{KEY, USAGE_KEY},
};

/// Chat chunks are a few hundred bytes; an event this large is not one the
/// filter needs to touch.
pub const MAX_HELD_BYTES: usize = 256 * 1024;

/// Usage capture (and, for an injected `include_usage`, removal) over one SSE stream.
#[derive(Debug)]
pub struct SseFilter {
    strip: bool,
    bounds: Boundary,
    held: BytesMut,
    out: BytesMut,
    scan: UsageScan,
    usage: Option<Usage>,
}

impl SseFilter {
    /// `strip`: the gateway added `include_usage`, so the client must not see its effects.
    pub fn new(strip: bool) -> Self {
        Self {
            strip,
            bounds: Boundary::default(),
            held: BytesMut::new(),
            out: BytesMut::new(),
            scan: UsageScan::new(),
            usage: None,
        }
    }

    /// The usage the stream reported, once its usage chunk went by.
    pub fn usage(&self) -> Option<Usage> {
        self.usage.or(self.scan.usage())
    }

    /// Takes the next upstream frame; returns what to send the client now
    /// (possibly empty, when the frame only extends a held event).
    pub fn push(&mut self, frame: Bytes) -> Bytes {
        if !self.strip {
            self.scan.feed(&frame);
            return frame;
        }
        let Self {
            bounds,
            held,
            out,
            usage,
            ..
        } = self;
        let mut emit = Emit::new(&frame, out);
        let mut start = 0;
        while let Some(end) = bounds.next(&frame, start) {
            if held.is_empty() {
                let action = classify(&frame[start..end]);
                note(usage, &action);
                match action {
                    Action::Keep | Action::KeepUsage(_) => emit.slice(start, end),
                    Action::Drop(_) => {}
                    Action::Cut(a, b) => {
                        emit.slice(start, start + a);
                        emit.slice(start + b, end);
                    }
                }
            } else {
                held.extend_from_slice(&frame[start..end]);
                let action = classify(held);
                note(usage, &action);
                match action {
                    Action::Keep | Action::KeepUsage(_) => emit.owned(held),
                    Action::Drop(_) => {}
                    Action::Cut(a, b) => {
                        emit.owned(&held[..a]);
                        emit.owned(&held[b..]);
                    }
                }
                held.clear();
            }
            start = end;
        }
        if start < frame.len() {
            held.extend_from_slice(&frame[start..]);
            if held.len() > MAX_HELD_BYTES {
                emit.owned(held);
                *held = BytesMut::new();
                tracing::warn!(
                    limit = MAX_HELD_BYTES,
                    "SSE event too large to filter; passing the rest of the stream through"
                );
                self.strip = false;
            }
        }
        emit.finish()
    }

    /// Called when the upstream body ends: releases a held event.
    pub fn finish(&mut self) -> Bytes {
        if self.held.is_empty() {
            return Bytes::new();
        }
        let held = std::mem::take(&mut self.held);
        // Only a blank line ended by a lone `\r` can still be open here.
        if self.bounds.finish() {
            let action = classify(&held);
            note(&mut self.usage, &action);
            return match action {
                Action::Keep | Action::KeepUsage(_) => held.freeze(),
                Action::Drop(_) => Bytes::new(),
                Action::Cut(a, b) => {
                    let mut v = BytesMut::with_capacity(held.len());
                    v.extend_from_slice(&held[..a]);
                    v.extend_from_slice(&held[b..]);
                    v.freeze()
                }
            };
        }
        held.freeze()
    }
}

fn note(usage: &mut Option<Usage>, action: &Action) {
    if let Action::Drop(u) | Action::KeepUsage(u) = action {
        *usage = Some(*u);
    }
}

/// Builds one output buffer per input frame, sharing the frame's memory
/// while the kept bytes are one contiguous run of it.
struct Emit<'a> {
    frame: &'a Bytes,
    run: Option<(usize, usize)>,
    out: &'a mut BytesMut,
    copied: bool,
}

impl<'a> Emit<'a> {
    fn new(frame: &'a Bytes, out: &'a mut BytesMut) -> Self {
        Self {
            frame,
            run: None,
            out,
            copied: false,
        }
    }

    fn slice(&mut self, a: usize, b: usize) {
        if a == b {
            return;
        }
        match (self.copied, self.run) {
            (false, None) => self.run = Some((a, b)),
            (false, Some((s, e))) if e == a => self.run = Some((s, b)),
            _ => {
                self.spill();
                self.out.extend_from_slice(&self.frame[a..b]);
            }
        }
    }

    fn owned(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.spill();
        self.out.extend_from_slice(bytes);
    }

    fn spill(&mut self) {
        if let Some((s, e)) = self.run.take() {
            self.out.extend_from_slice(&self.frame[s..e]);
        }
        self.copied = true;
    }

    fn finish(self) -> Bytes {
        match (self.copied, self.run) {
            (true, _) => self.out.split().freeze(),
            (false, Some((s, e))) => self.frame.slice(s..e),
            (false, None) => Bytes::new(),
        }
    }
}

/// Where SSE events end, tracked across frames.
#[derive(Debug, Default)]
struct Boundary {
    /// The current line has content.
    in_line: bool,
    /// The last byte was a `\r` ending a line; a `\n` right after belongs to it.
    after_cr: bool,
    /// An event ended at a blank line's `\r` at the end of the last frame;
    /// whether a `\n` follows decides where exactly.
    blank_cr: bool,
}

impl Boundary {
    /// The end (exclusive) of the next event completed in `buf[from..]`.
    fn next(&mut self, buf: &[u8], from: usize) -> Option<usize> {
        let mut i = from;
        if self.blank_cr {
            let &b = buf.get(i)?;
            self.blank_cr = false;
            return Some(if b == b'\n' { i + 1 } else { i });
        }
        loop {
            let Some(rel) = memchr2(b'\r', b'\n', &buf[i..]) else {
                if i < buf.len() {
                    self.in_line = true;
                    self.after_cr = false;
                }
                return None;
            };
            if rel > 0 {
                self.in_line = true;
                self.after_cr = false;
            }
            let j = i + rel;
            let b = buf[j];
            i = j + 1;
            if b == b'\n' && self.after_cr {
                self.after_cr = false;
                continue;
            }
            self.after_cr = b == b'\r';
            if self.in_line {
                self.in_line = false;
                continue;
            }
            // A blank line: the event ends with its terminator.
            if b == b'\r' {
                self.after_cr = false;
                return match buf.get(i) {
                    Some(b'\n') => Some(i + 1),
                    Some(_) => Some(i),
                    None => {
                        self.blank_cr = true;
                        None
                    }
                };
            }
            return Some(i);
        }
    }

    /// At the end of the body: whether the held bytes form a complete event.
    fn finish(&mut self) -> bool {
        std::mem::take(&mut self.blank_cr)
    }
}

/// What to do with one complete event (offsets relative to the event).
#[derive(Debug, PartialEq, Eq)]
enum Action {
    Keep,
    /// A chunk with choices that also carries usage: kept, usage noted.
    KeepUsage(Usage),
    /// The usage-only chunk: removed.
    Drop(Usage),
    /// Remove `event[a..b]` (a `"usage":null` member).
    Cut(usize, usize),
}

fn classify(event: &[u8]) -> Action {
    let Some((key, value)) = find_member(event) else {
        return Action::Keep;
    };
    match event.get(value) {
        Some(b'n') if event[value..].starts_with(b"null") => {
            let (a, b) = member_span(event, key, value + 4);
            Action::Cut(a, b)
        }
        Some(b'{') => match parse_chunk(event) {
            Some((u, true)) => Action::Drop(u),
            Some((u, false)) => Action::KeepUsage(u),
            None => Action::Keep,
        },
        _ => Action::Keep,
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// The first `"usage"` that is an object member: preceded by `{` or `,`
/// (a quote inside a string is always preceded by `\`) and followed by `:`.
/// Returns the key's offset and its value's.
fn find_member(event: &[u8]) -> Option<(usize, usize)> {
    USAGE_KEY.find_iter(event).find_map(|k| {
        let before = event[..k].iter().rev().find(|&&b| !is_ws(b))?;
        if !matches!(before, b'{' | b',') {
            return None;
        }
        let mut i = k + KEY.len();
        while event.get(i).copied().is_some_and(is_ws) {
            i += 1;
        }
        if event.get(i) != Some(&b':') {
            return None;
        }
        i += 1;
        while event.get(i).copied().is_some_and(is_ws) {
            i += 1;
        }
        Some((k, i))
    })
}

/// The bytes to cut to remove the member at `key..value_end` and one comma.
fn member_span(event: &[u8], key: usize, value_end: usize) -> (usize, usize) {
    let before = event[..key].iter().rposition(|&b| !is_ws(b));
    match before {
        Some(c) if event[c] == b',' => (c, value_end),
        _ => {
            let mut end = value_end;
            while event.get(end).copied().is_some_and(is_ws) {
                end += 1;
            }
            if event.get(end) == Some(&b',') {
                end += 1;
            }
            (key, end)
        }
    }
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Option<Vec<IgnoredAny>>,
    #[serde(default)]
    usage: Option<RawUsage>,
}

/// Usage and whether `choices` is empty, from the event's `data` lines.
fn parse_chunk(event: &[u8]) -> Option<(Usage, bool)> {
    let mut data: Option<&[u8]> = None;
    let mut joined: Vec<u8> = Vec::new();
    for line in event.split(|&b| b == b'\n' || b == b'\r') {
        let Some(value) = line.strip_prefix(b"data:") else {
            continue;
        };
        let value = value.strip_prefix(b" ").unwrap_or(value);
        // Several `data:` lines join with `\n`; one (the usual case) is borrowed.
        match data.take() {
            None if joined.is_empty() => data = Some(value),
            first => {
                if let Some(first) = first {
                    joined.extend_from_slice(first);
                }
                joined.push(b'\n');
                joined.extend_from_slice(value);
            }
        }
    }
    let payload = data.unwrap_or(&joined);
    let chunk: Chunk = serde_json::from_slice(payload).ok()?;
    let usage = Usage::from(chunk.usage?);
    Some((usage, chunk.choices.is_none_or(|c| c.is_empty())))
}

#[cfg(test)]
mod tests;
