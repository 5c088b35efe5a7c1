//! The browser pages embedded in the binary, over real HTTP: each is served with its content
//! type, the player and publisher point at their stream's endpoints, invalid stream names get
//! 404, and with auth on the pages stay public while the API they call does not.

mod common;

use common::*;
use wishcast::client::http::{request, Response};
use wishcast::Gateway;

const ADMIN: &str = "adm-pages-3f9c2a71";

async fn get(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Response {
    let url = format!("http://{}{path}", gw.http_addr());
    request("GET", &url, headers, Vec::new())
        .await
        .unwrap_or_else(|e| panic!("GET {path}: no HTTP response: {e}"))
}

fn text(r: &Response) -> &str {
    std::str::from_utf8(&r.body).expect("UTF-8 body")
}

/// 200 with `content_type`, readable from any origin; the body.
async fn served(gw: &Gateway, path: &str, content_type: &str) -> String {
    let r = get(gw, path, &[]).await;
    assert_eq!(r.status, 200, "GET {path}: {}", text(&r));
    assert_eq!(r.header("content-type"), Some(content_type), "GET {path}");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("*"),
        "GET {path}"
    );
    assert!(r.header("cache-control").is_some(), "GET {path}");
    text(&r).to_string()
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

#[tokio::test]
async fn pages_and_assets_are_served_with_their_types() {
    let gw = start(test_config(1)).await;

    let index = served(&gw, "/", HTML).await;
    assert!(index.contains("/assets/index.js"), "{index}");

    let watch = served(&gw, "/watch/demo-1.a_b", HTML).await;
    assert!(
        watch.contains(r#"data-endpoint="/whep/demo-1.a_b""#),
        "the player names its WHEP endpoint: {watch}"
    );
    assert!(watch.contains("/assets/watch.js"), "{watch}");

    let publish = served(&gw, "/publish/demo", HTML).await;
    assert!(
        publish.contains(r#"data-endpoint="/whip/demo""#),
        "the publisher names its WHIP endpoint: {publish}"
    );
    assert!(publish.contains("/assets/publish.js"), "{publish}");

    // The player's script posts to the endpoint the page names, as a WHEP client.
    let player = served(&gw, "/assets/watch.js", JS).await;
    assert!(player.contains("dataset.endpoint"), "{player}");
    assert!(player.contains("role: 'whep'"), "{player}");
    let common = served(&gw, "/assets/common.js", JS).await;
    assert!(common.contains("'application/sdp'"), "{common}");
    for js in ["index.js", "publish.js"] {
        served(&gw, &format!("/assets/{js}"), JS).await;
    }
    served(&gw, "/assets/style.css", CSS).await;

    // Assets revalidate by ETag.
    let first = get(&gw, "/assets/watch.js", &[]).await;
    let etag = first.header("etag").expect("an ETag").to_string();
    let again = get(&gw, "/assets/watch.js", &[("if-none-match", &etag)]).await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());

    assert_eq!(get(&gw, "/assets/missing.js", &[]).await.status, 404);
    gw.shutdown().await;
}

#[tokio::test]
async fn invalid_stream_names_have_no_page() {
    let gw = start(test_config(1)).await;
    for path in [
        "/watch/bad%20name",
        "/publish/a%2Fb",
        "/watch/%3Cscript%3E",
        "/publish/caf%C3%A9",
    ] {
        let r = get(&gw, path, &[]).await;
        assert_eq!(r.status, 404, "GET {path}");
        assert_eq!(
            r.header("content-type"),
            Some("application/problem+json"),
            "GET {path}"
        );
    }
    let long = format!("/watch/{}", "a".repeat(129));
    assert_eq!(get(&gw, &long, &[]).await.status, 404);
    let longest = format!("/watch/{}", "a".repeat(128));
    assert_eq!(get(&gw, &longest, &[]).await.status, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn pages_stay_public_when_auth_is_on() {
    let mut c = test_config(1);
    c.auth = toml::from_str(&format!("enabled = true\nadmin_tokens = [\"{ADMIN}\"]"))
        .expect("[auth] parses");
    let gw = start(c).await;

    served(&gw, "/", HTML).await;
    served(&gw, "/watch/demo", HTML).await;
    served(&gw, "/publish/demo", HTML).await;
    served(&gw, "/assets/common.js", JS).await;
    served(&gw, "/assets/style.css", CSS).await;

    // What the pages call is still guarded.
    let r = get(&gw, "/api/streams", &[]).await;
    assert_eq!(r.status, 401, "{}", text(&r));
    let bearer = format!("Bearer {ADMIN}");
    let r = get(&gw, "/api/streams", &[("authorization", &bearer)]).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    // Paths that are no page stay behind auth, as before the pages existed.
    assert_eq!(get(&gw, "/no-such-route", &[]).await.status, 401);
    gw.shutdown().await;
}
