//! The client against scripted replicas on loopback: reuse, stale connections, framing, failures.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};

use super::{Client, Error};

/// Reads one request (head and `content-length` body) off `s`; `None` at EOF.
async fn read_request(s: &mut TcpStream, pending: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).to_string();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |n| n.trim().parse::<usize>().unwrap());
            while pending.len() < end + 4 + length {
                let mut chunk = [0u8; 4096];
                let n = s.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                pending.extend_from_slice(&chunk[..n]);
            }
            let body = String::from_utf8_lossy(&pending[end + 4..end + 4 + length]).to_string();
            pending.drain(..end + 4 + length);
            return Some(format!("{head}\r\n\r\n{body}"));
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        pending.extend_from_slice(&chunk[..n]);
    }
}

/// A replica that answers each request on a connection from `script`:
/// the answer for the n-th request on that connection, or `None` to close
/// the connection without answering. Counts the connections it accepted.
async fn replica(
    script: fn(conn: usize, nth: usize) -> Option<&'static str>,
) -> (String, Arc<AtomicUsize>, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let (seen_tx, seen) = mpsc::unbounded_channel();
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let conn = count.fetch_add(1, Ordering::SeqCst);
            let seen_tx = seen_tx.clone();
            tokio::spawn(async move {
                let mut pending = Vec::new();
                for nth in 0.. {
                    let Some(request) = read_request(&mut s, &mut pending).await else {
                        return;
                    };
                    let _ = seen_tx.send(request);
                    match script(conn, nth) {
                        Some(answer) => {
                            if s.write_all(answer.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                        None => return,
                    }
                }
            });
        }
    });
    (base, accepted, seen)
}

fn post(url: &str, body: &'static str) -> Request<Bytes> {
    Request::builder()
        .method(Method::POST)
        .uri(url)
        .header("content-type", "application/json")
        .body(Bytes::from_static(body.as_bytes()))
        .unwrap()
}

async fn text(response: http::Response<super::ResponseBody>) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

const OK_HELLO: &str = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
const CHUNKED: &str =
    "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";

