//! One HTTP/1.1 keep-alive connection to a loopback target, and the request we send on it.

use std::io;

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub type Sender = SendRequest<Full<Bytes>>;

/// Where the load goes: `host:port` and the request path.
#[derive(Clone, Debug)]
pub struct Target {
    pub authority: String,
    pub path: String,
}

impl Target {
    /// Accepts only `http://` URLs on the loopback interface: the harness never sends load elsewhere.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url}: only http:// URLs"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
        let loopback = host == "localhost" || host == "[::1]" || host.starts_with("127.");
        if !loopback {
            return Err(format!(
                "{url}: the harness only targets loopback addresses"
            ));
        }
        Ok(Self {
            authority: authority.to_string(),
            path: path.to_string(),
        })
    }

    pub async fn connect(&self) -> io::Result<Sender> {
        let tcp = TcpStream::connect(&self.authority).await?;
        tcp.set_nodelay(true)?;
        let (sender, conn) = http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(io::Error::other)?;
        tokio::spawn(async move {
            // The connection ends when its sender is dropped or the peer closes; both are normal here.
            let _ = conn.await;
        });
        Ok(sender)
    }

    pub fn request(&self, body: &Bytes) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(body.clone()));
        *req.method_mut() = hyper::Method::POST;
        *req.uri_mut() = self.path.parse().unwrap_or_default();
        let h = req.headers_mut();
        if let Ok(v) = self.authority.parse() {
            h.insert(header::HOST, v);
        }
        h.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        h.insert(
            header::AUTHORIZATION,
            header::HeaderValue::from_static("Bearer bench-key"),
        );
        req
    }
}
