//! HTTP/1.1 framing for the upstream client: the request head out, the response head and body in.

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};

use super::Error;

/// A response head larger than this is refused (hyper's client allows ~400 KiB;
/// replicas and fallbacks send well under 4 KiB).
pub(super) const MAX_HEAD: usize = 64 * 1024;
/// More response headers than this are refused.
const MAX_HEADERS: usize = 128;
/// A chunk-size line or trailer line longer than this is refused.
const MAX_LINE: usize = 4096;
/// Bodies up to this size go out in the same write as the head.
const INLINE_BODY: usize = 16 * 1024;

/// The request as bytes: the head (with a small body appended) and, for a
/// large body, the body itself, written after the head without a copy.
/// No `Debug`: the head carries the replica's key.
pub(super) struct Wire {
    pub head: Vec<u8>,
    pub body: Option<Bytes>,
}

/// Writes the request line and headers; `Host` and `Content-Length` are ours.
pub(super) fn encode_request(
    method: &Method,
    path: &str,
    authority: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Wire {
    let inline = body.len() <= INLINE_BODY;
    let mut size = method.as_str().len() + path.len() + authority.len() + 64;
    for (name, value) in headers {
        size += name.as_str().len() + value.len() + 4;
    }
    if inline {
        size += body.len();
    }
    let mut head = Vec::with_capacity(size);
    head.extend_from_slice(method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(path.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    head.extend_from_slice(authority.as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    // A body-less GET or HEAD says nothing; anything else states its length.
    if !body.is_empty() || !matches!(*method, Method::GET | Method::HEAD) {
        head.extend_from_slice(b"content-length: ");
        let mut digits = [0u8; 20];
        head.extend_from_slice(decimal(body.len(), &mut digits));
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    if inline {
        head.extend_from_slice(&body);
        Wire { head, body: None }
    } else {
        Wire {
            head,
            body: Some(body),
        }
    }
}

/// `n` in decimal, written into the end of `out` (no allocation).
fn decimal(mut n: usize, out: &mut [u8; 20]) -> &[u8] {
    let mut at = out.len();
    loop {
        at -= 1;
        out[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &out[at..];
        }
    }
}

/// A parsed response head, and how its body is framed.
#[derive(Debug)]
pub(super) struct Head {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub framing: Framing,
    /// Whether the connection may carry another request after this body.
    pub keep_alive: bool,
}

/// Parses a complete response head from the front of `buf` and removes it.
///
/// `Ok(None)` means more bytes are needed. Interim (1xx) responses are
/// skipped: a replica may send `100 Continue` before its answer.
pub(super) fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, Error> {
    loop {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut slots);
        let len = match response.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                return Err(Error::Protocol("response head too large"));
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(Error::Protocol("too many response headers"));
            }
            Err(_) => return Err(Error::Protocol("malformed response head")),
        };
        let code = response.code.unwrap_or(0);
        let status =
            StatusCode::from_u16(code).map_err(|_| Error::Protocol("invalid response status"))?;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(Error::Protocol("unexpected protocol switch"));
        }
        if status.is_informational() {
            buf.advance(len);
            continue;
        }
        let http11 = response.version == Some(1);
        let mut headers = HeaderMap::with_capacity(response.headers.len());
        for h in response.headers.iter() {
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| Error::Protocol("invalid response header name"))?;
            let value = HeaderValue::from_bytes(h.value)
                .map_err(|_| Error::Protocol("invalid response header value"))?;
            headers.append(name, value);
        }
        buf.advance(len);
        let framing = framing(&headers, status, method)?;
        let close = has_token(&headers, header::CONNECTION, "close");
        let keep_alive = http11 && !close && !matches!(framing, Framing::Close);
        return Ok(Some(Head {
            status,
            headers,
            framing,
            keep_alive,
        }));
    }
}

