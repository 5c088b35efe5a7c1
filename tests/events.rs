//! The WHEP server-sent events extension as a player sees it, over real HTTP against a running
//! gateway with real str0m publishers and viewers: the 201's `Link`, creating an event stream
//! (and the 400 for an event the gateway does not offer), the long pull's framing and events as
//! publishers and viewers come and go, events kept while no long pull is open, the ends of an
//! event stream, who may use it with auth on, `reconnect` at shutdown, and a long pull over
//! HTTP/3.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::sse::open;
use common::*;
use serde_json::{json, Value};
use str0m::media::{Direction, MediaKind};
use str0m::Rtc;
use wishcast::client::h3::H3Client;
use wishcast::client::http::{request, request_tls, Response};
use wishcast::client::{ClientOptions, Peer, PeerOptions, VideoCodec};
use wishcast::{Config, Gateway};

const H264: Option<VideoCodec> = Some(VideoCodec::H264);
const REL: &str = "urn:ietf:params:whep:ext:core:server-sent-events";
const EVENTS: &str = "active,inactive,layers,reconnect,viewercount";
const JSON: &str = "application/json";
const PROBLEM: &str = "application/problem+json";

async fn send(method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> Response {
    request(method, url, headers, body.as_bytes().to_vec())
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: no HTTP response: {e}"))
}

/// POSTs `events` (a JSON body) to a viewer's event-stream entry point.
async fn create(viewer: &Peer, events: &str, token: Option<&str>) -> Response {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", JSON)];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    send(
        "POST",
        &format!("{}/sse", viewer.location()),
        &headers,
        events,
    )
    .await
}

/// Creates an event stream for `events` and returns its absolute URL.
async fn event_stream(gw: &Gateway, viewer: &Peer, events: &str) -> String {
    let r = create(viewer, events, None).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let location = r.header("location").expect("Location").to_string();
    let session_path = viewer
        .location()
        .strip_prefix(&format!("http://{}", gw.http_addr()))
        .expect("session URL on the gateway");
    let id = location
        .strip_prefix(&format!("{session_path}/sse/"))
        .unwrap_or_else(|| panic!("{location} is under {session_path}/sse/"));
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{location}"
    );
    format!("http://{}{location}", gw.http_addr())
}

fn count(n: usize) -> Value {
    json!({ "viewercount": n })
}

async fn live_viewer(url: &str, opts: ClientOptions) -> Peer {
    let v = Peer::play(url, opts).await.expect("play accepted");
    v.wait_connected(Duration::from_secs(10))
        .await
        .expect("viewer connects");
    v
}

