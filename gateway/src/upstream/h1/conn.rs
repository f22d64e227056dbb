//! One upstream connection, plain or TLS, and how a new one is opened.

use std::{
    io,
    mem::MaybeUninit,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, Waker},
    time::Duration,
};

use bytes::BytesMut;
use rustls_pki_types::ServerName;
use socket2::{SockRef, TcpKeepalive};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::{TlsConnector, client::TlsStream};

use super::{Error, pool::Origin};

/// Read size for a response body; what arrives is copied out of the stack
/// into a buffer of its own size, so an idle stream holds no read buffer.
const READ_BODY: usize = 8192;

/// A connection and the bytes read from it but not yet consumed.
#[derive(Debug)]
pub(super) struct Conn {
    pub io: Io,
    pub buf: BytesMut,
    pub origin: Arc<Origin>,
    /// Whether it carried a request before this one.
    pub reused: bool,
}

impl Conn {
    /// Reads what the socket has into `buf`; `Ok(0)` is the end of the stream.
    pub fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut raw = [MaybeUninit::<u8>::uninit(); READ_BODY];
        let mut read = ReadBuf::uninit(&mut raw);
        match Pin::new(&mut self.io).poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) => {
                let filled = read.filled();
                self.buf.extend_from_slice(filled);
                Poll::Ready(Ok(filled.len()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Whether an idle connection still looks usable: not closed by the
    /// replica and with nothing unasked-for to read. Never waits.
    pub fn is_reusable(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        let mut raw = [MaybeUninit::<u8>::uninit(); 1];
        let mut read = ReadBuf::uninit(&mut raw);
        matches!(
            Pin::new(&mut self.io).poll_read(&mut cx, &mut read),
            Poll::Pending
        )
    }
}

/// The transport under a connection.
#[derive(Debug)]
pub(super) enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Opens connections: DNS, TCP with the connect timeout, then TLS for `https`.
pub(super) struct Connector {
    tls: TlsConnector,
    timeout: Duration,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Connector {
    pub fn new(timeout: Duration) -> Result<Self, rustls::Error> {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        Self::with_roots(timeout, roots)
    }

    /// Trusting `roots` instead of the public ones (tests with their own CA).
    pub fn with_roots(
        timeout: Duration,
        roots: rustls::RootCertStore,
    ) -> Result<Self, rustls::Error> {
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            tls: TlsConnector::from(Arc::new(config)),
            timeout,
        })
    }

    /// A new connection to `origin`; `host` is the URI's host (brackets kept
    /// for IPv6). The timeout covers resolution, TCP and the TLS handshake.
    pub async fn connect(&self, origin: Arc<Origin>, host: &str) -> Result<Box<Conn>, Error> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = origin.port();
        let open = async {
            let tcp = tcp_connect(host, port).await.map_err(Error::Connect)?;
            let io = if origin.tls {
                let name = ServerName::try_from(host.to_owned())
                    .map_err(|_| Error::Url("host is not a valid TLS server name"))?;
                let tls = self.tls.connect(name, tcp).await.map_err(Error::Tls)?;
                Io::Tls(Box::new(tls))
            } else {
                Io::Plain(tcp)
            };
            Ok::<_, Error>(io)
        };
        let io = tokio::time::timeout(self.timeout, open)
            .await
            .map_err(|_| Error::Connect(io::Error::new(io::ErrorKind::TimedOut, "timed out")))??;
        // Boxed once here and moved as a pointer between pool and bodies.
        Ok(Box::new(Conn {
            io,
            buf: BytesMut::new(),
            origin,
            reused: false,
        }))
    }
}

/// TCP to the first address that answers, Nagle off, keepalive probes on.
async fn tcp_connect(host: &str, port: u16) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        match TcpStream::connect(addr).await {
            Ok(tcp) => {
                tcp.set_nodelay(true)?;
                let keepalive = TcpKeepalive::new().with_time(Duration::from_secs(60));
                SockRef::from(&tcp).set_tcp_keepalive(&keepalive)?;
                return Ok(tcp);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address for host")))
}
