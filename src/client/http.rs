//! Minimal HTTP requests for WHIP/WHEP signalling and for HTTP contract tests: plain
//! `http://` (HTTP/1.1), and `https://` with given trusted roots (HTTP/2 or HTTP/1.1 by ALPN).
//! HTTP/3 is in [`super::h3`].

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::http::{HeaderName, HeaderValue, Method, Request, Uri, Version};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};

pub use hyper::header;
pub use hyper::HeaderMap;

use super::ClientError;

/// Upper bound for one request, so a stuck server fails a test instead of hanging it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A fully read HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    /// The protocol that carried the exchange (HTTP/1.1, HTTP/2 or HTTP/3).
    pub version: Version,
    pub body: Vec<u8>,
    /// Trailer fields after the body, if the server sent any.
    pub trailers: Option<HeaderMap>,
}

impl Response {
    /// First value of header `name` (case-insensitive), if present and valid text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }

    /// All values of header `name` that are valid text (e.g. several `Link`s).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    /// Body as text, lossy, for error messages and assertions.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Send one request and read the whole response.
///
/// A fresh client per call: pooled connections are bound to the runtime that
/// opened them, and tests use a new runtime each.
pub async fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<Response, ClientError> {
    let req = build_request(method, url, headers, body)?;
    if req.uri().scheme_str() != Some("http") {
        return Err(ClientError::Url(format!(
            "{url}: only http:// is supported (https:// via request_tls)"
        )));
    }

    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http();

    let exchange = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| ClientError::Transport(format!("{e:?}")))?;
        read_response(resp).await
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| ClientError::Timeout("HTTP request"))?
}

/// Send one request to an `https://` URL over TLS on TCP, trusting exactly `roots`, and read the
/// whole response. HTTP/2 if the server offers it by ALPN, else HTTP/1.1; one connection per call.
pub async fn request_tls(
    roots: &[CertificateDer<'static>],
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<Response, ClientError> {
    request_tls_alpn(roots, crate::tls::ALPN_TCP, method, url, headers, body).await
}

/// As [`request_tls`], offering only the ALPN ids in `alpn` (`[b"http/1.1"]` forces HTTP/1.1).
pub async fn request_tls_alpn(
    roots: &[CertificateDer<'static>],
    alpn: &[&[u8]],
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<Response, ClientError> {
    let mut req = build_request(method, url, headers, body)?;
    if req.uri().scheme_str() != Some("https") {
        return Err(ClientError::Url(format!(
            "{url}: request_tls needs https://"
        )));
    }
    let (host, port) = host_port(url)?;
    let server_name =
        ServerName::try_from(host.clone()).map_err(|e| ClientError::Url(format!("{url}: {e}")))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_client_config(roots, alpn)?));

    let exchange = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| ClientError::Transport(format!("connect {host}:{port}: {e}")))?;
        let tls = connector
            .connect(server_name, tcp)
            .await
            .map_err(|e| ClientError::Transport(format!("TLS handshake: {e}")))?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
        let io = TokioIo::new(tls);
        let resp = if h2 {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|e| ClientError::Transport(format!("HTTP/2 handshake: {e}")))?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!("HTTP/2 client connection ended: {e}");
                }
            });
            sender.send_request(req).await
        } else {
            // HTTP/1.1 wants origin-form and a Host header, not the absolute URI.
            let authority = req
                .uri()
                .authority()
                .map(|a| a.as_str().to_string())
                .unwrap_or_default();
            let path = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/".into());
            *req.uri_mut() = path
                .parse()
                .map_err(|e| ClientError::Url(format!("{url}: {e}")))?;
            if !req.headers().contains_key(header::HOST) {
                let host = HeaderValue::from_str(&authority)
                    .map_err(|e| ClientError::Url(format!("{url}: {e}")))?;
                req.headers_mut().insert(header::HOST, host);
            }
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| ClientError::Transport(format!("HTTP/1.1 handshake: {e}")))?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!("HTTP/1.1 client connection ended: {e}");
                }
            });
            sender.send_request(req).await
        };
        let resp = resp.map_err(|e| ClientError::Transport(format!("{e:?}")))?;
        read_response(resp).await
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| ClientError::Timeout("HTTPS request"))?
}

