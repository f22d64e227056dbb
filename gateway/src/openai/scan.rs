//! Finds the top-level fields of a JSON object without deserializing the rest.
//!
//! A prompt is almost all string, and serde skips an unknown string by
//! checking every byte for quotes, escapes and control characters and by
//! decoding every escape. Here a string is skipped 64 bytes at a time: SIMD
//! compares give a bit per byte for quotes and for backslashes, a few
//! integer steps mark the bytes that odd runs of backslashes escape, and the
//! first quote left is the closing one. The structure around strings
//! (brackets, commas, colons, numbers, literals) is checked in full. What
//! this does not check inside strings (control characters, escape letters,
//! UTF-8) the replica still does: such a body is forwarded and refused
//! upstream.
//!
//! Anything this scan does not accept, serde then reads the slow way, so a
//! malformed body gets serde's exact error.

use wide::u8x16;

/// Deeper nesting than this goes to serde (which stops at 128 too).
const MAX_DEPTH: u32 = 128;

/// The raw JSON of each wanted top-level field, in the order of `names`.
/// `None`: not a plain object this scan accepts (serde decides instead).
pub(crate) fn fields<'a, const N: usize>(
    body: &'a [u8],
    names: [&[u8]; N],
) -> Option<[Option<&'a [u8]>; N]> {
    let mut found = [None; N];
    let mut s = Scanner { b: body, i: 0 };
    s.ws();
    s.expect(b'{')?;
    s.ws();
    if s.peek()? == b'}' {
        s.i += 1;
    } else {
        loop {
            s.ws();
            let (key, escaped) = s.string()?;
            s.ws();
            s.expect(b':')?;
            s.ws();
            let start = s.i;
            s.value()?;
            let raw = &body[start..s.i];
            // An escaped key might spell a wanted name, and a repeated wanted
            // key is serde's to refuse: both go to serde.
            if escaped {
                return None;
            }
            if let Some(at) = names.iter().position(|n| *n == key) {
                if found[at].is_some() {
                    return None;
                }
                found[at] = Some(raw);
            }
            s.ws();
            match s.next()? {
                b',' => {}
                b'}' => break,
                _ => return None,
            }
        }
    }
    s.ws();
    (s.i == body.len()).then_some(found)
}

/// Where the string whose opening quote was just before `s` ends: the index of
/// its closing quote, and whether a backslash came before it. `None`: no
/// closing quote.
fn string_end(s: &[u8]) -> Option<(usize, bool)> {
    // Most strings (keys, roles, model names) end within 16 bytes with no
    // escape: one compare settles them.
    if let Some(lane) = s.get(..16) {
        let (quotes, backslashes) = lane_masks(lane);
        if quotes != 0 && quotes.trailing_zeros() < backslashes.trailing_zeros() {
            return Some((quotes.trailing_zeros() as usize, false));
        }
    }
    let mut carry = 0;
    let mut backslashes_seen = false;
    let mut blocks = s.chunks_exact(64);
    let mut at = 0;
    let mut end_in = |block: &[u8], offset: usize| {
        let (quotes, backslashes) = masks(block);
        let ends = quotes & !escaped(backslashes, &mut carry);
        if ends != 0 {
            let end = ends.trailing_zeros();
            backslashes_seen |= backslashes & ((1 << end) - 1) != 0;
            return Some((offset + end as usize, backslashes_seen));
        }
        backslashes_seen |= backslashes != 0;
        None
    };
    for block in blocks.by_ref() {
        if let Some(found) = end_in(block, at) {
            return Some(found);
        }
        at += 64;
    }
    // The last partial block, padded with zeros (neither quote nor backslash).
    let tail = blocks.remainder();
    let mut last = [0; 64];
    last[..tail.len()].copy_from_slice(tail);
    end_in(&last, at)
}

/// One bit per byte of a 64-byte block: its quotes, and its backslashes.
fn masks(block: &[u8]) -> (u64, u64) {
    let (mut quotes, mut backslashes) = (0, 0);
    for (k, lane) in block.chunks_exact(16).enumerate() {
        let (q, b) = lane_masks(lane);
        quotes |= u64::from(q) << (16 * k);
        backslashes |= u64::from(b) << (16 * k);
    }
    (quotes, backslashes)
}

