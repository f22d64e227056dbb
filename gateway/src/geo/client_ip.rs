//! The client's address: the peer, or the forwarding headers when the peer is a trusted proxy.
//!
//! Each proxy appends the address it received the request from to the
//! right of `X-Forwarded-For` / `Forwarded`. Only the entries our own
//! trusted proxies appended can be believed, so the walk starts at the right
//! and stops at the first address that is not a trusted proxy: everything to
//! the left of it was written by that (untrusted) hop or its client.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use http::HeaderMap;
use http::header::FORWARDED;
use ipnet::IpNet;

const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// No legitimate chain of our own proxies is this long; the cap bounds the
/// work an attacker can cause with a huge header.
const MAX_HOPS: usize = 32;

/// The address the request came from, for geography and rate limits.
///
/// The peer is used unless it lies in one of the `trusted` proxy CIDRs.
/// Then `X-Forwarded-For` (every instance, comma-separated) and `Forwarded`
/// (RFC 7239 `for=`) are walked from the right, skipping trusted addresses,
/// and the right-most untrusted address wins. A malformed or obfuscated
/// entry (`unknown`, `_hidden`, garbage) stops the walk at the last address
/// read so far. If both headers are present and name different clients, one
/// of them was written by the client rather than our proxies, and we cannot
/// tell which: the peer is used. IPv4-mapped IPv6 addresses come back as
/// IPv4. This never panics.
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer_ip = canonical(peer.ip());
    if !is_trusted(peer_ip, trusted) {
        return peer_ip;
    }
    let xff = walk(
        hops(headers, X_FORWARDED_FOR, parse_xff_element),
        peer_ip,
        trusted,
    );
    let fwd = walk(
        hops(headers, FORWARDED.as_str(), parse_forwarded_element),
        peer_ip,
        trusted,
    );
    match (xff, fwd) {
        (Some(a), Some(b)) if a != b => peer_ip,
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => peer_ip,
    }
}

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

/// `::ffff:a.b.c.d` is the IPv4 client a dual-stack socket saw.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// One list entry, right-most first; `None` marks an entry we cannot read.
type Hop = Option<IpAddr>;

/// The hops of every instance of `name`, right to left.
fn hops(headers: &HeaderMap, name: &str, parse: fn(&str) -> Hop) -> Vec<Hop> {
    let mut out = Vec::new();
    // Later instances were appended later: they are further right.
    for value in headers.get_all(name).iter().rev() {
        let Ok(text) = value.to_str() else {
            out.push(None);
            return out;
        };
        for element in split_unquoted(text, b',').into_iter().rev() {
            // Empty list elements are allowed by the HTTP list syntax and
            // carry nothing.
            if element.trim().is_empty() {
                continue;
            }
            let hop = parse(element);
            out.push(hop);
            if hop.is_none() || out.len() >= MAX_HOPS {
                return out;
            }
        }
    }
    out
}

/// `None` when the header is absent; otherwise the right-most untrusted
/// address, or the last good one where the walk had to stop.
fn walk(hops: Vec<Hop>, peer: IpAddr, trusted: &[IpNet]) -> Option<IpAddr> {
    if hops.is_empty() {
        return None;
    }
    let mut last_good = peer;
    for hop in hops {
        let Some(ip) = hop else {
            return Some(last_good);
        };
        if !is_trusted(ip, trusted) {
            return Some(ip);
        }
        last_good = ip;
    }
    // Every hop was one of our proxies (or the cap was hit): the left-most
    // one read is the closest we know to the client.
    Some(last_good)
}

fn parse_xff_element(element: &str) -> Hop {
    parse_node(element.trim())
}

/// `for=192.0.2.60;proto=http;by=203.0.113.43` or `for="[2001:db8::17]:4711"`.
fn parse_forwarded_element(element: &str) -> Hop {
    let mut found = None;
    for pair in split_unquoted(element, b';') {
        let (name, value) = pair.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("for") {
            continue;
        }
        // RFC 7239 allows each parameter once per element; two `for`s mean
        // someone is playing games.
        if found.is_some() {
            return None;
        }
        found = Some(unquote(value.trim())?);
    }
    parse_node(&found?)
}

/// An address with an optional port: `1.2.3.4`, `1.2.3.4:80`, `[::1]`,
/// `[::1]:80`, or a bare IPv6 address. Obfuscated ports (`_x`) are allowed;
/// obfuscated or `unknown` nodes are not addresses.
fn parse_node(node: &str) -> Hop {
    if let Some(rest) = node.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !after.is_empty() && !is_port(after.strip_prefix(':')?) {
            return None;
        }
        return inside
            .parse::<Ipv6Addr>()
            .ok()
            .map(|ip| canonical(ip.into()));
    }
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    let (host, port) = node.split_once(':')?;
    if !is_port(port) {
        return None;
    }
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