/// TLS over TCP trusting exactly `roots`, offering HTTP/2 and HTTP/1.1.
fn tls_client_config(
    roots: &[CertificateDer<'static>],
    alpn: &[&[u8]],
) -> Result<rustls::ClientConfig, ClientError> {
    let mut store = rustls::RootCertStore::empty();
    for cert in roots {
        store
            .add(cert.clone())
            .map_err(|e| ClientError::Tls(format!("unusable root certificate: {e}")))?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Ok(config)
}

fn build_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<Request<Full<Bytes>>, ClientError> {
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|e| ClientError::Url(format!("bad method {method:?}: {e}")))?;
    let uri: Uri = url
        .parse()
        .map_err(|e| ClientError::Url(format!("{url}: {e}")))?;
    let mut req = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| ClientError::Url(format!("bad header name {name:?}: {e}")))?;
        let value = HeaderValue::from_str(value)
            .map_err(|e| ClientError::Url(format!("bad header value {value:?}: {e}")))?;
        req = req.header(name, value);
    }
    req.body(Full::new(Bytes::from(body)))
        .map_err(|e| ClientError::Url(e.to_string()))
}

async fn read_response(
    resp: hyper::Response<hyper::body::Incoming>,
) -> Result<Response, ClientError> {
    let (parts, body) = resp.into_parts();
    let collected = body
        .collect()
        .await
        .map_err(|e| ClientError::Transport(e.to_string()))?;
    let trailers = collected.trailers().cloned();
    Ok(Response {
        status: parts.status.as_u16(),
        headers: parts.headers,
        version: parts.version,
        body: collected.to_bytes().to_vec(),
        trailers,
    })
}

/// Resolve `reference` (e.g. a `Location` header) against the absolute `base`
/// URL, following RFC 3986 §5.2 for the forms servers actually send.
pub fn resolve_url(base: &str, reference: &str) -> Result<String, ClientError> {
    let reference = reference.trim();
    if has_scheme(reference) {
        return Ok(reference.to_string());
    }
    let (scheme, rest) = base
        .split_once("://")
        .ok_or_else(|| ClientError::Url(format!("{base}: not an absolute URL")))?;
    if let Some(net_path) = reference.strip_prefix("//") {
        return Ok(format!("{scheme}://{net_path}"));
    }
    let (authority, base_path) = match rest.find(['/', '?', '#']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    // Path of the base without query or fragment.
    let base_path = base_path
        .split(['?', '#'])
        .next()
        .unwrap_or_default()
        .to_string();

    if reference.is_empty() {
        return Ok(base.to_string());
    }
    let (ref_path, ref_tail) = match reference.find(['?', '#']) {
        Some(i) => (&reference[..i], &reference[i..]),
        None => (reference, ""),
    };
    let merged = if ref_path.starts_with('/') {
        ref_path.to_string()
    } else if ref_path.is_empty() {
        base_path.clone()
    } else {
        let dir = match base_path.rfind('/') {
            Some(i) => &base_path[..=i],
            None => "/",
        };
        format!("{dir}{ref_path}")
    };
    Ok(format!(
        "{scheme}://{authority}{}{ref_tail}",
        remove_dot_segments(&merged)
    ))
}

fn has_scheme(s: &str) -> bool {
    match s.find(':') {
        Some(i) if i > 0 => s[..i]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)),
        _ => false,
    }
}

fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').collect();
    let last = segments.len().saturating_sub(1);
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                if out.len() > 1 {
                    out.pop();
                }
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    let joined = out.join("/");
    if joined.starts_with('/') {
        joined
    } else {
        format!("/{joined}")
    }
}

