//! HTTP/3 requests for WHIP/WHEP signalling and tests: one QUIC client endpoint, one connection
//! per authority, reused across requests.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use hyper::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
use quinn::crypto::rustls::QuicClientConfig;
use rustls::pki_types::CertificateDer;
use tokio::sync::Mutex;
use tokio::task::JoinSet;

use super::http::{Response, REQUEST_TIMEOUT};
use super::ClientError;
use crate::tls::ALPN_H3;

/// Idle connections are dropped after this; a dead server fails a handshake after it too.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Request bodies go out in DATA frames of at most this size.
const CHUNK: usize = 16 * 1024;
/// How long `close` waits for connections to say goodbye.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

type SendRequest = ::h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

/// An HTTP/3 client trusting exactly the given roots.
///
/// The QUIC endpoint is created on first use and belongs to the tokio runtime of that call.
pub struct H3Client {
    config: quinn::ClientConfig,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    endpoint: Option<quinn::Endpoint>,
    /// By `host:port` as written in the URL.
    connections: HashMap<String, Connection>,
}

struct Connection {
    quic: quinn::Connection,
    send: SendRequest,
    driver: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for H3Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H3Client").finish_non_exhaustive()
    }
}

impl H3Client {
    /// Trusts exactly these root certificates (e.g. the gateway's self-signed one).
    pub fn new(roots: &[CertificateDer<'static>]) -> Result<H3Client, ClientError> {
        let mut store = rustls::RootCertStore::empty();
        for cert in roots {
            store
                .add(cert.clone())
                .map_err(|e| ClientError::Tls(format!("unusable root certificate: {e}")))?;
        }
        let mut tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| ClientError::Tls(e.to_string()))?
            .with_root_certificates(store)
            .with_no_client_auth();
        // Conforming servers abort a handshake without ALPN h3 (RFC 9114 §3.1).
        tls.alpn_protocols = vec![ALPN_H3.to_vec()];
        let crypto =
            QuicClientConfig::try_from(tls).map_err(|e| ClientError::Tls(e.to_string()))?;
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_idle_timeout(Some(
                quinn::IdleTimeout::try_from(IDLE_TIMEOUT)
                    .map_err(|e| ClientError::Tls(e.to_string()))?,
            ))
            .datagram_receive_buffer_size(None);
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(Arc::new(transport));
        Ok(H3Client {
            config,
            state: Mutex::new(State::default()),
        })
    }

    /// Sends one request to an `https://host:port/path` URL and reads the whole response.
    pub async fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Response, ClientError> {
        self.send(method, url, headers, body, None).await
    }