/// How the body of a response ends (RFC 9112 §6.3).
fn framing(headers: &HeaderMap, status: StatusCode, method: &Method) -> Result<Framing, Error> {
    if *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Length(0));
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        // Chunked only when it is the final coding; otherwise the body runs to close.
        let last = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .rfind(|t| !t.is_empty());
        return Ok(match last {
            Some(t) if t.eq_ignore_ascii_case("chunked") => Framing::Chunked(Chunked::Size),
            _ => Framing::Close,
        });
    }
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|b| *b == b',') {
            let n = parse_length(part.trim_ascii())?;
            if length.is_some_and(|l| l != n) {
                return Err(Error::Protocol("conflicting content-length"));
            }
            length = Some(n);
        }
    }
    Ok(length.map_or(Framing::Close, Framing::Length))
}

fn parse_length(digits: &[u8]) -> Result<u64, Error> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(Error::Protocol("invalid content-length"));
    }
    Ok(digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The body decoder's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Framing {
    /// This many bytes remain.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked(Chunked),
    /// The body runs until the replica closes the connection.
    Close,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Chunked {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
    /// The terminating empty line was read.
    Done,
}

/// What one decoding step found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Decoded {
    Data(Bytes),
    NeedMore,
    End,
}

impl Framing {
    /// Takes the next piece of body out of `buf`.
    pub(super) fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, Error> {
        match self {
            Self::Length(0) => Ok(Decoded::End),
            Self::Length(left) => {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let take = take_len(*left, buf.len());
                *left -= take as u64;
                Ok(Decoded::Data(split(buf, take)))
            }
            Self::Close => {
                if buf.is_empty() {
                    Ok(Decoded::NeedMore)
                } else {
                    let all = buf.len();
                    Ok(Decoded::Data(split(buf, all)))
                }
            }
            Self::Chunked(state) => decode_chunked(state, buf),
        }
    }

    /// Whether the whole body has been taken.
    pub(super) fn is_done(&self) -> bool {
        matches!(self, Self::Length(0) | Self::Chunked(Chunked::Done))
    }

    /// Bytes still to come, when known.
    pub(super) fn remaining(&self) -> Option<u64> {
        match self {
            Self::Length(n) => Some(*n),
            Self::Chunked(Chunked::Done) => Some(0),
            _ => None,
        }
    }
}

fn take_len(left: u64, available: usize) -> usize {
    usize::try_from(left).map_or(available, |l| l.min(available))
}

/// The first `n` bytes of `buf`, handed out without a copy.
///
/// When that empties the buffer, the buffer lets go of the allocation so an
/// idle stream holds no read buffer: the next read allocates what it needs.
fn split(buf: &mut BytesMut, n: usize) -> Bytes {
    if n == buf.len() {
        std::mem::take(buf).freeze()
    } else {
        buf.split_to(n).freeze()
    }
}

fn decode_chunked(state: &mut Chunked, buf: &mut BytesMut) -> Result<Decoded, Error> {
    loop {
        match *state {
            Chunked::Size => {
                let Some(eol) = line_end(buf)? else {
                    return Ok(Decoded::NeedMore);
                };
                let size = parse_chunk_size(&buf[..eol])?;
                buf.advance(eol + 2);
                *state = if size == 0 {
                    Chunked::Trailers
                } else {
                    Chunked::Data(size)
                };
            }
            Chunked::Data(left) => {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let take = take_len(left, buf.len());
                let rest = left - take as u64;
                *state = if rest == 0 {
                    Chunked::DataEnd
                } else {
                    Chunked::Data(rest)
                };
                // The chunk's closing CRLF is usually here already: consume it
                // now so the data handed out does not pin the buffer's tail.
                if rest == 0 && buf.len() >= take + 2 {
                    if &buf[take..take + 2] != b"\r\n" {
                        return Err(Error::Protocol("chunk data not followed by CRLF"));
                    }
                    let data = buf.split_to(take).freeze();
                    buf.advance(2);
                    if buf.is_empty() {
                        *buf = BytesMut::new();
                    }
                    *state = Chunked::Size;
                    return Ok(Decoded::Data(data));
                }
                return Ok(Decoded::Data(split(buf, take)));
            }
            Chunked::DataEnd => {
                if buf.len() < 2 {
                    return Ok(Decoded::NeedMore);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(Error::Protocol("chunk data not followed by CRLF"));
                }
                buf.advance(2);
                *state = Chunked::Size;
            }
            Chunked::Trailers => {
                let Some(eol) = line_end(buf)? else {
                    return Ok(Decoded::NeedMore);
                };
                buf.advance(eol + 2);
                if eol == 0 {
                    *state = Chunked::Done;
                    return Ok(Decoded::End);
                }
                // Trailer fields are dropped: nothing downstream reads them.
            }
            Chunked::Done => return Ok(Decoded::End),
        }
    }
}