/// `host:port` of an absolute URL (port 443 for `https://`, else 80, if absent).
pub fn host_port(url: &str) -> Result<(String, u16), ClientError> {
    let uri: Uri = url
        .parse()
        .map_err(|e| ClientError::Url(format!("{url}: {e}")))?;
    let host = uri
        .host()
        .ok_or_else(|| ClientError::Url(format!("{url}: no host")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let default = if uri.scheme_str() == Some("https") {
        443
    } else {
        80
    };
    Ok((host.to_string(), uri.port_u16().unwrap_or(default)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{Identity, ALPN_TCP};
    use axum::body::Body;
    use axum::routing::{get, post};
    use axum::Router;
    use hyper_util::server::conn::auto;
    use hyper_util::service::TowerToHyperService;

    /// An HTTPS server (tokio-rustls + hyper-util auto) offering `alpn`; returns its base URL.
    async fn tls_server(identity: &Identity, alpn: &[&[u8]]) -> String {
        let config = identity.server_config(alpn).expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("address").port();
        let app = Router::new()
            .route(
                "/version",
                get(|v: hyper::http::Version| async move { format!("{v:?}") }),
            )
            .route("/echo", post(|body: Body| async move { body }));
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app))
                        .await;
                });
            }
        });
        format!("https://localhost:{port}")
    }

    #[tokio::test]
    async fn https_speaks_http2_or_http1_as_negotiated() {
        let identity = Identity::self_signed().expect("identity");
        let body: Vec<u8> = (0..100_000).map(|i| (i % 253) as u8).collect();
        for (alpn, version) in [
            (ALPN_TCP, Version::HTTP_2),
            (&[b"http/1.1".as_slice()][..], Version::HTTP_11),
        ] {
            let base = tls_server(&identity, alpn).await;
            let resp = request_tls(
                &identity.certs,
                "GET",
                &format!("{base}/version"),
                &[],
                Vec::new(),
            )
            .await
            .expect("GET over TLS");
            assert_eq!(resp.status, 200);
            assert_eq!(resp.version, version);
            assert_eq!(resp.text(), format!("{version:?}"));
            let echo = request_tls(
                &identity.certs,
                "POST",
                &format!("{base}/echo"),
                &[("content-type", "application/octet-stream")],
                body.clone(),
            )
            .await
            .expect("POST over TLS");
            assert_eq!(echo.version, version);
            assert!(echo.body == body, "echoed body differs");
        }
    }

    #[tokio::test]
    async fn https_trusts_only_the_given_roots() {
        let identity = Identity::self_signed().expect("identity");
        let base = tls_server(&identity, ALPN_TCP).await;
        let stranger = Identity::self_signed().expect("other identity");
        let err = request_tls(
            &stranger.certs,
            "GET",
            &format!("{base}/version"),
            &[],
            Vec::new(),
        )
        .await
        .expect_err("untrusted certificate");
        assert!(matches!(err, ClientError::Transport(_)), "{err:?}");
        let err = request_tls(&identity.certs, "GET", "http://localhost/", &[], Vec::new())
            .await
            .expect_err("plain http");
        assert!(matches!(err, ClientError::Url(_)), "{err:?}");
    }

    #[test]
    fn resolves_locations() {
        let base = "http://127.0.0.1:8080/whip/demo";
        let r = |s| resolve_url(base, s).unwrap();
        assert_eq!(r("/whip/demo/abc"), "http://127.0.0.1:8080/whip/demo/abc");
        assert_eq!(r("demo/abc"), "http://127.0.0.1:8080/whip/demo/abc");
        assert_eq!(
            r("sessions/x?y=1"),
            "http://127.0.0.1:8080/whip/sessions/x?y=1"
        );
        assert_eq!(r("../s/1"), "http://127.0.0.1:8080/s/1");
        assert_eq!(r("./s/1"), "http://127.0.0.1:8080/whip/s/1");
        assert_eq!(r("http://other:1/a"), "http://other:1/a");
        assert_eq!(r("//other:2/b"), "http://other:2/b");
        assert_eq!(resolve_url("http://h:1", "x").unwrap(), "http://h:1/x");
        assert_eq!(
            resolve_url("http://h:1/a/b/?q=1", "c").unwrap(),
            "http://h:1/a/b/c"
        );
    }

    #[test]
    fn host_and_port() {
        assert_eq!(
            host_port("http://127.0.0.1:8080/whip/x").unwrap(),
            ("127.0.0.1".to_string(), 8080)
        );
        assert_eq!(
            host_port("http://[::1]/x").unwrap(),
            ("::1".to_string(), 80)
        );
        assert_eq!(
            host_port("https://localhost/x").expect("https URL"),
            ("localhost".to_string(), 443)
        );
    }
}
