//! Finds the `usage` object of a JSON answer while its bytes stream past, without buffering the body.
//!
//! The body is relayed frame by frame, so the scanner sees each frame once
//! and keeps only a few bytes of state between frames: how much of the key
//! `"usage"` matched at the end of the last frame, and, once the key and its
//! `:` and `{` are seen, the object itself. The object is copied into a
//! buffer of at most [`MAX_USAGE_BYTES`] and parsed when its braces balance;
//! everything else is only searched (memchr's SIMD `memmem`), never copied.
//! Memory per body: that buffer, allocated only when a usage object starts.
//!
//! A `"usage"` inside a string value cannot be followed by `:` (a string
//! value is followed by `,`, `}` or `]`, and quotes inside strings are
//! escaped), so requiring `"usage"` ws `:` ws `{` finds keys only. Should a
//! body hold several, the last one parsed wins: OpenAI-compatible servers put
//! the top-level `usage` after `choices`/`data`.

use std::sync::LazyLock;

use memchr::memmem;

use super::Usage;

pub(super) const KEY: &[u8] = b"\"usage\"";
/// The key's searcher, built once rather than for every frame.
pub(super) static USAGE_KEY: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(KEY));
/// A usage object with its `*_details` is well under 1 KiB; anything larger
/// is not one and is abandoned rather than buffered.
pub const MAX_USAGE_BYTES: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Looking for the key; `partial` bytes of it ended the last frame.
    Seek { partial: usize },
    /// Key seen; expecting `:` after optional whitespace.
    Colon,
    /// `:` seen; expecting `{` after optional whitespace.
    Value,
    /// Inside the object: nesting depth and string state.
    Object {
        depth: u32,
        in_str: bool,
        escaped: bool,
    },
}

/// Streaming usage finder for one JSON body.
#[derive(Debug)]
pub struct UsageScan {
    state: State,
    object: Vec<u8>,
    found: Option<Usage>,
}

impl Default for UsageScan {
    fn default() -> Self {
        Self::new()
    }
}

impl UsageScan {
    pub fn new() -> Self {
        Self {
            state: State::Seek { partial: 0 },
            object: Vec::new(),
            found: None,
        }
    }

    /// The last usage object seen so far.
    pub fn usage(&self) -> Option<Usage> {
        self.found
    }

    /// Feeds the next frame of the body.
    pub fn feed(&mut self, data: &[u8]) {
        let mut i = 0;
        while i < data.len() {
            i = match self.state {
                State::Seek { partial } => self.seek(data, i, partial),
                State::Colon | State::Value => self.punctuation(data, i),
                State::Object { .. } => self.object(data, i),
            };
        }
    }

    /// Returns where to continue; sets the state to `Colon` on a full key.
    fn seek(&mut self, data: &[u8], i: usize, partial: usize) -> usize {
        let rest = &data[i..];
        if partial > 0 {
            let need = &KEY[partial..];
            let n = need.len().min(rest.len());
            if rest[..n] == need[..n] {
                if n == need.len() {
                    self.state = State::Colon;
                } else {
                    self.state = State::Seek {
                        partial: partial + n,
                    };
                }
                return i + n;
            }
            // The only quote in a proper prefix of the key is its first
            // byte, so a failed continuation cannot hide a match that
            // started inside the carried prefix.
            self.state = State::Seek { partial: 0 };
        }
        if let Some(p) = USAGE_KEY.find(rest) {
            self.state = State::Colon;
            return i + p + KEY.len();
        }
        let carry = (1..KEY.len())
            .rev()
            .find(|&k| rest.ends_with(&KEY[..k]))
            .unwrap_or(0);
        self.state = State::Seek { partial: carry };
        data.len()
    }

