//! Minimal HTTP/1.1 requests (plain `http://` only) for WHIP/WHEP signalling
//! and for HTTP contract tests.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::http::{HeaderName, HeaderValue, Method, Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

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
    pub body: Vec<u8>,
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
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|e| ClientError::Url(format!("bad method {method:?}: {e}")))?;
    let uri: Uri = url
        .parse()
        .map_err(|e| ClientError::Url(format!("{url}: {e}")))?;
    if uri.scheme_str() != Some("http") {
        return Err(ClientError::Url(format!(
            "{url}: only http:// is supported"
        )));
    }

    let mut req = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| ClientError::Url(format!("bad header name {name:?}: {e}")))?;
        let value = HeaderValue::from_str(value)
            .map_err(|e| ClientError::Url(format!("bad header value {value:?}: {e}")))?;
        req = req.header(name, value);
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| ClientError::Url(e.to_string()))?;

    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http();

    let exchange = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| ClientError::Transport(format!("{e:?}")))?;
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?
            .to_bytes();
        Ok(Response {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: body.to_vec(),
        })
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| ClientError::Timeout("HTTP request"))?
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

/// `host:port` of an absolute `http://` URL (port 80 if absent).
pub fn host_port(url: &str) -> Result<(String, u16), ClientError> {
    let uri: Uri = url
        .parse()
        .map_err(|e| ClientError::Url(format!("{url}: {e}")))?;
    let host = uri
        .host()
        .ok_or_else(|| ClientError::Url(format!("{url}: no host")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok((host.to_string(), uri.port_u16().unwrap_or(80)))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
