//! HTTP/3 for the signalling API: a QUIC endpoint (quinn) and a bridge that serves every h3
//! request through a tower `Service`, so the same axum `Router` answers over TCP and over QUIC.
//!
//! Request bodies stay streams (back-pressure from the QUIC receive window), responses are sent
//! frame by frame. Shutdown is graceful: GOAWAY, in-flight requests finish within a deadline,
//! then CONNECTION_CLOSE.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Method, Request, Response, StatusCode};
use bytes::{Buf, Bytes};
use h3::error::{Code, ConnectionError, StreamError};
use h3::quic::ConnectionErrorIncoming;
use h3::server::{RequestResolver, RequestStream};
use http_body::{Body as HttpBody, Frame};
use http_body_util::BodyExt;
use quinn::crypto::rustls::QuicServerConfig;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::{Service, ServiceExt};

use crate::tls::{Identity, TlsError, ALPN_H3};

/// Largest request header section accepted (QPACK-decoded size); larger ones get 431.
const MAX_FIELD_SECTION: u64 = 64 * 1024;

/// Headers that are meaningful only on one HTTP/1.1 connection; forbidden in HTTP/3
/// (RFC 9114 §4.2), and a conforming client treats a response carrying one as malformed.
const CONNECTION_HEADERS: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// How long requests cancelled at the drain deadline get to reset their streams.
const CANCEL_WAIT: Duration = Duration::from_millis(100);

/// H3_NO_ERROR (RFC 9114 §8.1) as a QUIC application close code.
const H3_NO_ERROR: quinn::VarInt = quinn::VarInt::from_u32(0x100);

/// Longest wait after the last response of a closing connection, so that its data is
/// acknowledged before CONNECTION_CLOSE discards whatever is still unsent.
const LINGER_MAX: Duration = Duration::from_millis(500);

/// Limits of the HTTP/3 listener.
#[derive(Clone, Debug)]
pub struct H3Options {
    /// Parallel requests per connection (QUIC bidirectional stream limit).
    pub max_concurrent_streams: u32,
    /// A connection without traffic for this long is dropped (effective: the smaller of both
    /// peers' values); this is how a vanished client is noticed.
    pub idle_timeout: Duration,
    /// Largest request body the handlers accept; sizes the per-request receive window so a
    /// client cannot make the server buffer much more than that before a handler reads.
    pub max_body_bytes: usize,
}

/// Why the HTTP/3 endpoint could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum H3Error {
    #[error("invalid HTTP/3 option: {0}")]
    Option(String),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("TLS configuration unusable for QUIC: {0}")]
    Quic(String),
    #[error("cannot bind UDP {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Binds a QUIC endpoint on `addr` (`[::]:port` in production: browsers try `::1` first for
/// `localhost`) with ALPN `h3`, no 0-RTT (WHIP/WHEP POSTs are not idempotent and 0-RTT data can
/// be replayed), no datagrams, and the limits of `opts`.
///
/// Must run inside a tokio runtime: the endpoint's driver is spawned on it.
pub fn endpoint(
    addr: SocketAddr,
    identity: &Identity,
    opts: &H3Options,
) -> Result<quinn::Endpoint, H3Error> {
    if opts.max_concurrent_streams == 0 {
        return Err(H3Error::Option(
            "max_concurrent_streams must be at least 1".into(),
        ));
    }
    if opts.idle_timeout.is_zero() {
        return Err(H3Error::Option(
            "idle_timeout must be positive; without it a vanished client is never noticed".into(),
        ));
    }
    let idle = quinn::IdleTimeout::try_from(opts.idle_timeout)
        .map_err(|_| H3Error::Option(format!("idle_timeout {:?} too large", opts.idle_timeout)))?;

    let mut tls = identity.server_config(&[ALPN_H3])?;
    // Only 0 or u32::MAX are valid for QUIC; u32::MAX would accept replayable 0-RTT requests.
    tls.max_early_data_size = 0;
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| H3Error::Quic(e.to_string()))?;

    let mut transport = quinn::TransportConfig::default();
    transport
        .max_idle_timeout(Some(idle))
        .max_concurrent_bidi_streams(opts.max_concurrent_streams.into())
        .stream_receive_window(receive_window(opts.max_body_bytes))
        .datagram_receive_buffer_size(None);
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport));

    quinn::Endpoint::server(server, addr).map_err(|source| H3Error::Bind { addr, source })
}