/// The index of the next CRLF, refusing lines longer than `MAX_LINE`.
fn line_end(buf: &[u8]) -> Result<Option<usize>, Error> {
    match memchr::memmem::find(&buf[..buf.len().min(MAX_LINE + 2)], b"\r\n") {
        Some(i) => Ok(Some(i)),
        None if buf.len() > MAX_LINE => Err(Error::Protocol("chunk line too long")),
        None => Ok(None),
    }
}

/// A chunk-size line: hex digits, then optional whitespace and `;extensions`.
fn parse_chunk_size(line: &[u8]) -> Result<u64, Error> {
    let digits_end = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let (digits, rest) = line.split_at(digits_end);
    if digits.is_empty() || digits.len() > 15 {
        return Err(Error::Protocol("invalid chunk size"));
    }
    let rest = rest.trim_ascii_start();
    if !rest.is_empty() && rest[0] != b';' {
        return Err(Error::Protocol("invalid chunk size"));
    }
    let mut size = 0u64;
    for d in digits {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => d - b'A' + 10,
        };
        size = size * 16 + u64::from(v);
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_of(raw: &str) -> Result<Option<Head>, Error> {
        parse_head(&mut BytesMut::from(raw), &Method::POST)
    }

    /// Feeds `wire` to a fresh decoder in pieces of `step` bytes.
    fn decode_in_steps(mut framing: Framing, wire: &[u8], step: usize) -> (Vec<u8>, bool) {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        loop {
            match framing.decode(&mut buf).unwrap() {
                Decoded::Data(d) => out.extend_from_slice(&d),
                Decoded::End => return (out, true),
                Decoded::NeedMore if fed == wire.len() => return (out, false),
                Decoded::NeedMore => {
                    let end = (fed + step).min(wire.len());
                    buf.extend_from_slice(&wire[fed..end]);
                    fed = end;
                }
            }
        }
    }

    #[test]
    fn the_request_head_carries_host_length_and_the_headers_in_order() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("2"));
        let wire = encode_request(
            &Method::POST,
            "/v1/chat/completions?x=1",
            "10.0.0.1:8000",
            &headers,
            Bytes::from_static(b"{}"),
        );
        assert_eq!(
            String::from_utf8(wire.head).unwrap(),
            "POST /v1/chat/completions?x=1 HTTP/1.1\r\nhost: 10.0.0.1:8000\r\n\
             content-type: application/json\r\nx-a: 1\r\nx-a: 2\r\n\
             content-length: 2\r\n\r\n{}"
        );
        assert!(wire.body.is_none());
        let get = encode_request(
            &Method::GET,
            "/health",
            "h",
            &HeaderMap::new(),
            Bytes::new(),
        );
        assert_eq!(get.head, b"GET /health HTTP/1.1\r\nhost: h\r\n\r\n");
    }

    #[test]
    fn a_large_body_is_written_after_the_head_without_a_copy() {
        let body = Bytes::from(vec![b'x'; INLINE_BODY + 1]);
        let wire = encode_request(&Method::POST, "/", "h", &HeaderMap::new(), body.clone());
        assert!(wire.head.ends_with(b"content-length: 16385\r\n\r\n"));
        let sent = wire.body.unwrap();
        assert_eq!(sent.as_ptr(), body.as_ptr());
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let h = head_of("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Length(5));
        assert!(h.keep_alive);
        let h = head_of("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, Chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Chunked(Chunked::Size));
        // Chunked wins over a content-length sent alongside it.
        let h =
            head_of("HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(h.framing, Framing::Chunked(Chunked::Size));
        let h = head_of("HTTP/1.1 200 OK\r\n\r\n").unwrap().unwrap();
        assert_eq!(h.framing, Framing::Close);
        assert!(
            !h.keep_alive,
            "a body that ends at close ends the connection"
        );
        let h = head_of("HTTP/1.1 204 No Content\r\n\r\n").unwrap().unwrap();
        assert_eq!(h.framing, Framing::Length(0));
        let h = head_of(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\ncontent-length: 0\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert!(!h.keep_alive);
        let h = head_of("HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive, "HTTP/1.0 connections are not reused");
        let h = parse_head(
            &mut BytesMut::from("HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n"),
            &Method::HEAD,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, Framing::Length(0), "a HEAD answer has no body");
    }

    #[test]
    fn interim_responses_are_skipped_and_a_partial_head_waits() {
        let mut buf = BytesMut::from(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok",
        );
        let h = parse_head(&mut buf, &Method::POST).unwrap().unwrap();
        assert_eq!(h.status, StatusCode::CREATED);
        assert_eq!(&buf[..], b"ok", "the body stays in the buffer");
        assert!(head_of("HTTP/1.1 200 OK\r\ncontent-le").unwrap().is_none());
    }

    #[test]
    fn bad_response_heads_are_errors_not_panics() {
        for raw in [
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "SMTP ready\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
        ] {
            assert!(head_of(raw).is_err(), "{raw:?} was accepted");
        }
        let mut many = String::from("HTTP/1.1 200 OK\r\n");
        for i in 0..=MAX_HEADERS {
            many.push_str(&format!("x-{i}: v\r\n"));
        }
        many.push_str("\r\n");
        assert!(head_of(&many).is_err());
        let endless = format!("HTTP/1.1 200 OK\r\nx: {}", "v".repeat(MAX_HEAD));
        assert!(head_of(&endless).is_err(), "an endless head is refused");
        // Same content-length twice, or as a list, is one length.
        let h = head_of("HTTP/1.1 200 OK\r\ncontent-length: 2, 2\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Length(2));
    }

    #[test]
    fn chunked_bodies_decode_the_same_whatever_the_read_sizes() {
        let wire = b"7;ext=1\r\nhello, \r\nA \r\n0123456789\r\n0\r\nx-trailer: t\r\n\r\n";
        for step in 1..=wire.len() {
            let (out, ended) = decode_in_steps(Framing::Chunked(Chunked::Size), wire, step);
            assert_eq!(out, b"hello, 0123456789", "step {step}");
            assert!(ended, "step {step}");
        }
    }

    #[test]
    fn length_bodies_end_at_their_length() {
        let (out, ended) = decode_in_steps(Framing::Length(5), b"hello", 2);
        assert_eq!(out, b"hello");
        assert!(ended);
        let (out, ended) = decode_in_steps(Framing::Length(5), b"hel", 2);
        assert_eq!(out, b"hel");
        assert!(!ended, "a short body has not ended");
    }

    #[test]
    fn bad_chunk_framing_is_an_error() {
        for wire in [
            &b"zz\r\n"[..],
            b"5\r\nhelloXX",
            b"-1\r\n",
            b"1234567890abcdef0\r\n",
        ] {
            let mut buf = BytesMut::from(wire);
            let mut framing = Framing::Chunked(Chunked::Size);
            let mut failed = false;
            for _ in 0..4 {
                match framing.decode(&mut buf) {
                    Err(_) => {
                        failed = true;
                        break;
                    }
                    Ok(Decoded::NeedMore | Decoded::End) => break,
                    Ok(Decoded::Data(_)) => {}
                }
            }
            assert!(failed, "{wire:?} was accepted");
        }
        let mut long = BytesMut::from(&vec![b'1'; MAX_LINE + 10][..]);
        assert!(Framing::Chunked(Chunked::Size).decode(&mut long).is_err());
    }

    #[test]
    fn a_finished_chunk_lets_go_of_the_read_buffer() {
        let mut buf = BytesMut::from(&b"5\r\nhello\r\n"[..]);
        let mut framing = Framing::Chunked(Chunked::Size);
        let data = framing.decode(&mut buf).unwrap();
        assert_eq!(data, Decoded::Data(Bytes::from_static(b"hello")));
        assert_eq!(buf.capacity(), 0, "an idle stream keeps no read buffer");
        assert_eq!(framing, Framing::Chunked(Chunked::Size));
    }
}
