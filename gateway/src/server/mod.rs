//! Listeners: accept loops for the API and admin ports, HTTP/1.1 and h2 (h2c and TLS), graceful drain.

pub mod body;
mod ctx;
pub mod run;
pub mod stack;
pub mod tls;

use std::{convert::Infallible, future::Future, net::SocketAddr, sync::Arc, time::Duration};

use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};
use tokio_rustls::TlsAcceptor;

pub use body::Body;
pub use ctx::RequestCtx;

/// A TLS handshake that takes longer than this is abandoned.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How one listener serves its connections.
#[derive(Clone)]
pub struct ListenerOptions {
    pub header_read_timeout: Duration,
    pub drain: Duration,
    pub tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for ListenerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerOptions")
            .field("header_read_timeout", &self.header_read_timeout)
            .field("drain", &self.drain)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Serves `listener` until `shutdown` flips, then stops accepting and lets
/// open connections finish their requests and streams for up to `drain`.
pub fn serve<H, F>(
    listener: TcpListener,
    opts: ListenerOptions,
    mut shutdown: watch::Receiver<bool>,
    handler: H,
) -> JoinHandle<()>
where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    tokio::spawn(async move {
        let builders = Arc::new(Builders::new(opts.header_read_timeout));
        let graceful = GracefulShutdown::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // Usually fd exhaustion; back off rather than spin.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let watcher = graceful.watcher();
                    let builders = Arc::clone(&builders);
                    let handler = handler.clone();
                    let service = service_fn(move |req| {
                        let handler = handler.clone();
                        async move { Ok::<_, Infallible>(handler(req, peer).await) }
                    });
                    // Two spawns, not one task with a `match`: a task is as large
                    // as its largest state, and a plain connection must not carry
                    // room for a TLS session and handshake for as long as it is open.
                    match opts.tls.clone() {
                        None => {
                            let wait = opts.header_read_timeout;
                            tokio::spawn(async move {
                                let Some(version) = sniff(&stream, wait).await else {
                                    return;
                                };
                                serve_io(builders.for_version(version), watcher, stream, service, peer).await;
                            });
                        }
                        Some(acceptor) => {
                            tokio::spawn(async move {
                                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                    Ok(Ok(tls_stream)) => {
                                        let builder = builders.for_alpn(tls_stream.get_ref().1.alpn_protocol());
                                        serve_io(builder, watcher, tls_stream, service, peer).await;
                                    }
                                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                                }
                            });
                        }
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
        drop(listener);
        tokio::select! {
            () = graceful.shutdown() => tracing::info!("all connections drained"),
            () = tokio::time::sleep(opts.drain) => tracing::warn!("drain timeout passed; closing remaining connections"),
        }
    })
}

/// The HTTP/2 connection preface (RFC 9113, section 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Which HTTP a connection speaks, known before hyper reads a byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Version {
    H1,
    H2,
}

/// One connection builder per way of choosing the protocol.
///
/// Connections whose protocol is known skip hyper-util's version detection:
/// it reads the first bytes into a buffer of its own and hands them back, and
/// hyper's read buffer then grows to 16 KiB on the second read, for as long
/// as the connection lives.
struct Builders {
    h1: auto::Builder<TokioExecutor>,
    h2: auto::Builder<TokioExecutor>,
    /// A TLS client that named no protocol: detect it.
    detect: auto::Builder<TokioExecutor>,
}

impl Builders {
    fn new(header_read_timeout: Duration) -> Self {
        let mut detect = auto::Builder::new(TokioExecutor::new());
        detect
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout);
        detect.http2().timer(TokioTimer::new());
        Self {
            h1: detect.clone().http1_only(),
            h2: detect.clone().http2_only(),
            detect,
        }
    }

    fn for_version(&self, version: Version) -> &auto::Builder<TokioExecutor> {
        match version {
            Version::H1 => &self.h1,
            Version::H2 => &self.h2,
        }
    }

    fn for_alpn(&self, alpn: Option<&[u8]>) -> &auto::Builder<TokioExecutor> {
        match alpn {
            Some(b"h2") => &self.h2,
            Some(_) => &self.h1,
            None => &self.detect,
        }
    }
}

/// Tells HTTP/2 with prior knowledge (h2c) from HTTP/1 by peeking at the
/// first bytes, leaving them in the socket for hyper. `None`: the client
/// closed, or sent nothing (or only part of the preface) within `wait`.
///
/// `wait` is the header-read timeout, and hyper's own header timer starts
/// after this returns, so a client has at most twice that to send its head
/// (hyper-util's detection, used before, waited for the first bytes forever).
async fn sniff(stream: &TcpStream, wait: Duration) -> Option<Version> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = [0u8; H2_PREFACE.len()];
    loop {
        let n = tokio::time::timeout_at(deadline, stream.peek(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        if buf[..n] != H2_PREFACE[..n] {
            return Some(Version::H1);
        }
        if n == H2_PREFACE.len() {
            return Some(Version::H2);
        }
        // Part of the preface: peeking again would return the same bytes at
        // once, so wait a little for the rest instead of spinning.
        if tokio::time::Instant::now() + SNIFF_RETRY >= deadline {
            return None;
        }
        tokio::time::sleep(SNIFF_RETRY).await;
    }
}

/// How long [`sniff`] waits between looks at a partial preface.
const SNIFF_RETRY: Duration = Duration::from_millis(5);

async fn serve_io<I, S>(
    builder: &auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
    io: I,
    service: S,
    peer: SocketAddr,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .into_owned();
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Binds a listener, naming the address in the error.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

/// Resolves on SIGTERM or ctrl-c.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Shared by the API handler closure.
pub type SharedState = Arc<stack::Shared>;

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    #[tokio::test]
    async fn sniff_tells_http1_from_the_h2_preface_and_leaves_the_bytes_in_the_socket() {
        let (mut client, server) = pair().await;
        client
            .write_all(b"POST /v1/chat/completions HTTP/1.1\r\n")
            .await
            .unwrap();
        assert_eq!(
            sniff(&server, Duration::from_secs(5)).await,
            Some(Version::H1)
        );
        let mut start = [0u8; 4];
        server.peek(&mut start).await.unwrap();
        assert_eq!(&start, b"POST");

        // The preface in two writes: the first part alone decides nothing.
        let (mut client, server) = pair().await;
        client.write_all(&H2_PREFACE[..9]).await.unwrap();
        let sniffing = tokio::spawn(async move { sniff(&server, Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!sniffing.is_finished());
        client.write_all(&H2_PREFACE[9..]).await.unwrap();
        assert_eq!(sniffing.await.unwrap(), Some(Version::H2));
    }

    #[tokio::test]
    async fn sniff_gives_up_on_a_closed_silent_or_stuck_client() {
        let (client, server) = pair().await;
        drop(client);
        assert_eq!(sniff(&server, Duration::from_secs(5)).await, None);

        let (_client, server) = pair().await;
        assert_eq!(sniff(&server, Duration::from_millis(100)).await, None);

        let (mut client, server) = pair().await;
        client.write_all(b"PRI * ").await.unwrap();
        assert_eq!(sniff(&server, Duration::from_millis(100)).await, None);
    }
}
