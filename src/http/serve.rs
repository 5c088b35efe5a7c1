//! Serving the signalling `Router` on TCP: plain HTTP/1.1, or HTTPS with HTTP/1.1 and HTTP/2
//! chosen by ALPN. HTTP/3 serves the same router from [`crate::http3`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Request};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
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

/// Plain HTTP/1.1 (the zero-configuration default) until `stop` turns true.
pub async fn serve_plain(listener: TcpListener, router: Router, mut stop: watch::Receiver<bool>) {
    let app = router.into_make_service_with_connect_info::<SocketAddr>();
    let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = stop.wait_for(|s| *s).await;
    });
    if let Err(e) = serve.await {
        tracing::error!(error = %e, "HTTP server failed");
    }
}

/// HTTPS until `stop` turns true; then open connections get `drain` to finish their requests.
pub async fn serve_tls(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    router: Router,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            accepted = listener.accept() => {
                let (tcp, remote) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        debug!(error = %e, "accept failed");
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
                    // Handlers see the client's address as they do over plain HTTP and HTTP/3.
                    let service = router.map_request(move |mut req: Request<Incoming>| {
                        req.extensions_mut().insert(ConnectInfo(remote));
                        req
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let conn = builder
                        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
                    if let Err(e) = watcher.watch(conn).await {
                        debug!(%remote, error = %e, "HTTPS connection ended");
                    }
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        debug!("HTTPS connections still open after the drain deadline");
    }
}