    /// [`request`](Self::request) with optional request trailers.
    pub(crate) async fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
        trailers: Option<HeaderMap>,
    ) -> Result<Response, ClientError> {
        let target = Target::parse(method, url, headers)?;
        tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.exchange(&target, body.into(), trailers),
        )
        .await
        .map_err(|_| ClientError::Timeout("HTTP/3 request"))?
    }

    /// Closes every connection with H3_NO_ERROR and waits (briefly) until the peers know.
    pub async fn close(&self) {
        let (endpoint, connections) = {
            let mut state = self.state.lock().await;
            (
                state.endpoint.clone(),
                std::mem::take(&mut state.connections),
            )
        };
        for (_, conn) in connections {
            // Dropping the last `SendRequest` closes the connection with H3_NO_ERROR.
            drop(conn.send);
            let _ = tokio::time::timeout(CLOSE_WAIT, conn.driver).await;
        }
        if let Some(endpoint) = endpoint {
            let _ = tokio::time::timeout(CLOSE_WAIT, endpoint.wait_idle()).await;
        }
    }

    async fn exchange(
        &self,
        target: &Target,
        body: Bytes,
        trailers: Option<HeaderMap>,
    ) -> Result<Response, ClientError> {
        let mut send = self.sender(target).await?;
        let stream = match send.send_request(target.request()?).await {
            Ok(stream) => stream,
            // The server sent GOAWAY: this request was not sent, so a new connection may take it.
            Err(::h3::error::StreamError::RemoteClosing { .. }) => {
                self.forget(&target.authority).await;
                send = self.sender(target).await?;
                send.send_request(target.request()?)
                    .await
                    .map_err(transport)?
            }
            Err(e) => {
                self.forget(&target.authority).await;
                return Err(transport(e));
            }
        };
        let (mut tx, mut rx) = stream.split();

        let upload = async {
            let mut rest = body;
            while !rest.is_empty() {
                let chunk = rest.split_to(rest.len().min(CHUNK));
                tx.send_data(chunk).await?;
            }
            if let Some(trailers) = trailers {
                tx.send_trailers(trailers).await?;
            }
            tx.finish().await
        };
        let download = async {
            let head = rx.recv_response().await?;
            let mut body = Vec::new();
            while let Some(mut chunk) = rx.recv_data().await? {
                while chunk.has_remaining() {
                    let part = chunk.chunk();
                    body.extend_from_slice(part);
                    let n = part.len();
                    chunk.advance(n);
                }
            }
            let trailers = rx.recv_trailers().await?;
            Ok::<_, ::h3::error::StreamError>((head, body, trailers))
        };

        // Both directions at once: a server may answer (e.g. 413) before it has read the body,
        // and then stop the upload; the response is what counts.
        tokio::pin!(upload, download);
        let mut upload_result = None;
        let downloaded = loop {
            tokio::select! {
                r = &mut upload, if upload_result.is_none() => upload_result = Some(r),
                r = &mut download => break r,
            }
        };
        match downloaded {
            Ok((head, body, trailers)) => {
                let (parts, ()) = head.into_parts();
                Ok(Response {
                    status: parts.status.as_u16(),
                    headers: parts.headers,
                    version: parts.version,
                    body,
                    trailers,
                })
            }
            Err(e) => match upload_result {
                Some(Err(up)) => Err(ClientError::Transport(format!(
                    "{e} (sending the request: {up})"
                ))),
                _ => Err(transport(e)),
            },
        }
    }

    /// A request handle on the (possibly new) connection to `target`'s authority. The lock is
    /// held while connecting, so parallel first requests share one connection.
    async fn sender(&self, target: &Target) -> Result<SendRequest, ClientError> {
        let mut state = self.state.lock().await;
        if let Some(conn) = state.connections.get(&target.authority) {
            if conn.quic.close_reason().is_none() && !conn.driver.is_finished() {
                return Ok(conn.send.clone());
            }
        }
        state.connections.remove(&target.authority);
        let endpoint = match &state.endpoint {
            Some(endpoint) => endpoint.clone(),
            None => {
                let endpoint = client_endpoint()?;
                state.endpoint = Some(endpoint.clone());
                endpoint
            }
        };
        let conn = self.connect(&endpoint, target).await?;
        let send = conn.send.clone();
        state.connections.insert(target.authority.clone(), conn);
        Ok(send)
    }

    async fn forget(&self, authority: &str) {
        self.state.lock().await.connections.remove(authority);
    }

    /// Handshakes with every address of the host at once and keeps the first that succeeds:
    /// `localhost` may resolve to `::1` and `127.0.0.1`, and a server may listen on only one.
    async fn connect(
        &self,
        endpoint: &quinn::Endpoint,
        target: &Target,
    ) -> Result<Connection, ClientError> {
        let addrs = resolve(&target.host, target.port).await?;
        let mut attempts = JoinSet::new();
        let mut last_error = None;
        for addr in addrs {
            match endpoint.connect_with(self.config.clone(), addr, &target.host) {
                Ok(connecting) => {
                    attempts.spawn(connecting);
                }
                Err(e) => last_error = Some(format!("{addr}: {e}")),
            }
        }
        let quic = loop {
            match attempts.join_next().await {
                Some(Ok(Ok(conn))) => break conn,
                Some(Ok(Err(e))) => last_error = Some(e.to_string()),
                Some(Err(e)) => last_error = Some(e.to_string()),
                None => {
                    return Err(ClientError::Transport(format!(
                        "QUIC connection to {} failed: {}",
                        target.authority,
                        last_error.unwrap_or_else(|| "no address".into())
                    )))
                }
            }
        };
        // Losing handshakes are dropped here, which closes them.
        attempts.abort_all();

        let (mut driver, send) = ::h3::client::new(h3_quinn::Connection::new(quic.clone()))
            .await
            .map_err(|e| ClientError::Transport(format!("HTTP/3 setup failed: {e}")))?;
        // The driver processes control streams (SETTINGS, GOAWAY); it must be polled.
        let driver = tokio::spawn(async move {
            let e = driver.wait_idle().await;
            if crate::http3::connection_error_is_benign(&e) {
                tracing::debug!("HTTP/3 client connection closed: {e}");
            } else {
                tracing::warn!("HTTP/3 client connection failed: {e}");
            }
        });
        Ok(Connection { quic, send, driver })
    }
}

/// A dual-stack endpoint where possible, else IPv4 only.
fn client_endpoint() -> Result<quinn::Endpoint, ClientError> {
    quinn::Endpoint::client(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0))
        .or_else(|_| quinn::Endpoint::client(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)))
        .map_err(ClientError::Io)
}

async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, ClientError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| ClientError::Transport(format!("cannot resolve {host}: {e}")))?
        .collect();
    addrs.dedup();
    Ok(addrs)
}

fn transport(e: ::h3::error::StreamError) -> ClientError {
    ClientError::Transport(format!("HTTP/3: {e}"))
}

/// A checked request: method, absolute URI, headers, and where to connect.
struct Target {
    method: Method,
    uri: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    host: String,
    port: u16,
    authority: String,
}

impl Target {
    fn parse(method: &str, url: &str, headers: &[(&str, &str)]) -> Result<Target, ClientError> {
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|e| ClientError::Url(format!("bad method {method:?}: {e}")))?;
        let uri: Uri = url
            .parse()
            .map_err(|e| ClientError::Url(format!("{url}: {e}")))?;
        if uri.scheme_str() != Some("https") {
            return Err(ClientError::Url(format!(
                "{url}: HTTP/3 needs an https:// URL"
            )));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| ClientError::Url(format!("{url}: no host")))?
            .as_str()
            .to_string();
        let host = uri
            .host()
            .ok_or_else(|| ClientError::Url(format!("{url}: no host")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(443);
        let headers = headers
            .iter()
            .map(|(name, value)| {
                let name = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|e| ClientError::Url(format!("bad header name {name:?}: {e}")))?;
                let value = HeaderValue::from_str(value)
                    .map_err(|e| ClientError::Url(format!("bad header value {value:?}: {e}")))?;
                Ok((name, value))
            })
            .collect::<Result<_, ClientError>>()?;
        Ok(Target {
            method,
            uri,
            headers,
            host,
            port,
            authority,
        })
    }

    /// The request head (`http::Request` is not `Clone`, and a retry needs a second one).
    fn request(&self) -> Result<Request<()>, ClientError> {
        let mut req = Request::builder()
            .method(self.method.clone())
            .uri(self.uri.clone());
        for (name, value) in &self.headers {
            req = req.header(name, value);
        }
        req.body(()).map_err(|e| ClientError::Url(e.to_string()))
    }
}