    fn punctuation(&mut self, data: &[u8], mut i: usize) -> usize {
        while let Some(&b) = data.get(i) {
            match (self.state, b) {
                (_, b' ' | b'\t' | b'\n' | b'\r') => i += 1,
                (State::Colon, b':') => {
                    self.state = State::Value;
                    i += 1;
                }
                (State::Value, b'{') => {
                    self.object.clear();
                    self.object.push(b'{');
                    self.state = State::Object {
                        depth: 1,
                        in_str: false,
                        escaped: false,
                    };
                    return i + 1;
                }
                // `null`, a string value or anything else: not a usage object.
                // The byte is not consumed; it may start the next key.
                _ => {
                    self.state = State::Seek { partial: 0 };
                    return i;
                }
            }
        }
        i
    }

    fn object(&mut self, data: &[u8], i: usize) -> usize {
        let State::Object {
            mut depth,
            mut in_str,
            mut escaped,
        } = self.state
        else {
            return i;
        };
        for (k, &b) in data[i..].iter().enumerate() {
            if in_str {
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_str = false,
                    _ => {}
                }
            } else {
                match b {
                    b'"' => in_str = true,
                    b'{' => depth += 1,
                    b'}' => depth -= 1,
                    _ => {}
                }
            }
            if depth == 0 {
                let end = i + k + 1;
                self.object.extend_from_slice(&data[i..end]);
                if let Some(u) = Usage::from_json(&self.object) {
                    self.found = Some(u);
                }
                self.state = State::Seek { partial: 0 };
                return end;
            }
        }
        if self.object.len() + (data.len() - i) > MAX_USAGE_BYTES {
            self.state = State::Seek { partial: 0 };
            self.object = Vec::new();
        } else {
            self.object.extend_from_slice(&data[i..]);
            self.state = State::Object {
                depth,
                in_str,
                escaped,
            };
        }
        data.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CHAT: &str = r#"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"the \"usage\": {\"prompt_tokens\": 999} trick, and \"usage\""},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":34,"total_tokens":46,"prompt_tokens_details":{"cached_tokens":0}},"system_fingerprint":null}"#;

    fn scan_split(body: &[u8], cuts: &[usize]) -> Option<Usage> {
        let mut s = UsageScan::new();
        let mut at = 0;
        for &c in cuts {
            let c = c.clamp(at, body.len());
            s.feed(&body[at..c]);
            at = c;
        }
        s.feed(&body[at..]);
        s.usage()
    }

    #[test]
    fn finds_the_top_level_usage_and_not_the_one_quoted_in_content() {
        let u = scan_split(CHAT.as_bytes(), &[]).unwrap();
        assert_eq!(
            u,
            Usage {
                prompt_tokens: 12,
                completion_tokens: 34,
                total_tokens: 46
            }
        );
    }

    #[test]
    fn embeddings_usage_has_no_completion_tokens() {
        let body = br#"{"object":"list","data":[{"embedding":[0.1]}],"model":"m","usage" : { "prompt_tokens" : 5, "total_tokens" : 5 }}"#;
        let u = scan_split(body, &[]).unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (5, 0, 5)
        );
    }

    #[test]
    fn null_usage_and_bodies_without_usage_give_none() {
        assert_eq!(scan_split(br#"{"usage":null,"x":1}"#, &[]), None);
        assert_eq!(scan_split(br#"{"error":{"message":"no"}}"#, &[]), None);
    }

    #[test]
    fn an_oversized_object_is_abandoned_not_buffered() {
        let mut body = br#"{"usage":{"prompt_tokens":1,"pad":""#.to_vec();
        body.resize(body.len() + 2 * MAX_USAGE_BYTES, b'a');
        body.extend_from_slice(br#""}}"#);
        let mut s = UsageScan::new();
        for chunk in body.chunks(100) {
            s.feed(chunk);
            assert!(s.object.len() <= MAX_USAGE_BYTES);
        }
        assert_eq!(s.usage(), None);
    }

    proptest! {
        #[test]
        fn any_frame_split_finds_the_same_usage(cuts in proptest::collection::vec(0usize..400, 0..12)) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            prop_assert_eq!(scan_split(CHAT.as_bytes(), &cuts), scan_split(CHAT.as_bytes(), &[]));
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300), cut in 0usize..300) {
            let _ = scan_split(&data, &[cut]);
        }
    }
}