fn is_port(port: &str) -> bool {
    let digits = !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
    let obfuscated = port.len() > 1 && port.starts_with('_');
    digits || obfuscated
}

/// Strips the quotes of an RFC 7230 quoted-string and resolves its escapes.
fn unquote(value: &str) -> Option<String> {
    let Some(inner) = value.strip_prefix('"') else {
        return Some(value.to_owned());
    };
    let inner = inner.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// Splits at `sep` outside double quotes, so `for="[::1]:80,x"` stays whole.
/// An unterminated quote leaves the rest as one (malformed) piece.
fn split_unquoted(text: &str, sep: u8) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, b) in text.bytes().enumerate() {
        if escaped {
            escaped = false;
        } else if quoted && b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            quoted = !quoted;
        } else if b == sep && !quoted {
            // `sep` is ASCII, so `i` is a char boundary.
            parts.push(text.get(start..i).unwrap_or_default());
            start = i + 1;
        }
    }
    parts.push(text.get(start..).unwrap_or_default());
    parts
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn parse_node_accepts_the_usual_forms() {
        let v4: IpAddr = "203.0.113.9".parse().unwrap();
        let v6: IpAddr = "2001:db8::17".parse().unwrap();
        assert_eq!(parse_node("203.0.113.9"), Some(v4));
        assert_eq!(parse_node("203.0.113.9:4711"), Some(v4));
        assert_eq!(parse_node("203.0.113.9:_abc"), Some(v4));
        assert_eq!(parse_node("2001:db8::17"), Some(v6));
        assert_eq!(parse_node("[2001:db8::17]"), Some(v6));
        assert_eq!(parse_node("[2001:db8::17]:4711"), Some(v6));
        assert_eq!(parse_node("::ffff:203.0.113.9"), Some(v4));
        for bad in [
            "unknown",
            "_hidden",
            "",
            "[2001:db8::17",
            "1.2.3.4:",
            "1.2.3.4:x",
            "[::1]x",
        ] {
            assert_eq!(parse_node(bad), None, "{bad}");
        }
    }

    #[test]
    fn forwarded_elements_parse_with_quotes_and_other_params() {
        let v6: IpAddr = "2001:db8:cafe::17".parse().unwrap();
        assert_eq!(
            parse_forwarded_element(r#"proto=https;For="[2001:db8:cafe::17]:4711";by=_x"#),
            Some(v6)
        );
        assert_eq!(
            parse_forwarded_element("for=192.0.2.43"),
            "192.0.2.43".parse().ok()
        );
        assert_eq!(parse_forwarded_element("by=192.0.2.43"), None);
        assert_eq!(parse_forwarded_element("for=1.1.1.1;for=2.2.2.2"), None);
        assert_eq!(parse_forwarded_element(r#"for="1.1.1.1"#), None);
    }

    #[test]
    fn split_respects_quotes() {
        assert_eq!(
            split_unquoted(r#"a="x,y",b"#, b','),
            vec![r#"a="x,y""#, "b"]
        );
        assert_eq!(
            split_unquoted(r#"a="x\",y",b"#, b','),
            vec![r#"a="x\",y""#, "b"]
        );
        assert_eq!(split_unquoted("", b','), vec![""]);
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn peer(s: &str) -> SocketAddr {
        SocketAddr::new(ip(s), 40000)
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn proxies() -> Vec<IpNet> {
        vec![net("10.0.0.0/8"), net("fd00::/8")]
    }

    #[test]
    fn untrusted_peer_forwarding_headers_are_ignored() {
        let h = headers(&[("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=5.6.7.8")]);
        assert_eq!(
            client_ip(peer("203.0.113.7"), &h, &proxies()),
            ip("203.0.113.7")
        );
        assert_eq!(client_ip(peer("203.0.113.7"), &h, &[]), ip("203.0.113.7"));
        // A mapped peer is reported in its IPv4 form.
        assert_eq!(
            client_ip(peer("::ffff:203.0.113.7"), &h, &proxies()),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn trusted_chain_yields_the_rightmost_untrusted_address() {
        let trusted = proxies();
        // The client spoofed 6.6.6.6; our edge appended the real 198.51.100.9,
        // and an inner proxy 10.0.0.2.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.9, 10.0.0.2")]);
        assert_eq!(
            client_ip(peer("10.0.0.3"), &h, &trusted),
            ip("198.51.100.9")
        );
        // Several header instances form one list, in order.
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "198.51.100.9,10.0.0.2"),
        ]);
        assert_eq!(
            client_ip(peer("10.0.0.3"), &h, &trusted),
            ip("198.51.100.9")
        );
        // A trusted peer given only trusted hops: the left-most one.
        let h = headers(&[("x-forwarded-for", "10.9.9.9, 10.0.0.2")]);
        assert_eq!(
            client_ip(peer("::ffff:10.0.0.3"), &h, &trusted),
            ip("10.9.9.9")
        );
        // No header at all: the peer.
        assert_eq!(
            client_ip(peer("10.0.0.3"), &HeaderMap::new(), &trusted),
            ip("10.0.0.3")
        );
        // Ports and IPv6 in X-Forwarded-For.
        let h = headers(&[("x-forwarded-for", "[2001:db8::5]:443, 10.0.0.2:8080")]);
        assert_eq!(client_ip(peer("fd00::1"), &h, &trusted), ip("2001:db8::5"));
    }

    #[test]
    fn malformed_entries_stop_the_walk_at_the_last_good_address() {
        let trusted = proxies();
        let h = headers(&[("x-forwarded-for", "198.51.100.9, garbage, 10.0.0.2")]);
        assert_eq!(client_ip(peer("10.0.0.3"), &h, &trusted), ip("10.0.0.2"));
        let h = headers(&[("x-forwarded-for", "198.51.100.9, unknown")]);
        assert_eq!(client_ip(peer("10.0.0.3"), &h, &trusted), ip("10.0.0.3"));
        let h = headers(&[("forwarded", "for=198.51.100.9, for=_hidden, for=10.0.0.2")]);
        assert_eq!(client_ip(peer("10.0.0.3"), &h, &trusted), ip("10.0.0.2"));
        // Non-text bytes in a later instance stop the walk before the earlier one.
        let mut h = headers(&[("x-forwarded-for", "198.51.100.9")]);
        h.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
        );
        assert_eq!(client_ip(peer("10.0.0.3"), &h, &trusted), ip("10.0.0.3"));
        // Empty list elements are skipped, not malformed.
        let h = headers(&[("x-forwarded-for", "198.51.100.9,, 10.0.0.2,")]);
        assert_eq!(
            client_ip(peer("10.0.0.3"), &h, &trusted),
            ip("198.51.100.9")
        );
    }

    #[test]
    fn forwarded_header_with_quoted_v6_and_extra_params() {
        let trusted = proxies();
        let h = headers(&[(
            "forwarded",
            r#"for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https;by="[fd00::2]", For="[fd00::9]""#,
        )]);
        assert_eq!(
            client_ip(peer("fd00::1"), &h, &trusted),
            ip("2001:db8:cafe::17")
        );
        // A quoted comma does not split the element.
        let h = headers(&[("forwarded", r#"for=198.51.100.9;host="a,b", for=10.0.0.2"#)]);
        assert_eq!(
            client_ip(peer("10.0.0.3"), &h, &trusted),
            ip("198.51.100.9")
        );
        // Both headers naming the same client agree.
        let h = headers(&[
            ("forwarded", "for=198.51.100.9"),
            ("x-forwarded-for", "198.51.100.9"),
        ]);
        assert_eq!(
            client_ip(peer("10.0.0.3"), &h, &trusted),
            ip("198.51.100.9")
        );
    }

    /// Our proxy maintains one header; a client-written copy of the other must
    /// not let it pick its own address.
    #[test]
    fn spoofed_second_header_family_cannot_choose_the_client() {
        let h = headers(&[
            ("x-forwarded-for", "198.51.100.9"),
            ("forwarded", "for=6.6.6.6"),
        ]);
        assert_eq!(client_ip(peer("10.0.0.3"), &h, &proxies()), ip("10.0.0.3"));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn client_ip_never_panics_on_arbitrary_header_bytes(
            xff in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..4),
            fwd in proptest::collection::vec("[0-9a-fA-F.:\\[\\]\",;= forFOR_\\\\-]{0,60}", 0..4),
            peer_bits in any::<u128>(),
            v4_peer in any::<bool>(),
            trust_all in any::<bool>(),
        ) {
            let mut h = HeaderMap::new();
            for v in &xff {
                if let Ok(v) = HeaderValue::from_bytes(v) {
                    h.append("x-forwarded-for", v);
                }
            }
            for v in &fwd {
                if let Ok(v) = HeaderValue::from_str(v) {
                    h.append("forwarded", v);
                }
            }
            let peer_ip = if v4_peer { IpAddr::V4((peer_bits as u32).into()) } else { IpAddr::V6(peer_bits.into()) };
            let trusted = if trust_all { vec![net("0.0.0.0/0"), net("::/0")] } else { vec![net("10.0.0.0/8")] };
            let got = client_ip(SocketAddr::new(peer_ip, 1), &h, &trusted);
            let canonical = match peer_ip {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer_ip, IpAddr::V4),
                v4 => v4,
            };
            // Headers from an untrusted peer never matter.
            if !trusted.iter().any(|n| n.contains(&canonical)) {
                prop_assert_eq!(got, canonical);
            }
        }
    }
}