/// The same for 16 bytes.
fn lane_masks(lane: &[u8]) -> (u16, u16) {
    let mut bytes = [0; 16];
    bytes.copy_from_slice(lane);
    let v = u8x16::new(bytes);
    (
        v.simd_eq(u8x16::splat(b'"')).to_bitmask() as u16,
        v.simd_eq(u8x16::splat(b'\\')).to_bitmask() as u16,
    )
}

/// The bytes of a block that a backslash escapes, from its backslash bits.
///
/// A byte is escaped when the run of backslashes just before it is odd. A run
/// that starts at an even bit and is odd long ends before an odd bit, one
/// that starts at an odd bit before an even one. Adding a run's lowest bit to
/// the mask carries past the run to the byte after it, so two additions (one
/// for the runs starting at even bits, one for those at odd bits) find where
/// every run ends. `carry` (0 or 1) says whether the block's first byte is
/// escaped by the block before, and is set for the next block.
fn escaped(backslashes: u64, carry: &mut u64) -> u64 {
    const EVEN: u64 = 0x5555_5555_5555_5555;
    // A backslash that is itself escaped starts no run.
    let b = backslashes & !*carry;
    let starts = b & !(b << 1);
    let after_even = b.wrapping_add(starts & EVEN) & !b;
    let (sum, odd_run_at_the_end) = b.overflowing_add(starts & !EVEN);
    let after_odd = sum & !b;
    let escaped = (after_even & !EVEN) | (after_odd & EVEN) | *carry;
    // A run that reaches the block's last bit: odd when it started at an odd
    // bit, and then the next block's first byte is escaped.
    *carry = u64::from(odd_run_at_the_end);
    escaped
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// A string at the cursor: its raw contents and whether it has escapes.
    fn string(&mut self) -> Option<(&'a [u8], bool)> {
        self.expect(b'"')?;
        let start = self.i;
        let (len, escaped) = string_end(self.b.get(start..)?)?;
        self.i = start + len + 1;
        Some((&self.b[start..start + len], escaped))
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.i + word.len();
        (self.b.get(self.i..end)? == word).then(|| self.i = end)
    }

    /// A number as JSON spells it: `-? (0 | [1-9][0-9]*) (.[0-9]+)? ([eE][+-]?[0-9]+)?`.
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            self.some_digits()?;
        }
        Some(())
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        let start = self.i;
        self.digits();
        (self.i > start).then_some(())
    }

    /// Skips one value of any kind, nested containers included.
    fn value(&mut self) -> Option<()> {
        // One bit per open container, innermost lowest: 1 an object, 0 an array.
        let mut stack: u128 = 0;
        let mut depth: u32 = 0;
        loop {
            // A value is expected here.
            self.ws();
            match self.peek()? {
                open @ (b'{' | b'[') => {
                    self.i += 1;
                    self.ws();
                    let object = open == b'{';
                    let close = if object { b'}' } else { b']' };
                    if self.peek()? == close {
                        self.i += 1;
                    } else {
                        depth += 1;
                        if depth > MAX_DEPTH {
                            return None;
                        }
                        stack = (stack << 1) | u128::from(object);
                        if object {
                            self.member_key()?;
                        }
                        continue;
                    }
                }
                b'"' => {
                    self.string()?;
                }
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                b'-' | b'0'..=b'9' => self.number()?,
                _ => return None,
            }
            // A value ended: close what it ends, or go on to the next element.
            loop {
                if depth == 0 {
                    return Some(());
                }
                let object = stack & 1 == 1;
                self.ws();
                match self.next()? {
                    b',' => {
                        if object {
                            self.member_key()?;
                        }
                        break;
                    }
                    b'}' if object => {}
                    b']' if !object => {}
                    _ => return None,
                }
                stack >>= 1;
                depth -= 1;
            }
        }
    }

    /// `"key":` inside a nested object.
    fn member_key(&mut self) -> Option<()> {
        self.ws();
        self.string()?;
        self.ws();
        self.expect(b':')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: [&[u8]; 2] = [b"model", b"stream"];

    #[test]
    fn finds_top_level_fields_and_not_nested_ones() {
        let body = br#" { "messages": [{"model": "inner", "content": "a \"model\": x \\"}],
            "model" : "m1", "n": -1.5e3, "z": [0, 10.25, 2E+8, 3e-1],
            "x": {"a": [true, false, null, {}, []]}, "stream": true } "#;
        let [model, stream] = fields(body, NAMES).unwrap();
        assert_eq!(model, Some(&br#""m1""#[..]));
        assert_eq!(stream, Some(&b"true"[..]));
        assert_eq!(fields(b"{}", NAMES), Some([None, None]));
    }

    /// The closing quote, found a byte at a time.
    fn string_end_bytewise(s: &[u8]) -> Option<(usize, bool)> {
        let (mut skip, mut seen) = (false, false);
        for (i, &c) in s.iter().enumerate() {
            match c {
                _ if skip => skip = false,
                b'"' => return Some((i, seen)),
                b'\\' => (skip, seen) = (true, true),
                _ => {}
            }
        }
        None
    }

    #[test]
    fn the_block_search_finds_the_closing_quote_at_every_offset() {
        for len in 0..200 {
            for at in 0..len {
                let mut s = vec![b'a'; len];
                s[at] = b'"';
                assert_eq!(string_end(&s), Some((at, false)), "len {len} at {at}");
                // Escaped by the byte before (across a block edge too), the
                // closing quote is a later one.
                if at > 0 {
                    s[at - 1] = b'\\';
                    assert_eq!(string_end(&s), None, "len {len} at {at}");
                    s.push(b'"');
                    assert_eq!(string_end(&s), Some((len, true)), "len {len} at {at}");
                }
            }
            assert_eq!(string_end(&vec![b'!'; len]), None);
        }
        // Runs of backslashes of every length ending at every bit of a block.
        for run in 1..70usize {
            for end in 0..130usize {
                let mut s = vec![b'a'; 140];
                let first = (end + 1).saturating_sub(run);
                s[first..=end].fill(b'\\');
                s[end + 1] = b'"';
                s[139] = b'"';
                assert_eq!(
                    string_end(&s),
                    string_end_bytewise(&s),
                    "run {run} end {end}"
                );
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn the_block_search_agrees_with_a_byte_at_a_time(
            s in proptest::collection::vec(proptest::sample::select(&b"\"\\\\\\ab"[..]), 0..400)
        ) {
            proptest::prop_assert_eq!(string_end(&s), string_end_bytewise(&s));
        }
    }

    #[test]
    fn malformed_or_doubtful_bodies_are_left_to_serde() {
        for body in [
            &b""[..],
            b"[1]",
            b"{\"model\":",
            b"{\"model\":\"m\"",
            b"{\"model\":\"m\"}x",
            b"{\"a\":[1,}",
            b"{\"a\":[1 2]}",
            b"{\"a\":{\"b\" 1}}",
            b"{\"a\":{\"b\":1]}",
            b"{\"a\":[1}",
            b"{\"a\":tru}",
            b"{\"a\":\"unterminated}",
            b"{\"a\":\"ends in an escape\\",
            b"{\"a\":1,}",
            b"{\"model\":\"a\",\"model\":\"b\"}",
            b"{\"mod\\u0065l\":\"m\"}",
            b"{\"a\":x}",
            b"{\"a\":1-2}",
            b"{\"a\":01}",
            b"{\"a\":1.}",
            b"{\"a\":.5}",
            b"{\"a\":1e}",
            b"{\"a\":-}",
        ] {
            assert!(
                fields(body, NAMES).is_none(),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(200), "]".repeat(200));
        assert!(fields(deep.as_bytes(), NAMES).is_none());
        let ok = format!("{{\"a\":{}1{}}}", "[".repeat(100), "]".repeat(100));
        assert!(fields(ok.as_bytes(), NAMES).is_some());
    }
}