/// Per-stream receive window: the body limit plus room for the header section, at least 64 KiB
/// so small limits do not throttle, at most quinn's default.
fn receive_window(max_body_bytes: usize) -> quinn::VarInt {
    const MIN: u64 = 64 * 1024;
    const MAX: u64 = 1_250_000;
    let wanted = (max_body_bytes as u64).saturating_add(MAX_FIELD_SECTION);
    quinn::VarInt::from_u32(wanted.clamp(MIN, MAX) as u32)
}

/// Serves every connection of `endpoint` with `service` until `shutdown` turns true (or its
/// sender is dropped). Then every connection gets a GOAWAY, in-flight requests get up to `drain`
/// to finish (later ones are reset with H3_REQUEST_CANCELLED), new connections are refused, and
/// the endpoint is closed once idle: at most about `drain` + 0.6 s.
pub async fn serve<S, B>(
    endpoint: quinn::Endpoint,
    service: S,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) where
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut connections = JoinSet::new();
    let closed_elsewhere = loop {
        tokio::select! {
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => {
                    connections.spawn(serve_connection(
                        incoming,
                        service.clone(),
                        shutdown.clone(),
                        drain,
                    ));
                }
                None => break true,
            },
            Some(joined) = connections.join_next(), if !connections.is_empty() => {
                report_panic(joined, "HTTP/3 connection");
            }
            _ = shutdown_signal(&mut shutdown) => break false,
        }
    };

    if !closed_elsewhere {
        tracing::debug!(
            connections = connections.len(),
            "HTTP/3 shutdown: draining connections"
        );
        // Each connection sees the same signal and drains itself by `drain`; the margin is for
        // cancelling what is left and letting the resets arrive.
        let deadline = Instant::now() + drain + CANCEL_WAIT + LINGER_MAX;
        loop {
            tokio::select! {
                incoming = endpoint.accept() => match incoming {
                    Some(incoming) => incoming.refuse(),
                    None => break,
                },
                joined = connections.join_next() => match joined {
                    Some(joined) => report_panic(joined, "HTTP/3 connection"),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        endpoint.close(H3_NO_ERROR, b"server shutting down");
    }
    // Closing the connections (dropping their h3 state sends CONNECTION_CLOSE).
    connections.shutdown().await;
    endpoint.wait_idle().await;
}

/// Resolves once `shutdown` is true or can no longer change.
async fn shutdown_signal(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

fn report_panic(joined: Result<(), tokio::task::JoinError>, what: &str) {
    if let Err(e) = joined {
        if e.is_panic() {
            tracing::warn!("{what} task panicked: {e}");
        }
    }
}

/// One connection: handshake, h3 setup, then requests until the peer leaves or shutdown.
async fn serve_connection<S, B>(
    incoming: quinn::Incoming,
    service: S,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) where
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let from = incoming.remote_address();
    let connecting = match incoming.accept() {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(%from, "QUIC connection not accepted: {e}");
            return;
        }
    };
    let conn = tokio::select! {
        conn = connecting => match conn {
            Ok(conn) => conn,
            Err(e) => {
                // Peer-caused and unbounded in number (scanners, untrusted certificates).
                tracing::debug!(%from, "QUIC handshake failed: {e}");
                return;
            }
        },
        _ = shutdown_signal(&mut shutdown) => return,
    };
    // A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d; handlers see a.b.c.d.
    let remote = conn.remote_address();
    let remote = SocketAddr::new(remote.ip().to_canonical(), remote.port());

    let built = ::h3::server::builder()
        .max_field_section_size(MAX_FIELD_SECTION)
        .build::<_, Bytes>(h3_quinn::Connection::new(conn.clone()))
        .await;
    let mut h3c = match built {
        Ok(h3c) => h3c,
        Err(e) => {
            log_connection_end(&e, remote);
            return;
        }
    };

    let mut requests = JoinSet::new();
    // Tells requests still running at the drain deadline to reset their streams.
    let (cancel, cancelled) = watch::channel(false);
    loop {
        tokio::select! {
            accepted = h3c.accept() => match accepted {
                Ok(Some(resolver)) => {
                    requests.spawn(handle_request(
                        resolver,
                        service.clone(),
                        remote,
                        cancelled.clone(),
                    ));
                }
                // The peer sent GOAWAY and its requests are done.
                Ok(None) => {
                    linger(&conn, Instant::now() + LINGER_MAX).await;
                    return;
                }
                Err(e) => {
                    log_connection_end(&e, remote);
                    return;
                }
            },
            Some(joined) = requests.join_next(), if !requests.is_empty() => {
                report_panic(joined, "HTTP/3 request");
            }
            _ = shutdown_signal(&mut shutdown) => break,
        }
    }

    // GOAWAY naming the next request id: everything accepted so far will be answered. (h3's
    // `shutdown(0)` would name the last accepted one, telling the client it was not processed.)
    let deadline = Instant::now() + drain;
    let mut linger_until = deadline;
    if let Err(e) = h3c.shutdown(1).await {
        log_connection_end(&e, remote);
        return;
    }
    loop {
        tokio::select! {
            // Keep accepting: requests sent before the GOAWAY arrived are still served, later
            // ones are rejected by h3 with H3_REQUEST_REJECTED (safe for the client to retry).
            accepted = h3c.accept() => match accepted {
                Ok(Some(resolver)) => {
                    requests.spawn(handle_request(
                        resolver,
                        service.clone(),
                        remote,
                        cancelled.clone(),
                    ));
                }
                Ok(None) => break,
                Err(e) => {
                    log_connection_end(&e, remote);
                    return;
                }
            },
            joined = requests.join_next() => match joined {
                Some(joined) => report_panic(joined, "HTTP/3 request"),
                None => break,
            },
            _ = tokio::time::sleep_until(deadline) => {
                tracing::warn!(
                    %remote,
                    requests = requests.len(),
                    "HTTP/3 drain deadline passed; cancelling requests"
                );
                cancel.send_replace(true);
                let _ = tokio::time::timeout(CANCEL_WAIT, async {
                    while requests.join_next().await.is_some() {}
                })
                .await;
                requests.shutdown().await;
                // Else the resets may reach the client after CONNECTION_CLOSE, or not at all.
                linger_until = Instant::now() + LINGER_MAX;
                break;
            }
        }
    }
    linger(&conn, linger_until).await;
    // Dropping `h3c` closes the connection with H3_NO_ERROR.
}

/// Waits a few round trips (or until the peer closes) before the connection is closed: QUIC
/// discards stream data that is not yet acknowledged when CONNECTION_CLOSE is sent, and neither
/// h3 nor quinn tell when a finished response stream has been fully acknowledged.
async fn linger(conn: &quinn::Connection, deadline: Instant) {
    let wait = (conn.rtt() * 4 + Duration::from_millis(100)).min(LINGER_MAX);
    let until = (Instant::now() + wait).min(deadline);
    tokio::select! {
        _ = conn.closed() => {}
        _ = tokio::time::sleep_until(until) => {}
    }
}

/// Why one request ended early.
enum RequestFailure {
    Stream(StreamError),
    Body(Box<dyn std::error::Error + Send + Sync>),
    /// Still running at the drain deadline.
    Cancelled,
}

impl From<StreamError> for RequestFailure {
    fn from(e: StreamError) -> Self {
        RequestFailure::Stream(e)
    }
}

async fn handle_request<S, B>(
    resolver: RequestResolver<h3_quinn::Connection, Bytes>,
    service: S,
    remote: SocketAddr,
    cancelled: watch::Receiver<bool>,
) where
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible>,
    B: HttpBody<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match exchange(resolver, service, remote, cancelled).await {
        Ok(()) => {}
        Err(RequestFailure::Stream(e)) if stream_error_is_benign(&e) => {
            tracing::debug!(%remote, "HTTP/3 request ended: {e}");
        }
        Err(RequestFailure::Stream(e)) => {
            tracing::warn!(%remote, "HTTP/3 request failed: {e}");
        }
        Err(RequestFailure::Body(e)) => {
            tracing::warn!(%remote, "HTTP/3 response body failed: {e}");
        }
        Err(RequestFailure::Cancelled) => {
            tracing::debug!(%remote, "HTTP/3 request cancelled at the drain deadline");
        }
    }
}

