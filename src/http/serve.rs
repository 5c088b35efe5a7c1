//! Serving the signalling `Router` on TCP: plain HTTP/1.1, or HTTPS with HTTP/1.1 and HTTP/2
//! chosen by ALPN. HTTP/3 serves the same router from [`crate::http3`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Request};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;
use tracing::debug;

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// `Alt-Svc: h3=":PORT"; ma=86400` on every response (RFC 7838): clients learn that the same
/// origin speaks HTTP/3 on that UDP port.
pub fn with_alt_svc(router: Router, port: u16) -> Router {
    let value = HeaderValue::from_str(&format!("h3=\":{port}\"; ma=86400"))
        .unwrap_or_else(|_| HeaderValue::from_static("clear"));
    router.layer(axum::middleware::map_response(
        move |mut res: axum::response::Response| {
            let value = value.clone();
            async move {
                res.headers_mut().insert(header::ALT_SVC, value);
                res
            }
        },
    ))
}

/// How connections are served: how long a client has for its headers, and how long open
/// connections get to finish at shutdown.
#[derive(Clone, Copy, Debug)]
pub struct ServeOptions {
    /// HTTP/1: the request line and headers must all arrive within this, or the connection
    /// is closed (hyper's `header_read_timeout`).
    pub header_read: Duration,
    /// At shutdown, open connections get this long to finish their requests.
    pub drain: Duration,
}

/// Serves one accepted connection (plain or TLS) with `router`, until it ends or `watcher`'s
/// shutdown: HTTP/1.1, or HTTP/2 (by ALPN or prior knowledge), with the header timeout.
async fn serve_connection<I>(
    io: I,
    remote: SocketAddr,
    router: Router,
    opts: ServeOptions,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // Handlers see the client's address the same over plain HTTP, HTTPS and HTTP/3.
    let service = router.map_request(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(remote));
        req
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read);
    builder.http2().timer(TokioTimer::new());
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
    if let Err(e) = watcher.watch(conn).await {
        debug!(%remote, error = %e, "HTTP connection ended");
    }
}

/// The next connection, or `None` once `stop` turns true. An IPv4 client of a dual-stack
/// listener is known by its IPv4 address, as over HTTP/3, so its rate limit and what auth
/// hooks see do not depend on which listener it came through.
async fn accept(
    listener: &TcpListener,
    stop: &mut watch::Receiver<bool>,
) -> Option<std::io::Result<(tokio::net::TcpStream, SocketAddr)>> {
    tokio::select! {
        _ = stop.wait_for(|s| *s) => None,
        accepted = listener.accept() => Some(accepted.map(|(tcp, remote)| {
            (tcp, SocketAddr::new(remote.ip().to_canonical(), remote.port()))
        })),
    }
}

/// Waits out a failed `accept`: at once for a connection that failed on its own, a moment for
/// a resource the whole listener lacks (out of file descriptors), so it does not spin.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind as K;
    debug!(error = %e, "accept failed");
    if !matches!(
        e.kind(),
        K::ConnectionAborted | K::ConnectionReset | K::ConnectionRefused | K::Interrupted
    ) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Lets open connections finish, at most `drain`.
async fn drain(graceful: GracefulShutdown, drain: Duration) {
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        debug!("HTTP connections still open after the drain deadline");
    }
}

/// Plain HTTP/1.1 (the zero-configuration default) until `stop` turns true.
pub async fn serve_plain(
    listener: TcpListener,
    router: Router,
    mut stop: watch::Receiver<bool>,
    opts: ServeOptions,
) {
    let graceful = GracefulShutdown::new();
    while let Some(accepted) = accept(&listener, &mut stop).await {
        let (tcp, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                accept_failed(e).await;
                continue;
            }
        };
        let watcher = graceful.watcher();
        tokio::spawn(serve_connection(tcp, remote, router.clone(), opts, watcher));
    }
    drop(listener);
    drain(graceful, opts.drain).await;
}

/// HTTPS until `stop` turns true; then open connections get `opts.drain` to finish their
/// requests.
pub async fn serve_tls(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    router: Router,
    mut stop: watch::Receiver<bool>,
    opts: ServeOptions,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let graceful = GracefulShutdown::new();
    while let Some(accepted) = accept(&listener, &mut stop).await {
        let (tcp, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                accept_failed(e).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    debug!(%remote, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    debug!(%remote, "TLS handshake timed out");
                    return;
                }
            };
            serve_connection(stream, remote, router, opts, watcher).await;
        });
    }
    drop(listener);
    drain(graceful, opts.drain).await;
}
