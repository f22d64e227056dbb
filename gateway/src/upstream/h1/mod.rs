//! The upstream HTTP/1.1 client: pooled connections driven inside the request's own task.
//!
//! hyper's pooled client runs each upstream connection as a task of its own
//! and hands every response chunk to the request's task over a channel: two
//! task wake-ups per SSE chunk, and per connection a dispatch channel and
//! hyper's read and write buffers. Here the response body owns its
//! connection and reads the socket when the server side polls it, so a chunk
//! goes from one socket to the other in one poll of one task. Idle
//! connections wait in the pool without a task; each is checked for a close
//! from the replica before it is reused.

mod body;
mod codec;
mod conn;
mod pool;
#[cfg(test)]
mod tests;

use std::{io, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Method, Request, Response, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use body::ResponseBody;
use codec::Wire;
use conn::{Conn, Connector};
use pool::{Origin, Pool};

/// How long an unused connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per origin; a burst's extra connections are closed.
const MAX_IDLE_PER_ORIGIN: usize = 1024;
/// Pooled connections tried before a new one when each turns out closed.
const MAX_STALE: usize = 2;

/// Why an upstream exchange failed. Messages name no header or body content.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bad upstream url: {0}")]
    Url(&'static str),
    #[error("connect: {0}")]
    Connect(io::Error),
    #[error("tls: {0}")]
    Tls(io::Error),
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("the upstream closed the connection before the response ended")]
    Closed,
    #[error("bad upstream response: {0}")]
    Protocol(&'static str),
}

impl Error {
    /// The replica was never reached: nothing was sent.
    pub fn is_connect(&self) -> bool {
        matches!(self, Self::Url(_) | Self::Connect(_) | Self::Tls(_))
    }
}

/// A cheap handle to one connection pool; clones share it.
#[derive(Clone, Debug)]
pub struct Client {
    pool: Arc<Pool>,
    connector: Arc<Connector>,
}

impl Client {
    pub fn new(connect_timeout: Duration) -> Result<Self, rustls::Error> {
        let pool = Arc::new(Pool::new(IDLE_TIMEOUT, MAX_IDLE_PER_ORIGIN));
        pool::spawn_sweeper(&pool);
        Ok(Self {
            pool,
            connector: Arc::new(Connector::new(connect_timeout)?),
        })
    }

    #[cfg(test)]
    fn with_roots(roots: rustls::RootCertStore) -> Result<Self, rustls::Error> {
        Ok(Self {
            pool: Arc::new(Pool::new(IDLE_TIMEOUT, MAX_IDLE_PER_ORIGIN)),
            connector: Arc::new(Connector::with_roots(Duration::from_secs(1), roots)?),
        })
    }

    /// Sends `request` (an absolute `http` or `https` URI) and returns once
    /// the response head is in. The body streams from the connection as it
    /// is polled; the connection goes back to the pool when the body ends.
    pub async fn send(&self, request: Request<Bytes>) -> Result<Response<ResponseBody>, Error> {
        let (parts, body) = request.into_parts();
        let uri = &parts.uri;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(Error::Url("scheme must be http or https")),
        };
        let authority = uri.authority().ok_or(Error::Url("no host"))?.as_str();
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let wire = codec::encode_request(&parts.method, path, authority, &parts.headers, body);

        // A pooled connection the replica closed just as we wrote is not the
        // replica's failure: the request goes again, at worst on a new connection.
        for _ in 0..MAX_STALE {
            let Some(conn) = self.pool.checkout(tls, authority) else {
                break;
            };
            match exchange(conn, &wire, &parts.method).await {
                Ok(answer) => return Ok(self.respond(answer)),
                Err(Exchange::Stale) => {}
                Err(Exchange::Failed(e)) => return Err(e),
            }
        }
        let origin = Arc::new(Origin::new(tls, authority));
        let conn = self
            .connector
            .connect(origin, uri.host().unwrap_or(""))
            .await?;
        match exchange(conn, &wire, &parts.method).await {
            Ok(answer) => Ok(self.respond(answer)),
            Err(Exchange::Stale) => Err(Error::Closed),
            Err(Exchange::Failed(e)) => Err(e),
        }
    }

    fn respond(&self, (head, conn): (codec::Head, Box<Conn>)) -> Response<ResponseBody> {
        let body = ResponseBody::new(conn, head.framing, head.keep_alive, self.pool.clone());
        let mut response = Response::new(body);
        *response.status_mut() = head.status;
        *response.version_mut() = Version::HTTP_11;
        *response.headers_mut() = head.headers;
        response
    }
}

/// How an exchange on one connection failed.
enum Exchange {
    /// A reused connection was found closed before any answer: try another.
    Stale,
    Failed(Error),
}

/// Writes the request and reads the response head.
async fn exchange(
    mut conn: Box<Conn>,
    wire: &Wire,
    method: &Method,
) -> Result<(codec::Head, Box<Conn>), Exchange> {
    // Stale only if nothing at all came back: an interim `100 Continue`
    // already parsed away means the replica took the request.
    let mut received = false;
    let reused = conn.reused;
    let stale_or = |e: Error, received: bool| {
        if reused && !received {
            Exchange::Stale
        } else {
            Exchange::Failed(e)
        }
    };
    if let Err(e) = write_request(&mut conn, wire).await {
        return Err(stale_or(Error::Io(e), received));
    }
    loop {
        match codec::parse_head(&mut conn.buf, method) {
            Ok(Some(head)) => return Ok((head, conn)),
            Ok(None) => {}
            Err(e) => return Err(Exchange::Failed(e)),
        }
        conn.buf.reserve(READ_HEAD);
        match conn.io.read_buf(&mut conn.buf).await {
            Ok(0) => return Err(stale_or(Error::Closed, received)),
            Ok(_) => received = true,
            Err(e) => return Err(stale_or(Error::Io(e), received)),
        }
    }
}

/// Read size while waiting for a response head.
const READ_HEAD: usize = 4096;

async fn write_request(conn: &mut Conn, wire: &Wire) -> io::Result<()> {
    conn.io.write_all(&wire.head).await?;
    if let Some(body) = &wire.body {
        conn.io.write_all(body).await?;
    }
    conn.io.flush().await
}
