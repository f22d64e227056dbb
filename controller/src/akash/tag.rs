//! The leasegate tag as an Akash placement-group name.
//!
//! Console's deployment list returns ids, state and escrow only; the one
//! piece of the SDL it gives back is each group's `group_spec.name` (through
//! `GET /v1/deployment/{owner}/{dseq}`), which is the SDL's placement profile
//! name. So the tag lives there: `lg-<n>-<controller>-<intent>`, where `<n>`
//! is the length of the escaped controller id. Escaping keeps the name in
//! `[a-z0-9-]` (safe as a YAML key and a chain group name) and makes any id
//! round-trip: `x` and every byte outside `[a-wyz0-9-]` become `x` + two hex
//! digits.

use crate::market::Tag;

/// The placeholder a rendered SDL carries where the tag goes;
/// [`apply`] fills it at deployment creation.
pub const PLACEHOLDER: &str = "{{leasegate_tag}}";
const PREFIX: &str = "lg-";
/// Keeps group names short; ids longer than this are refused, not truncated,
/// because a truncated tag could match another intent.
const MAX_LEN: usize = 120;

fn escape(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        match b {
            b'a'..=b'w' | b'y' | b'z' | b'0'..=b'9' | b'-' => out.push(char::from(b)),
            _ => out.push_str(&format!("x{b:02x}")),
        }
    }
    out
}

fn unescape(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'x' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The group name for a tag, or `None` when the ids are empty or too long.
pub fn encode(tag: &Tag) -> Option<String> {
    if tag.controller_id.is_empty() || tag.intent_id.is_empty() {
        return None;
    }
    let c = escape(&tag.controller_id);
    let name = format!("{PREFIX}{}-{c}-{}", c.len(), escape(&tag.intent_id));
    (name.len() <= MAX_LEN).then_some(name)
}

/// The tag in a group name; `None` for names leasegate did not make.
pub fn decode(name: &str) -> Option<Tag> {
    let rest = name.strip_prefix(PREFIX)?;
    let (len, rest) = rest.split_once('-')?;
    let len: usize = len.parse().ok()?;
    let c = rest.get(..len)?;
    let i = rest.get(len..)?.strip_prefix('-')?;
    let tag = Tag {
        controller_id: unescape(c)?,
        intent_id: unescape(i)?,
    };
    // Only the canonical form counts, so one tag has exactly one name.
    (encode(&tag).as_deref() == Some(name)).then_some(tag)
}

/// Puts the tag into a rendered SDL. Refuses an SDL that would not carry it:
/// an untagged deployment could not be found again after a crash.
pub fn apply(sdl: &str, tag: &Tag) -> Result<String, String> {
    let name = encode(tag).ok_or_else(|| {
        format!("tag ids must be non-empty and short (at most {MAX_LEN} chars encoded)")
    })?;
    if !sdl.contains(PLACEHOLDER) {
        return Err(format!(
            "the SDL has no {PLACEHOLDER} placement name, so the deployment could not be recognised after a crash"
        ));
    }
    Ok(sdl.replace(PLACEHOLDER, &name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(c: &str, i: &str) -> Tag {
        Tag {
            controller_id: c.into(),
            intent_id: i.into(),
        }
    }

    #[test]
    fn tags_round_trip_including_awkward_ids() {
        for (c, i) in [
            ("ctl-1", "0190f2a1-7c3b"),
            ("prod.eu", "Intent_X/42"),
            ("x", "xx"),
            ("a-b", "-c-"),
            ("ü", "7"),
        ] {
            let t = tag(c, i);
            let name = encode(&t).unwrap();
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{name}"
            );
            assert_eq!(decode(&name), Some(t), "{name}");
        }
    }

    #[test]
    fn readable_ids_stay_readable() {
        assert_eq!(
            encode(&tag("ctl-1", "42")).as_deref(),
            Some("lg-5-ctl-1-42")
        );
    }

    #[test]
    fn foreign_group_names_are_not_ours() {
        for name in [
            "dcloud",
            "westcoast",
            "lg-",
            "lg-99-a-b",
            "lg-1-a",
            "lg-1-aab",
            "lg-1-a-xzz",
        ] {
            assert_eq!(decode(name), None, "{name}");
        }
    }

    #[test]
    fn empty_or_huge_ids_are_refused() {
        assert_eq!(encode(&tag("", "1")), None);
        assert_eq!(encode(&tag("c", &"/".repeat(100))), None);
    }

    #[test]
    fn apply_refuses_an_sdl_without_the_placeholder() {
        let t = tag("c", "i");
        assert!(apply("placement:\n  dcloud:\n", &t).is_err());
        let out = apply("placement:\n  {{leasegate_tag}}:\n", &t).unwrap();
        assert_eq!(out, "placement:\n  lg-1-c-i:\n");
    }
}
