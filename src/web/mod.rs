//! Browser pages embedded in the binary: a list of streams (`/`), a WHEP player
//! (`/watch/{stream}`) and a WHIP publisher (`/publish/{stream}`), with their scripts and style
//! under `/assets/`.
//!
//! The pages are public: they hold no secrets, and the WHIP, WHEP and API requests they make carry
//! the bearer token the user gives them. Plain HTML, JavaScript and CSS, no build step.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("index.html");
const WATCH_HTML: &str = include_str!("watch.html");
const PUBLISH_HTML: &str = include_str!("publish.html");

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// The files under `/assets/`: name, content type, content.
const ASSETS: &[(&str, &str, &str)] = &[
    ("common.js", JS, include_str!("common.js")),
    ("index.js", JS, include_str!("index.js")),
    ("watch.js", JS, include_str!("watch.js")),
    ("publish.js", JS, include_str!("publish.js")),
    ("style.css", CSS, include_str!("style.css")),
];

/// Only this origin's scripts and styles run, and no other site may frame the pages: they handle
/// bearer tokens. `data:` images allow the empty favicon that spares a request.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// Where the stream name goes in the player and publisher pages.
const STREAM_SLOT: &str = "{{stream}}";

pub fn routes() -> Router {
    Router::new()
        .route("/", get(index))
        .route("/watch/{stream}", get(watch))
        .route("/publish/{stream}", get(publish))
        .route("/assets/{file}", get(asset))
}

async fn index() -> Response {
    page(INDEX_HTML.to_string())
}

async fn watch(Path(stream): Path<String>) -> Response {
    stream_page(WATCH_HTML, &stream)
}

async fn publish(Path(stream): Path<String>) -> Response {
    stream_page(PUBLISH_HTML, &stream)
}

/// A page about one stream, with its name filled in; a name the endpoints would refuse has no
/// page.
fn stream_page(template: &str, stream: &str) -> Response {
    if !crate::session::is_stream_name(stream) {
        return not_found(&format!(
            "no page for stream {stream:?}: a stream name is 1-128 letters, digits, '-', '_' or '.'"
        ));
    }
    page(template.replace(STREAM_SLOT, &escape_html(stream)))
}

fn page(body: String) -> Response {
    let mut res = (StatusCode::OK, body).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(HTML));
    // Pages are cheap and must match the scripts of the running binary: always revalidate.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}

/// An asset with a strong ETag of its content: browsers revalidate (`no-cache`) and get a 304
/// while the binary is the same, so a new version is never mixed with a cached old script.
async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    let Some(i) = ASSETS.iter().position(|(name, _, _)| *name == file) else {
        return not_found(&format!("no asset {file:?}"));
    };
    let (_, content_type, body) = ASSETS[i];
    let etag = &etags()[i];
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut res = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (StatusCode::OK, body).into_response()
    };
    let h = res.headers_mut();
    if !fresh {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    res
}

/// One ETag per asset, in the order of [`ASSETS`], computed once.
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|(_, _, body)| format!("\"{:016x}\"", fnv1a(body.as_bytes())))
            .collect()
    })
}

/// FNV-1a, 64 bits: enough to tell versions of a handful of files apart.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A 404 with an RFC 9457 body, like every other error of the gateway.
fn not_found(detail: &str) -> Response {
    let body = serde_json::json!({
        "type": "https://wishcast.dev/problems/no-such-page",
        "title": "Not Found",
        "status": 404,
        "detail": detail,
    });
    let mut res = (StatusCode::NOT_FOUND, body.to_string()).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    res
}

/// Text made safe inside HTML elements and quoted attributes.
fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape_html(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn every_page_script_is_an_asset() {
        for html in [INDEX_HTML, WATCH_HTML, PUBLISH_HTML] {
            for part in html.split("/assets/").skip(1) {
                let name = part.split('"').next().unwrap_or_default();
                assert!(
                    ASSETS.iter().any(|(n, _, _)| *n == name),
                    "{name} is linked but not served"
                );
            }
        }
    }
}