async fn exchange<S, B>(
    resolver: RequestResolver<h3_quinn::Connection, Bytes>,
    service: S,
    remote: SocketAddr,
    mut cancelled: watch::Receiver<bool>,
) -> Result<(), RequestFailure>
where
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible>,
    B: HttpBody<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (request, stream) = tokio::select! {
        resolved = resolver.resolve_request() => resolved?,
        _ = shutdown_signal(&mut cancelled) => return Err(RequestFailure::Cancelled),
    };
    let (mut send, recv) = stream.split();
    tokio::select! {
        done = respond(&mut send, request, recv, service, remote) => done,
        _ = shutdown_signal(&mut cancelled) => {
            // An explicit reset: a dropped stream would end with a FIN, which the client takes
            // for a response without headers, a connection error.
            send.stop_stream(Code::H3_REQUEST_CANCELLED);
            Err(RequestFailure::Cancelled)
        }
    }
}

/// Runs the service on one request and streams its response out.
async fn respond<S, B>(
    send: &mut RequestStream<h3_quinn::SendStream<Bytes>, Bytes>,
    request: Request<()>,
    recv: RequestStream<h3_quinn::RecvStream, Bytes>,
    service: S,
    remote: SocketAddr,
) -> Result<(), RequestFailure>
where
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible>,
    B: HttpBody<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (mut parts, ()) = request.into_parts();
    let head_only = parts.method == Method::HEAD;
    parts.extensions.insert(ConnectInfo(remote));
    let body = Body::new(RecvBody {
        recv,
        data_done: false,
        done: false,
    });

    let response = match service.oneshot(Request::from_parts(parts, body)).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let (mut head, body) = response.into_parts();
    for name in CONNECTION_HEADERS {
        head.headers.remove(name);
    }
    // Over TCP hyper adds Content-Length for bodies of known size; do the same.
    if let Some(len) = body.size_hint().exact() {
        let bodyless = head_only
            || head.status.is_informational()
            || head.status == StatusCode::NO_CONTENT
            || head.status == StatusCode::NOT_MODIFIED;
        if !bodyless && !head.headers.contains_key(header::CONTENT_LENGTH) {
            head.headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
    }
    send.send_response(Response::from_parts(head, ())).await?;

    if !head_only {
        let mut body = std::pin::pin!(body);
        loop {
            // Converted at once: `B::Error` need not be `Send`, so it must not live across an await.
            let next = body.frame().await.map(|f| f.map_err(Into::into));
            let frame = match next {
                None => break,
                Some(Ok(frame)) => frame,
                Some(Err(e)) => {
                    // The client must not take a truncated body for a complete one.
                    send.stop_stream(Code::H3_INTERNAL_ERROR);
                    return Err(RequestFailure::Body(e));
                }
            };
            match frame.into_data() {
                Ok(data) if data.is_empty() => {}
                Ok(data) => send.send_data(data).await?,
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        send.send_trailers(trailers).await?;
                        break;
                    }
                }
            }
        }
    }
    send.finish().await?;
    Ok(())
}