/// A real str0m recvonly offer with video and audio.
fn offer() -> String {
    str0m_offer(
        Rtc::builder().build(Instant::now()),
        Direction::RecvOnly,
        &[MediaKind::Video, MediaKind::Audio],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_201_links_the_event_streams_and_unknown_events_are_refused() {
    let mut c = test_config(1);
    // The sessions posted here have no peer behind them: they must outlive the test.
    c.timeouts.connect_secs = 60.0;
    let gw = start(c).await;
    let feed = LiveFeed::start(&whip(&gw, "link"), H264, true, 0).await;
    let r = send(
        "POST",
        &whep(&gw, "link"),
        &[("content-type", "application/sdp")],
        &offer(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let location = r.header("location").expect("Location");
    let expected = format!("<{location}/sse>; rel=\"{REL}\"; events=\"{EVENTS}\"");
    let links = r.header_all("link");
    assert_eq!(
        links.iter().filter(|l| l.contains(REL)).collect::<Vec<_>>(),
        vec![&expected.as_str()],
        "{links:?}"
    );
    let expose = r.header("access-control-expose-headers").unwrap_or("");
    assert!(expose.contains("Link"), "{expose}");
    // A publisher's 201 has none.
    let p = send(
        "POST",
        &whip(&gw, "link-2"),
        &[("content-type", "application/sdp")],
        &offer().replace("a=recvonly", "a=sendonly"),
    )
    .await;
    assert_eq!(p.status, 201, "{}", p.text());
    assert!(p.header_all("link").iter().all(|l| !l.contains(REL)));

    let entry = format!("http://{}{location}/sse", gw.http_addr());
    let post = |body: &'static str, ct: &'static str| {
        let entry = entry.clone();
        async move { send("POST", &entry, &[("content-type", ct)], body).await }
    };
    let r = post(r#"["viewercount","nope"]"#, JSON).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.header("content-type"), Some(PROBLEM));
    let problem: Value = serde_json::from_slice(&r.body).expect("problem+json");
    assert_eq!(problem["status"], 400);
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("nope"), "{detail}");
    assert!(
        !detail.contains("viewercount;"),
        "only the bad name: {detail}"
    );
    // scte35 is in the spec but not offered here.
    assert_eq!(post(r#"["scte35"]"#, JSON).await.status, 400);
    assert_eq!(post(r#"{"events":[]}"#, JSON).await.status, 400);
    assert_eq!(post(r#"["active""#, JSON).await.status, 400);
    assert_eq!(post(r#"["active"]"#, "text/plain").await.status, 415);
    // Nothing was created: the session still has room for its four.
    for _ in 0..4 {
        assert_eq!(post("[]", JSON).await.status, 201);
    }
    let r = post("", JSON).await;
    assert_eq!(r.status, 409, "a fifth: {}", r.text());
    assert_eq!(r.header("content-type"), Some(PROBLEM));
    // An unknown session, or a publisher's, has no event streams.
    let other = format!("{}/0123456789abcdef0123456789abcdef/sse", whep(&gw, "link"));
    assert_eq!(send("POST", &other, &[], "").await.status, 404);
    let publisher_sse = format!(
        "http://{}{}/sse",
        gw.http_addr(),
        p.header("location").expect("Location")
    );
    assert_eq!(send("POST", &publisher_sse, &[], "").await.status, 404);
    drop(feed);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_pull_follows_publishers_and_viewers() {
    let gw = start(test_config(2)).await;
    let feed = LiveFeed::start(&whip(&gw, "follow"), H264, true, 0).await;
    let first = live_viewer(&whep(&gw, "follow"), opts(H264, true).into()).await;
    let url = event_stream(&gw, &first, r#"["active","inactive","viewercount"]"#).await;
    let mut sse = open(&url, None).await;
    assert_eq!(sse.status, 200);
    assert_eq!(sse.content_type.as_deref(), Some("text/event-stream"));
    assert_eq!(sse.cache_control.as_deref(), Some("no-cache"));
    sse.expect("active", json!({})).await;
    sse.expect("viewercount", count(1)).await;

    let second = live_viewer(&whep(&gw, "follow"), opts(H264, true).into()).await;
    sse.expect("viewercount", count(2)).await;

    // The publisher leaves; the viewers wait for the next one.
    let publisher = feed.stop().await;
    assert_eq!(publisher.delete().await.expect("DELETE"), 200);
    sse.expect("inactive", json!({})).await;
    let feed = LiveFeed::start(&whip(&gw, "follow"), H264, true, 0).await;
    sse.expect("active", json!({})).await;

    // The second viewer leaves.
    assert_eq!(second.delete().await.expect("DELETE"), 200);
    sse.expect("viewercount", count(1)).await;

    // Ending the WHEP session ends its event stream: the open long pull, and later ones.
    let session = first.location().to_string();
    assert_eq!(first.delete().await.expect("DELETE"), 200);
    sse.expect_end(Duration::from_secs(5)).await;
    assert_eq!(send("GET", &url, &[], "").await.status, 404);
    assert_eq!(
        send("POST", &format!("{session}/sse"), &[], "")
            .await
            .status,
        404
    );
    drop(feed);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_wait_for_the_next_long_pull_and_delete_ends_one() {
    let gw = start(test_config(2)).await;
    let feed = LiveFeed::start(&whip(&gw, "queue"), H264, true, 0).await;
    let viewer = live_viewer(&whep(&gw, "queue"), opts(H264, true).into()).await;
    let url = event_stream(&gw, &viewer, "").await;
    // No long pull yet: the publisher goes and another comes.
    let publisher = feed.stop().await;
    assert_eq!(publisher.delete().await.expect("DELETE"), 200);
    let feed = LiveFeed::start(&whip(&gw, "queue"), H264, true, 0).await;
    let mut sse = open(&url, None).await;
    assert_eq!(sse.status, 200);
    sse.expect("active", json!({})).await;
    sse.expect("inactive", json!({})).await;
    sse.expect("active", json!({})).await;
    sse.expect("viewercount", count(1)).await;

    // A second GET takes over from the first, which ends.
    let mut newer = open(&url, None).await;
    assert_eq!(newer.status, 200);
    sse.expect_end(Duration::from_secs(5)).await;

    // DELETE: the open long pull ends, later ones are 404.
    let r = send("DELETE", &url, &[], "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    newer.expect_end(Duration::from_secs(5)).await;
    let r = send("GET", &url, &[], "").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some(PROBLEM));
    assert_eq!(send("DELETE", &url, &[], "").await.status, 404);
    // The WHEP session itself is untouched.
    assert!(viewer.is_connected());
    drop(feed);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_tells_open_long_pulls_to_reconnect() {
    let gw = start(test_config(1)).await;
    let feed = LiveFeed::start(&whip(&gw, "bye"), H264, true, 0).await;
    let viewer = live_viewer(&whep(&gw, "bye"), opts(H264, true).into()).await;
    let url = event_stream(&gw, &viewer, "").await;
    let mut sse = open(&url, None).await;
    assert_eq!(sse.status, 200);
    sse.expect("active", json!({})).await;
    sse.expect("viewercount", count(1)).await;
    let shutdown = tokio::spawn(gw.shutdown());
    sse.expect("reconnect", json!({})).await;
    sse.expect_end(Duration::from_secs(5)).await;
    shutdown.await.expect("shutdown");
    drop((feed, viewer));
}

const PLAYER: &str = "play-ev-1f4a9c";
const OTHER: &str = "play-ev-7b2d30";
const PUBLISHER: &str = "pub-ev-93c0e1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_viewers_token_reaches_its_event_streams() {
    let mut c: Config = test_config(1);
    c.auth = toml::from_str(&format!(
        r#"
enabled = true
[[streams]]
pattern = "private"
publish_tokens = ["{PUBLISHER}"]
play_tokens = ["{PLAYER}", "{OTHER}"]
"#
    ))
    .expect("[auth] parses");
    let gw = start(c).await;
    let with = |token: &str, video| ClientOptions {
        bearer: Some(token.to_string()),
        ..ClientOptions::from(PeerOptions {
            video,
            audio: true,
            ..PeerOptions::default()
        })
    };
    let publisher = connected_publisher(&whip(&gw, "private"), with(PUBLISHER, H264)).await;
    let viewer = live_viewer(&whep(&gw, "private"), with(PLAYER, H264)).await;
    assert_eq!(create(&viewer, "[]", None).await.status, 401);
    let r = create(&viewer, "[]", Some(OTHER)).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = create(&viewer, "[]", Some(PLAYER)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let url = format!(
        "http://{}{}",
        gw.http_addr(),
        r.header("location").expect("Location")
    );
    assert_eq!(open(&url, None).await.status, 401);
    assert_eq!(open(&url, Some(OTHER)).await.status, 403);
    let other = format!("Bearer {OTHER}");
    assert_eq!(
        send("DELETE", &url, &[("authorization", &other)], "")
            .await
            .status,
        403
    );
    let mut sse = open(&url, Some(PLAYER)).await;
    assert_eq!(sse.status, 200);
    sse.expect("active", json!({})).await;
    drop((publisher, viewer));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_pull_over_http3() {
    let mut c = test_config(1);
    c.tls.self_signed = true;
    let gw = start(c).await;
    let roots = gw.tls_identity().expect("TLS on").certs.clone();
    let base = format!("https://localhost:{}", gw.http_addr().port());
    let h3 = Arc::new(H3Client::new(&roots).expect("h3 client"));
    let over_h3 = ClientOptions {
        h3: Some(h3.clone()),
        ..ClientOptions::from(opts(H264, true))
    };
    let publisher = connected_publisher(&format!("{base}/whip/h3"), over_h3.clone()).await;
    let viewer = live_viewer(&format!("{base}/whep/h3"), over_h3).await;
    let r = h3
        .request(
            "POST",
            &format!("{}/sse", viewer.location()),
            &[("content-type", JSON)],
            br#"["active","viewercount"]"#.to_vec(),
        )
        .await
        .expect("POST over HTTP/3");
    assert_eq!(r.status, 201, "{}", r.text());
    let url = format!("{base}{}", r.header("location").expect("Location"));
    // The h3 client reads whole bodies: the long pull is read once DELETE has ended it.
    let pull = {
        let (h3, url) = (h3.clone(), url.clone());
        tokio::spawn(async move { h3.request("GET", &url, &[], Vec::new()).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = request_tls(&roots, "DELETE", &url, &[], Vec::new())
        .await
        .expect("DELETE over HTTPS");
    assert_eq!(r.status, 200);
    let r = pull.await.expect("task").expect("GET over HTTP/3");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert_eq!(
        r.text(),
        "event: active\ndata: {}\n\nevent: viewercount\ndata: {\"viewercount\":1}\n\n"
    );
    drop((publisher, viewer));
    h3.close().await;
    gw.shutdown().await;
}
