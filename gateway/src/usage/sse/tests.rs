//! SSE filter tests: a recorded stream under arbitrary frame splits and line endings.

use super::*;
use proptest::prelude::*;

/// A chat stream as an OpenAI-style upstream sends it when `include_usage` is on.
fn injected(eol: &str) -> String {
    let mut s = String::new();
    for (i, tok) in ["Hel", "lo", " \\\"usage\\\": {} ", "!"].iter().enumerate() {
        s += &format!(
            r#"data: {{"id":"c1","object":"chat.completion.chunk","choices":[{{"index":0,"delta":{{"content":"{tok}"}},"finish_reason":null}}],"usage":null}}{eol}{eol}"#
        );
        if i == 1 {
            s += &format!(": keep-alive comment{eol}{eol}");
        }
    }
    s += &format!(
        r#"data: {{"id":"c1","object":"chat.completion.chunk","choices":[{{"index":0,"delta":{{}},"finish_reason":"stop"}}],"usage":null}}{eol}{eol}"#
    );
    s += &format!(
        r#"data: {{"id":"c1","object":"chat.completion.chunk","choices":[],"usage":{{"prompt_tokens":7,"completion_tokens":4,"total_tokens":11}}}}{eol}{eol}"#
    );
    s += &format!("data: [DONE]{eol}{eol}");
    s
}

/// The same stream as the client would have had without `include_usage`.
fn plain(eol: &str) -> String {
    let with = injected(eol);
    let mut out = String::new();
    for event in with.split_inclusive(&format!("{eol}{eol}")) {
        if event.contains(r#""choices":[]"#) {
            continue;
        }
        out += &event.replace(r#","usage":null"#, "");
    }
    out
}

const USAGE: Usage = Usage {
    prompt_tokens: 7,
    completion_tokens: 4,
    total_tokens: 11,
};

fn run(filter: &mut SseFilter, body: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    for &c in cuts.iter().chain(std::iter::once(&body.len())) {
        let c = c.clamp(at, body.len());
        out.extend_from_slice(&filter.push(Bytes::copy_from_slice(&body[at..c])));
        at = c;
    }
    out.extend_from_slice(&filter.finish());
    out
}

#[test]
fn strip_removes_the_usage_chunk_and_null_members_and_captures_usage() {
    for eol in ["\n", "\r\n", "\r"] {
        let mut f = SseFilter::new(true);
        let out = run(&mut f, injected(eol).as_bytes(), &[]);
        assert_eq!(String::from_utf8(out).unwrap(), plain(eol), "eol {eol:?}");
        assert_eq!(f.usage(), Some(USAGE));
    }
}

#[test]
fn observe_passes_every_byte_and_captures_usage() {
    let body = injected("\n");
    let mut f = SseFilter::new(false);
    let out = run(&mut f, body.as_bytes(), &[10, 300, 301]);
    assert_eq!(out, body.as_bytes());
    assert_eq!(f.usage(), Some(USAGE));
}

#[test]
fn whole_untouched_events_go_out_as_the_same_buffer() {
    let frame = Bytes::from_static(b"data: {\"choices\":[{\"delta\":{}}]}\n\ndata: [DONE]\n\n");
    let mut f = SseFilter::new(true);
    let out = f.push(frame.clone());
    assert_eq!(out.as_ptr(), frame.as_ptr());
    assert_eq!(out.len(), frame.len());
}

#[test]
fn a_partial_event_is_held_only_until_its_blank_line() {
    let mut f = SseFilter::new(true);
    assert_eq!(
        &f.push(Bytes::from_static(b"data: 1\n\ndata: ")),
        &b"data: 1\n\n"[..]
    );
    assert_eq!(&f.push(Bytes::from_static(b"2\n")), &b""[..]);
    assert_eq!(
        &f.push(Bytes::from_static(b"\ndata: 3")),
        &b"data: 2\n\n"[..]
    );
    assert_eq!(&f.finish(), &b"data: 3"[..]);
}

#[test]
fn usage_on_a_chunk_with_choices_is_kept_and_counted() {
    let body = b"data: {\"choices\":[{\"delta\":{}}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\n";
    let mut f = SseFilter::new(true);
    assert_eq!(run(&mut f, body, &[]), body);
    assert_eq!(f.usage().map(|u| u.total_tokens), Some(3));
}

#[test]
fn an_oversized_event_is_released_and_filtering_stops() {
    let mut big = b"data: ".to_vec();
    big.resize(MAX_HELD_BYTES + 10, b'x');
    let mut f = SseFilter::new(true);
    let mut out = f.push(Bytes::from(big.clone())).to_vec();
    out.extend_from_slice(&f.push(Bytes::from_static(b"\n\n")));
    big.extend_from_slice(b"\n\n");
    assert_eq!(out, big);
}

proptest! {
    #[test]
    fn any_frame_split_gives_the_unsplit_output_and_never_leaks_usage(
        cuts in proptest::collection::vec(0usize..1200, 0..24),
        eol in prop_oneof![Just("\n"), Just("\r\n"), Just("\r")],
    ) {
        let body = injected(eol);
        let mut cuts = cuts;
        cuts.sort_unstable();
        let mut f = SseFilter::new(true);
        let out = run(&mut f, body.as_bytes(), &cuts);
        let out = String::from_utf8(out).unwrap();
        prop_assert_eq!(&out, &plain(eol));
        prop_assert!(!out.contains("prompt_tokens") && !out.contains("\"usage\""));
        prop_assert_eq!(f.usage(), Some(USAGE));
    }

    #[test]
    fn arbitrary_bytes_pass_through_in_order_unless_dropped(
        data in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'a'), Just(b'"')], 0..200),
        cut in 0usize..200,
    ) {
        // Without any usage member nothing may change, whatever the line endings.
        let mut f = SseFilter::new(true);
        prop_assert_eq!(run(&mut f, &data, &[cut]), data);
    }
}
