//! Finds the top-level fields of a JSON object without deserializing the rest.
//!
//! A prompt is almost all string, and serde skips an unknown string by
//! checking every byte for quotes, escapes and control characters and by
//! decoding every escape. Here a string is skipped eight bytes at a time for
//! its closing quote (an escape only skips the byte after it), and the
//! structure around strings (brackets, commas, colons, numbers, literals) is
//! checked in full. What this does not check inside strings (control
//! characters, escape letters, UTF-8) the replica still does: such a body is
//! forwarded and refused upstream.
//!
//! Anything this scan does not accept, serde then reads the slow way, so a
//! malformed body gets serde's exact error.

/// Deeper nesting than this goes to serde (which stops at 128 too).
const MAX_DEPTH: u32 = 128;

/// The raw JSON of each wanted top-level field, in the order of `names`.
/// `None`: not a plain object this scan accepts (serde decides instead).
pub(super) fn fields<'a, const N: usize>(
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

/// The index of the first `"` or `\` in `s`, eight bytes per step.
fn quote_or_backslash(s: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    const QUOTES: u64 = LO * b'"' as u64;
    const BACKSLASHES: u64 = LO * b'\\' as u64;
    let mut words = s.chunks_exact(8);
    let mut at = 0;
    for word in words.by_ref() {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        let x = u64::from_le_bytes(bytes);
        // A zero byte in `x ^ pattern` is a match; the lowest flagged byte
        // is always a true one (borrows only run upwards).
        let q = x ^ QUOTES;
        let b = x ^ BACKSLASHES;
        let hit = ((q.wrapping_sub(LO) & !q) | (b.wrapping_sub(LO) & !b)) & HI;
        if hit != 0 {
            return Some(at + (hit.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    words
        .remainder()
        .iter()
        .position(|c| matches!(c, b'"' | b'\\'))
        .map(|p| at + p)
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
        let mut escaped = false;
        loop {
            let at = self.i + quote_or_backslash(self.b.get(self.i..)?)?;
            if self.b[at] == b'"' {
                self.i = at + 1;
                return Some((&self.b[start..at], escaped));
            }
            // A backslash and the byte it escapes (`\"` must not end the string).
            escaped = true;
            self.i = at + 2;
        }
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

    #[test]
    fn the_word_search_finds_the_first_quote_or_backslash_at_every_offset() {
        for len in 0..40 {
            for at in 0..len {
                for c in [b'"', b'\\'] {
                    let mut s = vec![b'a'; len];
                    s[at] = c;
                    // A later hit and bytes next to the patterns must not mislead it.
                    if at + 3 < len {
                        s[at + 3] = b'"';
                    }
                    if at > 0 {
                        s[at - 1] = b'#';
                    }
                    assert_eq!(quote_or_backslash(&s), Some(at), "len {len} at {at}");
                }
            }
            assert_eq!(quote_or_backslash(&vec![b'!'; len]), None);
        }
        // Bytes just around the patterns' values (0x21, 0x5b, 0x5d, 0x22 ^ 0x80).
        assert_eq!(quote_or_backslash(b"!#[]\xa2\xdc!#[]\xa2\xdc\""), Some(12));
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