#[tokio::test]
async fn sequential_requests_share_one_connection() {
    let (base, accepted, mut seen) =
        replica(|_, nth| Some(if nth % 2 == 0 { OK_HELLO } else { CHUNKED })).await;
    let client = Client::new(Duration::from_secs(1)).unwrap();
    for i in 0..4 {
        let response = client
            .send(post(&format!("{base}/v1/x"), "{\"a\":1}"))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let expected = if i % 2 == 0 { "hello" } else { "abcde" };
        assert_eq!(text(response).await, expected);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    let first = seen.recv().await.unwrap();
    let host = base.trim_start_matches("http://");
    assert!(
        first.starts_with(&format!("POST /v1/x HTTP/1.1\r\nhost: {host}\r\n")),
        "{first}"
    );
    assert!(
        first.contains("content-length: 7\r\n") && first.ends_with("{\"a\":1}"),
        "{first}"
    );
}

#[tokio::test]
async fn a_pooled_connection_the_replica_closed_is_not_used() {
    // Every connection answers once and then closes, without saying so.
    let (base, accepted, _seen) = replica(|_, nth| (nth == 0).then_some(OK_HELLO)).await;
    let client = Client::new(Duration::from_secs(1)).unwrap();
    for _ in 0..3 {
        let response = client.send(post(&base, "{}")).await.unwrap();
        assert_eq!(text(response).await, "hello");
        // Let the close reach us while the connection is idle.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_request_that_meets_a_closing_pooled_connection_goes_again_on_a_new_one() {
    // The first connection reads the second request and closes without an
    // answer: the race with a replica's keep-alive timeout.
    let (base, accepted, _seen) =
        replica(|conn, nth| (conn > 0 || nth == 0).then_some(OK_HELLO)).await;
    let client = Client::new(Duration::from_secs(1)).unwrap();
    let response = client.send(post(&base, "{}")).await.unwrap();
    assert_eq!(text(response).await, "hello");
    let response = client.send(post(&base, "{}")).await.unwrap();
    assert_eq!(text(response).await, "hello");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_fresh_connection_closed_without_an_answer_is_an_error() {
    let (base, _, _seen) = replica(|_, _| None).await;
    let client = Client::new(Duration::from_secs(1)).unwrap();
    let err = client.send(post(&base, "{}")).await.unwrap_err();
    assert!(matches!(err, Error::Closed), "{err:?}");
    assert!(!err.is_connect(), "the request was sent");
}

#[tokio::test]
async fn connection_close_and_unfinished_bodies_are_not_pooled() {
    let (base, accepted, _seen) = replica(|conn, _| {
        Some(match conn {
            0 => "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
            1 => "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello",
            _ => "HTTP/1.1 200 OK\r\n\r\nto the end",
        })
    })
    .await;
    let client = Client::new(Duration::from_secs(1)).unwrap();
    let response = client.send(post(&base, "{}")).await.unwrap();
    assert_eq!(text(response).await, "ok");
    assert_eq!(
        client.pool.idle_count(),
        0,
        "`connection: close` was pooled"
    );
    // Half a body read, then dropped: the connection cannot be reused.
    let mut response = client.send(post(&base, "{}")).await.unwrap();
    let frame = response.body_mut().frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "hello");
    drop(response);
    assert_eq!(
        client.pool.idle_count(),
        0,
        "a half-read connection was pooled"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

/// A replica for one request: it reads it, writes `answer`, and closes.
async fn answer_once(answer: &'static [u8]) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut pending = Vec::new();
        read_request(&mut s, &mut pending).await.unwrap();
        s.write_all(answer).await.unwrap();
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_body_that_ends_at_close_ends_when_the_replica_closes() {
    let base = answer_once(b"HTTP/1.1 200 OK\r\n\r\nto the end").await;
    let client = Client::new(Duration::from_secs(1)).unwrap();
    let response = client.send(post(&base, "{}")).await.unwrap();
    assert_eq!(text(response).await, "to the end");
    assert_eq!(client.pool.idle_count(), 0);
}

#[tokio::test]
async fn a_cut_body_is_an_error_not_a_short_success() {
    let base =
        answer_once(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n").await;
    let client = Client::new(Duration::from_secs(1)).unwrap();
    let response = client.send(post(&base, "{}")).await.unwrap();
    let err = response.into_body().collect().await.unwrap_err();
    assert!(matches!(err, Error::Closed), "{err:?}");
}

#[tokio::test]
async fn chunks_are_handed_on_as_they_arrive() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (go_tx, mut go) = mpsc::unbounded_channel::<()>();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut pending = Vec::new();
        read_request(&mut s, &mut pending).await.unwrap();
        s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n6\r\nfirst\n\r\n")
            .await
            .unwrap();
        // The second chunk only after the client has seen the first.
        go.recv().await.unwrap();
        s.write_all(b"7\r\nsecond\n\r\n0\r\n\r\n").await.unwrap();
    });
    let client = Client::new(Duration::from_secs(1)).unwrap();
    let mut response = client
        .send(post(&format!("http://{addr}"), "{}"))
        .await
        .unwrap();
    let first = response.body_mut().frame().await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "first\n");
    go_tx.send(()).unwrap();
    assert_eq!(text(response).await, "second\n");
    assert_eq!(
        client.pool.idle_count(),
        1,
        "the finished stream's connection is pooled"
    );
}

#[tokio::test]
async fn an_unreachable_replica_is_a_connect_error() {
    // Bound and dropped: nothing listens there now.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let client = Client::new(Duration::from_secs(1)).unwrap();
    let err = client
        .send(post(&format!("http://{addr}"), "{}"))
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    let err = client
        .send(post("ftp://127.0.0.1/", "{}"))
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
}

#[tokio::test]
async fn a_large_body_arrives_whole() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (got_tx, mut got) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut pending = Vec::new();
        let request = read_request(&mut s, &mut pending).await.unwrap();
        got_tx.send(request.len()).unwrap();
        let body = "y".repeat(300_000);
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(answer.as_bytes()).await.unwrap();
    });
    let client = Client::new(Duration::from_secs(1)).unwrap();
    let big = Bytes::from(vec![b'x'; 1 << 20]);
    let request = Request::post(format!("http://{addr}/")).body(big).unwrap();
    let response = client.send(request).await.unwrap();
    assert_eq!(response.body().size_hint().exact(), Some(300_000));
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), 300_000);
    assert!(got.recv().await.unwrap() > 1 << 20);
}

#[tokio::test]
async fn https_replicas_are_reached_over_tls_and_their_connections_reused() {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(data.join("test-cert.pem"))
            .unwrap()
            .map(Result::unwrap)
            .collect();
    let key = PrivateKeyDer::from_pem_file(data.join("test-key.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certs[0].clone()).unwrap();
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            let mut tls = acceptor.accept(tcp).await.unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                // One request per read is enough for these small ones.
                while let Ok(n) = tls.read(&mut buf).await {
                    if n == 0 || tls.write_all(OK_HELLO.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let client = Client::with_roots(roots).unwrap();
    for _ in 0..2 {
        let response = client
            .send(post(&format!("https://localhost:{port}/v1/x"), "{}"))
            .await
            .unwrap();
        assert_eq!(text(response).await, "hello");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    // A client with only the public roots refuses this certificate.
    let public = Client::new(Duration::from_secs(1)).unwrap();
    let err = public
        .send(post(&format!("https://localhost:{port}/v1/x"), "{}"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Tls(_)), "{err:?}");
    assert!(err.is_connect());
}

#[tokio::test]
async fn a_pooled_connection_that_said_continue_and_closed_is_not_retried() {
    // The replica took the second request (it answered `100 Continue`), so
    // sending it again elsewhere could run it twice: it is an error instead.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut pending = Vec::new();
                read_request(&mut s, &mut pending).await.unwrap();
                s.write_all(OK_HELLO.as_bytes()).await.unwrap();
                read_request(&mut s, &mut pending).await.unwrap();
                s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.unwrap();
            });
        }
    });
    let client = Client::new(Duration::from_secs(1)).unwrap();
    let base = format!("http://{addr}");
    let response = client.send(post(&base, "{}")).await.unwrap();
    assert_eq!(text(response).await, "hello");
    let err = client.send(post(&base, "{}")).await.unwrap_err();
    assert!(matches!(err, Error::Closed), "{err:?}");
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "the request went again");
}