/// The request body: the receive half of an h3 request stream, DATA frames then trailers.
struct RecvBody {
    recv: RequestStream<h3_quinn::RecvStream, Bytes>,
    data_done: bool,
    done: bool,
}

impl HttpBody for RecvBody {
    type Data = Bytes;
    type Error = StreamError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if !this.data_done {
            match ready!(this.recv.poll_recv_data(cx)) {
                Ok(Some(mut buf)) => {
                    let data = buf.copy_to_bytes(buf.remaining());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(None) => this.data_done = true,
                Err(e) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
        let trailers = ready!(this.recv.poll_recv_trailers(cx));
        this.done = true;
        match trailers {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// Logs a connection's end: normal closes at debug, anything else at warn.
fn log_connection_end(e: &ConnectionError, remote: SocketAddr) {
    if connection_error_is_benign(e) {
        tracing::debug!(%remote, "HTTP/3 connection closed: {e}");
    } else {
        tracing::warn!(%remote, "HTTP/3 connection failed: {e}");
    }
}

/// Whether a connection ended the way clients normally end one. h3 0.0.8 reports most of
/// these as errors, and wraps quinn's close reasons in an opaque `Undefined`: H3_NO_ERROR,
/// application close 0 (aioquic), transport NO_ERROR ("closed abruptly in the absence of any
/// error", Chromium), idle timeout, and our own close.
pub fn connection_error_is_benign(e: &ConnectionError) -> bool {
    if e.is_h3_no_error() {
        return true;
    }
    match e {
        ConnectionError::Timeout { .. } => true,
        ConnectionError::Remote { 0: incoming, .. } => match incoming {
            ConnectionErrorIncoming::Timeout => true,
            ConnectionErrorIncoming::ApplicationClose { error_code } => {
                *error_code == 0 || *error_code == Code::H3_NO_ERROR.value()
            }
            ConnectionErrorIncoming::Undefined(inner) => {
                match inner.downcast_ref::<quinn::ConnectionError>() {
                    Some(quic) => quic_close_is_benign(quic),
                    None => inner.to_string().contains("in the absence of any error"),
                }
            }
            _ => false,
        },
        _ => false,
    }
}

fn quic_close_is_benign(e: &quinn::ConnectionError) -> bool {
    match e {
        quinn::ConnectionError::ApplicationClosed(close) => {
            let code = close.error_code.into_inner();
            code == 0 || code == Code::H3_NO_ERROR.value()
        }
        quinn::ConnectionError::ConnectionClosed(close) => {
            close.error_code == quinn::TransportErrorCode::NO_ERROR
        }
        quinn::ConnectionError::TimedOut | quinn::ConnectionError::LocallyClosed => true,
        _ => false,
    }
}

/// Whether a request ended because the client went away or cancelled it, not because of a fault.
fn stream_error_is_benign(e: &StreamError) -> bool {
    if e.is_h3_no_error() {
        return true;
    }
    match e {
        StreamError::ConnectionError { 0: c, .. } => connection_error_is_benign(c),
        StreamError::RemoteTerminate { code, .. } => {
            // quinn resets/stops with 0 when a stream handle is dropped early.
            code.value() == 0 || *code == Code::H3_NO_ERROR || *code == Code::H3_REQUEST_CANCELLED
        }
        StreamError::RemoteClosing { .. } => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::h3::H3Client;
    use crate::client::ClientError;
    use axum::http::{HeaderMap, Version};
    use axum::routing::{get, post};
    use axum::Router;
    use http_body_util::Full;
    use std::time::Instant as StdInstant;

    struct Server {
        url: String,
        identity: Identity,
        stop: watch::Sender<bool>,
        task: tokio::task::JoinHandle<()>,
        /// A handle kept by the test: a closed endpoint refuses handshakes at once, while a
        /// dropped socket would leave the client waiting for its idle timeout.
        endpoint: quinn::Endpoint,
    }

    fn options() -> H3Options {
        H3Options {
            max_concurrent_streams: 16,
            idle_timeout: Duration::from_secs(10),
            max_body_bytes: 256 * 1024,
        }
    }

    fn app() -> Router {
        Router::new()
            .route("/hello", get(|| async { "hello over h3" }))
            // Streams the request body (and its trailers) straight back.
            .route(
                "/echo",
                post(|body: Body| async move { Response::new(body) }),
            )
            .route(
                "/peer",
                get(
                    |ConnectInfo(addr): ConnectInfo<SocketAddr>, version: Version| async move {
                        format!("{version:?} {addr}")
                    },
                ),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    "slow done"
                }),
            )
            .route(
                "/stuck",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "too late"
                }),
            )
            .route(
                "/trailers",
                get(|| async {
                    let mut trailers = HeaderMap::new();
                    trailers.insert("x-checksum", HeaderValue::from_static("abc123"));
                    Body::new(
                        Full::new(Bytes::from_static(b"body then trailers"))
                            .with_trailers(async move { Some(Ok(trailers)) }),
                    )
                }),
            )
            .route(
                "/hop",
                get(|| async {
                    (
                        [
                            ("connection", "keep-alive"),
                            ("keep-alive", "timeout=5"),
                            ("x-kept", "yes"),
                        ],
                        "hop-by-hop headers",
                    )
                }),
            )
    }

    async fn start(drain: Duration) -> Server {
        let identity = Identity::self_signed().expect("self-signed identity");
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("address");
        let endpoint = endpoint(addr, &identity, &options()).expect("endpoint");
        let port = endpoint.local_addr().expect("local address").port();
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(serve(endpoint.clone(), app(), stopped, drain));
        Server {
            url: format!("https://127.0.0.1:{port}"),
            identity,
            stop,
            task,
            endpoint,
        }
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_stream_bodies_trailers_and_see_the_client_address() {
        let server = start(Duration::from_secs(2)).await;
        let client = H3Client::new(&server.identity.certs).expect("client");
        let url = |path: &str| format!("{}{path}", server.url);

        let hello = client
            .request("GET", &url("/hello"), &[], Vec::new())
            .await
            .expect("GET /hello");
        assert_eq!(hello.status, 200);
        assert_eq!(hello.version, Version::HTTP_3);
        assert_eq!(hello.text(), "hello over h3");
        assert_eq!(hello.header("content-length"), Some("13"));
        assert_eq!(hello.trailers, None);

        let sent = pattern(200_000);
        let mut trailers = HeaderMap::new();
        trailers.insert("x-request-sum", HeaderValue::from_static("42"));
        let echo = client
            .send(
                "POST",
                &url("/echo"),
                &[("content-type", "application/octet-stream")],
                sent.clone(),
                Some(trailers),
            )
            .await
            .expect("POST /echo");
        assert_eq!(echo.status, 200);
        assert_eq!(echo.body.len(), sent.len());
        assert!(echo.body == sent, "echoed body differs");
        let echoed = echo.trailers.expect("request trailers echoed back");
        assert_eq!(
            echoed.get("x-request-sum").map(|v| v.as_bytes()),
            Some(&b"42"[..])
        );

        let plain = client
            .request("POST", &url("/echo"), &[], b"no trailers".to_vec())
            .await
            .expect("POST /echo without trailers");
        assert_eq!(plain.text(), "no trailers");
        assert_eq!(plain.trailers, None);

        let with_trailers = client
            .request("GET", &url("/trailers"), &[], Vec::new())
            .await
            .expect("GET /trailers");
        assert_eq!(with_trailers.text(), "body then trailers");
        let trailers = with_trailers.trailers.expect("response trailers");
        assert_eq!(
            trailers.get("x-checksum").map(|v| v.as_bytes()),
            Some(&b"abc123"[..])
        );

        let peer = client
            .request("GET", &url("/peer"), &[], Vec::new())
            .await
            .expect("GET /peer");
        let text = peer.text();
        let (version, addr) = text.split_once(' ').expect("version and address");
        assert_eq!(version, "HTTP/3.0");
        let addr: SocketAddr = addr.parse().expect("client address");
        assert_eq!(addr.ip(), std::net::Ipv4Addr::LOCALHOST);
        assert_ne!(addr.port(), 0);

        let hop = client
            .request("GET", &url("/hop"), &[], Vec::new())
            .await
            .expect("GET /hop");
        assert_eq!(hop.header("x-kept"), Some("yes"));
        assert_eq!(hop.header("connection"), None);
        assert_eq!(hop.header("keep-alive"), None);

        let missing = client
            .request("GET", &url("/nope"), &[], Vec::new())
            .await
            .expect("GET /nope");
        assert_eq!(missing.status, 404);

        // Every request above went over one connection.
        assert_eq!(server.endpoint.open_connections(), 1);
        client.close().await;
        let deadline = StdInstant::now() + Duration::from_secs(2);
        while server.endpoint.open_connections() > 0 && StdInstant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(server.endpoint.open_connections(), 0);

        server.stop.send_replace(true);
        tokio::time::timeout(Duration::from_secs(3), server.task)
            .await
            .expect("serve returns after shutdown")
            .expect("serve task");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_finishes_in_flight_requests_then_refuses_connections() {
        let server = start(Duration::from_secs(2)).await;
        let client = Arc::new(H3Client::new(&server.identity.certs).expect("client"));
        let slow_url = format!("{}/slow", server.url);
        let slow = {
            let client = client.clone();
            tokio::spawn(async move { client.request("GET", &slow_url, &[], Vec::new()).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let began = StdInstant::now();
        server.stop.send_replace(true);

        let slow = slow
            .await
            .expect("request task")
            .expect("in-flight request");
        assert_eq!(slow.status, 200);
        assert_eq!(slow.text(), "slow done");
        tokio::time::timeout(Duration::from_secs(3), server.task)
            .await
            .expect("serve returns")
            .expect("serve task");
        // Done when the last request was, not at the drain deadline.
        assert!(
            began.elapsed() < Duration::from_millis(1500),
            "{:?}",
            began.elapsed()
        );

        let hello = format!("{}/hello", server.url);
        let again = client.request("GET", &hello, &[], Vec::new()).await;
        assert!(
            matches!(again, Err(ClientError::Transport(_))),
            "old client: {again:?}"
        );
        let fresh = H3Client::new(&server.identity.certs).expect("client");
        let started = StdInstant::now();
        let refused = fresh.request("GET", &hello, &[], Vec::new()).await;
        assert!(
            matches!(refused, Err(ClientError::Transport(_))),
            "new client: {refused:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(server.endpoint);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_past_the_drain_deadline_are_cancelled() {
        let server = start(Duration::from_millis(100)).await;
        let client = Arc::new(H3Client::new(&server.identity.certs).expect("client"));
        let slow_url = format!("{}/stuck", server.url);
        let slow = {
            let client = client.clone();
            tokio::spawn(async move { client.request("GET", &slow_url, &[], Vec::new()).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let began = StdInstant::now();
        server.stop.send_replace(true);
        // Reset explicitly, so the client's connection is not torn down as malformed.
        let result = slow.await.expect("request task");
        assert!(
            matches!(&result, Err(ClientError::Transport(m)) if m.contains("H3_REQUEST_CANCELLED")),
            "{result:?}"
        );
        tokio::time::timeout(Duration::from_secs(2), server.task)
            .await
            .expect("serve returns")
            .expect("serve task");
        // Drain (100 ms) plus the linger for the reset, not the handler's 5 s.
        assert!(
            began.elapsed() < Duration::from_secs(1),
            "{:?}",
            began.elapsed()
        );
    }

    #[tokio::test]
    async fn endpoint_rejects_unusable_options() {
        let identity = Identity::self_signed().expect("identity");
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("address");
        let zero_streams = H3Options {
            max_concurrent_streams: 0,
            ..options()
        };
        assert!(matches!(
            endpoint(addr, &identity, &zero_streams),
            Err(H3Error::Option(_))
        ));
        let no_idle = H3Options {
            idle_timeout: Duration::ZERO,
            ..options()
        };
        assert!(matches!(
            endpoint(addr, &identity, &no_idle),
            Err(H3Error::Option(_))
        ));
        let taken = endpoint(addr, &identity, &options()).expect("endpoint");
        let busy = taken.local_addr().expect("address");
        assert!(matches!(
            endpoint(busy, &identity, &options()),
            Err(H3Error::Bind { .. })
        ));
    }

    #[test]
    fn normal_closes_are_benign_and_faults_are_not() {
        let app = |code: u32| {
            quinn::ConnectionError::ApplicationClosed(quinn::ApplicationClose {
                error_code: quinn::VarInt::from_u32(code),
                reason: Bytes::new(),
            })
        };
        let transport = |code| {
            quinn::ConnectionError::ConnectionClosed(quinn::ConnectionClose {
                error_code: code,
                frame_type: None,
                reason: Bytes::from_static(b"closed abruptly in the absence of any error"),
            })
        };
        assert!(quic_close_is_benign(&app(0)));
        assert!(quic_close_is_benign(&app(0x100)));
        assert!(!quic_close_is_benign(&app(0x101)));
        assert!(quic_close_is_benign(&transport(
            quinn::TransportErrorCode::NO_ERROR
        )));
        assert!(!quic_close_is_benign(&transport(
            quinn::TransportErrorCode::PROTOCOL_VIOLATION
        )));
        assert!(quic_close_is_benign(&quinn::ConnectionError::TimedOut));
        assert!(!quic_close_is_benign(&quinn::ConnectionError::Reset));
    }
}
