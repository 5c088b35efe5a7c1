//! The HTTP contract of WHIP (RFC 9725) and WHEP (draft-ietf-wish-whep), one test per rule:
//! exact statuses, headers and problem+json bodies as a client sees them, over real HTTP
//! against a running gateway. Sessions that must stay up are real str0m peers; malformed or
//! unusual offers are real str0m offers, edited where no encoder would produce them.

mod common;

use std::time::{Duration, Instant};

use common::*;
use str0m::media::{Direction, MediaKind};
use str0m::Rtc;
use wishcast::client::http::{request, Response};
use wishcast::client::{Peer, VideoCodec};
use wishcast::config::IceServer;
use wishcast::{Config, Gateway};

const SDP: &str = "application/sdp";
const SDPFRAG: &str = "application/trickle-ice-sdpfrag";
const PROBLEM: &str = "application/problem+json";

const STUN_URL: &str = "stun:stun.example.net:3478";
const TURN_URL: &str = "turn:turn.example.net:3478?transport=udp";
const TURN_USER: &str = "wishcast-user";
const TURN_PASS: &str = "s3cret-credential";

/// A trickled host candidate nobody listens on; the gateway just adds it to its checklist.
const CANDIDATE: &str = "a=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host";
/// An mDNS candidate, as browsers send to hide local addresses; the gateway cannot resolve it.
const MDNS_CANDIDATE: &str =
    "a=candidate:2 1 udp 2130706431 0d5a3a0c-6f4e-4bd1-9f4b-1c2d3e4f5a6b.local 50001 typ host";

/// The test gateway with one STUN and one TURN server, and a connect timeout long enough that
/// sessions posted without a peer behind them outlive their test.
fn contract_config() -> Config {
    let mut c = test_config(2);
    c.ice_servers = vec![
        IceServer {
            url: STUN_URL.into(),
            username: None,
            credential: None,
            secret: None,
            ttl_secs: 86_400,
        },
        IceServer {
            url: TURN_URL.into(),
            username: Some(TURN_USER.into()),
            credential: Some(TURN_PASS.into()),
            secret: None,
            ttl_secs: 86_400,
        },
    ];
    c.timeouts.connect_secs = 60.0;
    c
}

/// A browser-like offer with str0m's default codecs: video and audio in `dir`.
fn offer(dir: Direction) -> String {
    str0m_offer(
        Rtc::builder().build(Instant::now()),
        dir,
        &[MediaKind::Video, MediaKind::Audio],
    )
}

/// One request that must complete at the HTTP level (any status).
async fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Vec<u8>>,
) -> Response {
    request(method, url, headers, body.into())
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: no HTTP response: {e}"))
}

async fn post_sdp(url: &str, sdp: &str) -> Response {
    send("POST", url, &[("content-type", SDP)], sdp).await
}

async fn patch(url: &str, if_match: Option<&str>, fragment: &str) -> Response {
    let mut headers = vec![("content-type", SDPFRAG)];
    if let Some(tag) = if_match {
        headers.push(("if-match", tag));
    }
    send("PATCH", url, &headers, fragment).await
}

/// The absolute URL of a `Location` the gateway returned (a path).
fn session_url(gw: &Gateway, location: &str) -> String {
    assert!(location.starts_with('/'), "Location is a path: {location}");
    format!("http://{}{location}", gw.http_addr())
}

/// A publisher that is connected (ICE + DTLS), so its session stays until it leaves.
async fn live_publisher(gw: &Gateway, stream: &str) -> Peer {
    let p = Peer::publish(&whip(gw, stream), opts(Some(VideoCodec::H264), true))
        .await
        .expect("publish accepted");
    p.wait_connected(Duration::from_secs(10))
        .await
        .expect("publisher connects");
    p
}

async fn live_viewer(gw: &Gateway, stream: &str) -> Peer {
    let v = Peer::play(&whep(gw, stream), opts(Some(VideoCodec::H264), true))
        .await
        .expect("play accepted");
    v.wait_connected(Duration::from_secs(10))
        .await
        .expect("viewer connects");
    v
}

/// What a client checks on an error: the status, `application/problem+json` (RFC 9457) and a
/// body whose `status` repeats the HTTP status and whose `detail` says what went wrong.
fn assert_problem(r: &Response, status: u16, what: &str) {
    assert_eq!(r.status, status, "{what}: status (body {})", r.text());
    assert_eq!(
        r.header("content-type"),
        Some(PROBLEM),
        "{what}: problem+json content type"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{what}: JSON body: {e}"));
    assert_eq!(
        json["status"].as_u64(),
        Some(u64::from(status)),
        "{what}: problem status: {json}"
    );
    let detail = json["detail"].as_str().unwrap_or_default();
    assert!(!detail.is_empty(), "{what}: problem detail: {json}");
}

/// `Retry-After` as delay-seconds (RFC 9110 §10.2.3).
fn retry_after(r: &Response, what: &str) -> u32 {
    let v = r
        .header("retry-after")
        .unwrap_or_else(|| panic!("{what}: Retry-After present"));
    v.parse()
        .unwrap_or_else(|_| panic!("{what}: Retry-After {v:?} is integer seconds"))
}

/// A strong entity-tag (RFC 9110 §8.8.3): quoted, no `W/`.
fn assert_strong_etag(tag: &str, what: &str) {
    assert!(
        tag.len() > 2
            && tag.starts_with('"')
            && tag.ends_with('"')
            && !tag[1..tag.len() - 1].contains('"'),
        "{what}: strong entity-tag, got {tag:?}"
    );
}

/// The comma-separated tokens of a header (e.g. `Access-Control-Allow-Methods`), lower-case.
fn tokens(r: &Response, name: &str) -> Vec<String> {
    r.header_all(name)
        .iter()
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// The m-sections of an SDP, each from its `m=` line to the next.
fn media_sections(sdp: &str) -> Vec<Vec<&str>> {
    let mut out: Vec<Vec<&str>> = Vec::new();
    for line in sdp.lines().map(|l| l.trim_end_matches('\r')) {
        if line.starts_with("m=") {
            out.push(Vec::new());
        }
        if let Some(s) = out.last_mut() {
            s.push(line);
        }
    }
    out
}

/// Value of the first `a={name}:` line.
fn attribute<'a>(sdp: &'a str, name: &str) -> Option<&'a str> {
    let prefix = format!("a={name}:");
    sdp.lines()
        .map(|l| l.trim_end_matches('\r'))
        .find_map(|l| l.strip_prefix(prefix.as_str()))
}

/// Every media section is active and has exactly the direction `dir`.
fn assert_direction(answer: &str, dir: &str) {
    let sections = media_sections(answer);
    assert!(!sections.is_empty(), "answer has media: {answer}");
    for s in sections {
        let m = s[0];
        assert_ne!(m.split(' ').nth(1), Some("0"), "no rejected m-line: {m}");
        let dirs: Vec<&str> = s
            .iter()
            .copied()
            .filter(|l| {
                matches!(
                    *l,
                    "a=sendonly" | "a=recvonly" | "a=sendrecv" | "a=inactive"
                )
            })
            .collect();
        let want = format!("a={dir}");
        assert_eq!(dirs, vec![want.as_str()], "{m} is {dir}");
    }
}

/// `/{prefix}/{stream}/{32 lower-case hex}`.
fn assert_location(location: &str, prefix: &str, stream: &str) {
    let id = location
        .strip_prefix(&format!("/{prefix}/{stream}/"))
        .unwrap_or_else(|| panic!("Location {location:?} is under /{prefix}/{stream}/"));
    assert!(
        id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "session id is 32 hex digits: {location:?}"
    );
}

async fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---- POST: session setup -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9725_4_2_post_offer_is_201_with_location_etag_and_sdp() {
    let gw = start(contract_config()).await;
    let r = post_sdp(&whip(&gw, "cam-1"), &offer(Direction::SendOnly)).await;
    assert_eq!(r.status, 201, "201 Created: {}", r.text());
    assert_eq!(r.header("content-type"), Some(SDP));
    let location = r.header("location").expect("Location");
    assert_location(location, "whip", "cam-1");
    assert_strong_etag(r.header("etag").expect("ETag"), "201");
    let answer = r.text();
    assert!(answer.starts_with("v=0"), "the body is SDP: {answer}");
    assert_eq!(media_sections(&answer).len(), 2, "video and audio answered");
    assert_direction(&answer, "recvonly");
    assert_eq!(gw.session_count(), 1);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9725_4_6_201_has_one_ice_server_link_per_configured_server() {
    let gw = start(contract_config()).await;
    let r = post_sdp(&whip(&gw, "s"), &offer(Direction::SendOnly)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        r.header_all("link"),
        vec![
            format!("<{STUN_URL}>; rel=\"ice-server\""),
            format!(
                "<{TURN_URL}>; rel=\"ice-server\"; username=\"{TURN_USER}\"; \
                 credential=\"{TURN_PASS}\"; credential-type=\"password\""
            ),
        ],
        "one Link per ice_servers entry, TURN with its credentials"
    );
    // WHEP §4.7: the same for players, who also get the server-sent events entry point
    // (tests/events.rs) and the layer selection extension (tests/simulcast.rs) after them.
    let v = post_sdp(&whep(&gw, "s"), &offer(Direction::RecvOnly)).await;
    assert_eq!(v.status, 201, "{}", v.text());
    let links = v.header_all("link");
    let n = links.len();
    assert!(n >= 2, "{links:?}");
    assert_eq!(links[..n - 2], r.header_all("link")[..]);
    assert!(
        links[n - 2].contains("rel=\"urn:ietf:params:whep:ext:core:server-sent-events\""),
        "{links:?}"
    );
    assert!(
        links[n - 1].contains("rel=\"urn:ietf:params:whep:ext:core:layer\""),
        "{links:?}"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_4_2_post_offer_is_201_with_sendonly_answer_location_and_etag() {
    let gw = start(contract_config()).await;
    let _publisher = live_publisher(&gw, "show").await;
    let r = post_sdp(&whep(&gw, "show"), &offer(Direction::RecvOnly)).await;
    assert_eq!(r.status, 201, "201 Created: {}", r.text());
    assert_eq!(r.header("content-type"), Some(SDP));
    assert_location(r.header("location").expect("Location"), "whep", "show");
    assert_strong_etag(r.header("etag").expect("ETag"), "201");
    assert_direction(&r.text(), "sendonly");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9725_4_2_other_or_missing_content_type_is_415() {
    let gw = start(contract_config()).await;
    let sdp = offer(Direction::SendOnly);
    let plain = send(
        "POST",
        &whip(&gw, "s"),
        &[("content-type", "text/plain")],
        sdp.as_str(),
    )
    .await;
    assert_problem(&plain, 415, "text/plain");
    assert_eq!(plain.header("accept-post"), Some(SDP), "415 names the type");
    let missing = send("POST", &whip(&gw, "s"), &[], sdp.as_str()).await;
    assert_problem(&missing, 415, "no Content-Type");
    let whep_json = send(
        "POST",
        &whep(&gw, "s"),
        &[("content-type", "application/json")],
        "{}",
    )
    .await;
    assert_problem(&whep_json, 415, "WHEP application/json");
    // Parameters do not change the media type.
    let r = send(
        "POST",
        &whip(&gw, "s"),
        &[("content-type", "Application/SDP; charset=utf-8")],
        sdp.as_str(),
    )
    .await;
    assert_eq!(
        r.status,
        201,
        "application/sdp with a parameter: {}",
        r.text()
    );
    assert_eq!(
        gw.session_count(),
        1,
        "only the well-typed POST made a session"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9725_4_2_malformed_sdp_is_400() {
    let gw = start(contract_config()).await;
    assert_problem(&post_sdp(&whip(&gw, "s"), "hello").await, 400, "hello");
    assert_problem(&post_sdp(&whip(&gw, "s"), "").await, 400, "empty body");
    let _publisher = live_publisher(&gw, "s").await;
    assert_problem(&post_sdp(&whep(&gw, "s"), "hello").await, 400, "WHEP hello");
    assert_eq!(gw.session_count(), 1);
    gw.shutdown().await;
}

// ---- 422: offers the gateway cannot serve as a whole (RFC 9725 §4.4) -------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9725_4_4_3_offer_without_a_forwardable_codec_is_422() {
    let gw = start(contract_config()).await;
    let h265 = str0m_offer(
        Rtc::builder()
            .clear_codecs()
            .enable_h265(true)
            .build(Instant::now()),
        Direction::SendOnly,
        &[MediaKind::Video],
    );
    assert!(h265.contains("H265/90000"), "an H265 offer: {h265}");
    assert_problem(&post_sdp(&whip(&gw, "s"), &h265).await, 422, "H265 only");
    assert_eq!(gw.session_count(), 0);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9725_4_4_2_two_video_tracks_are_422() {
    let gw = start(contract_config()).await;
    let two = str0m_offer(
        Rtc::builder().build(Instant::now()),
        Direction::SendOnly,
        &[MediaKind::Video, MediaKind::Video, MediaKind::Audio],
    );
    assert_eq!(
        two.lines().filter(|l| l.starts_with("m=video")).count(),
        2,
        "two video m-lines: {two}"
    );
    assert_problem(&post_sdp(&whip(&gw, "s"), &two).await, 422, "two video");
    assert_eq!(gw.session_count(), 0);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9725_4_2_recvonly_whip_offer_is_422() {
    let gw = start(contract_config()).await;
    let r = post_sdp(&whip(&gw, "s"), &offer(Direction::RecvOnly)).await;
    assert_problem(&r, 422, "recvonly WHIP offer");
    assert_eq!(gw.session_count(), 0);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_4_2_5_sendonly_whep_offer_is_422() {
    let gw = start(contract_config()).await;
    let _publisher = live_publisher(&gw, "s").await;
    let r = post_sdp(&whep(&gw, "s"), &offer(Direction::SendOnly)).await;
    assert_problem(&r, 422, "sendonly WHEP offer");
    assert_eq!(gw.session_count(), 1, "only the publisher");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9725_4_4_4_setup_passive_is_422() {
    let gw = start(contract_config()).await;
    let original = offer(Direction::SendOnly);
    assert!(original.contains("a=setup:actpass"));
    let passive = original.replace("a=setup:actpass", "a=setup:passive");
    assert_problem(
        &post_sdp(&whip(&gw, "s"), &passive).await,
        422,
        "setup:passive",
    );
    assert_eq!(gw.session_count(), 0);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9725_4_4_4_setup_active_is_accepted() {
    let gw = start(contract_config()).await;
    let active = offer(Direction::SendOnly).replace("a=setup:actpass", "a=setup:active");
    let r = post_sdp(&whip(&gw, "s"), &active).await;
    assert_eq!(
        r.status,
        201,
        "a client may be the DTLS client: {}",
        r.text()
    );
    let answer = r.text();
    for s in media_sections(&answer) {
        assert!(
            s.contains(&"a=setup:passive"),
            "the gateway answers active with passive: {answer}"
        );
    }
    gw.shutdown().await;
}

/// RFC 5763 §5 recommends the answerer take `active`: the gateway is the DTLS client and its
/// own retransmission schedule drives the handshake (every media test here runs on it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc5763_5_an_actpass_offer_is_answered_active() {
    let gw = start(contract_config()).await;
    let r = post_sdp(&whip(&gw, "s"), &offer(Direction::SendOnly)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let answer = r.text();
    let sections = media_sections(&answer);
    assert!(!sections.is_empty());
    for s in sections {
        assert!(
            s.contains(&"a=setup:active") && !s.contains(&"a=setup:passive"),
            "the gateway answers actpass with active: {answer}"
        );
    }
    gw.shutdown().await;
}

// ---- 409, 413, 503 ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9725_4_2_second_publisher_on_a_live_stream_is_409() {
    let gw = start(contract_config()).await;
    let _publisher = live_publisher(&gw, "s").await;
    let r = post_sdp(&whip(&gw, "s"), &offer(Direction::SendOnly)).await;
    assert_problem(&r, 409, "second publisher");
    assert_eq!(gw.session_count(), 1);
    // Another stream is free.
    let other = post_sdp(&whip(&gw, "t"), &offer(Direction::SendOnly)).await;
    assert_eq!(other.status, 201, "{}", other.text());
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_4_2_8_play_before_a_publisher_is_409_with_retry_after() {
    let config = contract_config();
    let secs = config.http.retry_after_secs;
    let gw = start(config).await;
    let r = post_sdp(&whep(&gw, "s"), &offer(Direction::RecvOnly)).await;
    assert_problem(&r, 409, "no publisher");
    assert_eq!(retry_after(&r, "409"), secs);
    assert_eq!(gw.session_count(), 0);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9110_15_5_14_body_over_max_body_bytes_is_413() {
    let mut config = contract_config();
    config.http.max_body_bytes = 4096;
    let gw = start(config).await;
    let big = format!("v=0\r\n{}", "a=x-padding:0123456789abcdef\r\n".repeat(350));
    assert!(big.len() > 10_000);
    assert_problem(&post_sdp(&whip(&gw, "s"), &big).await, 413, "WHIP 10 kB");
    assert_problem(&post_sdp(&whep(&gw, "s"), &big).await, 413, "WHEP 10 kB");
    // A small offer from a single-codec encoder still fits.
    let small = str0m_offer(
        Rtc::builder()
            .clear_codecs()
            .enable_vp8(true)
            .build(Instant::now()),
        Direction::SendOnly,
        &[MediaKind::Video],
    );
    assert!(small.len() < 4096, "{} bytes", small.len());
    let r = post_sdp(&whip(&gw, "s"), &small).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let url = session_url(&gw, r.header("location").expect("Location"));
    let etag = r.header("etag").expect("ETag");
    let frag = format!("{CANDIDATE}\r\n").repeat(200);
    assert_problem(&patch(&url, Some(etag), &frag).await, 413, "PATCH 10 kB");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9725_4_5_session_limit_is_503_with_retry_after() {
    let mut config = contract_config();
    config.limits.max_sessions = 1;
    let secs = config.http.retry_after_secs;
    let gw = start(config).await;
    let _publisher = live_publisher(&gw, "s").await;
    let viewer = post_sdp(&whep(&gw, "s"), &offer(Direction::RecvOnly)).await;
    assert_problem(&viewer, 503, "WHEP at the limit");
    assert_eq!(retry_after(&viewer, "WHEP 503"), secs);
    let publisher = post_sdp(&whip(&gw, "t"), &offer(Direction::SendOnly)).await;
    assert_problem(&publisher, 503, "WHIP at the limit");
    assert_eq!(retry_after(&publisher, "WHIP 503"), secs);
    assert_eq!(gw.session_count(), 1);
    gw.shutdown().await;
}

// ---- DELETE and unknown sessions -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9725_4_2_delete_is_200_and_the_session_is_gone() {
    let gw = start(contract_config()).await;
    let publisher = live_publisher(&gw, "s").await;
    let viewer = live_viewer(&gw, "s").await;
    assert_eq!(gw.session_count(), 2);
    for (peer, left) in [(viewer, 1), (publisher, 0)] {
        let url = peer.location().to_string();
        let etag = peer.etag().expect("ETag").to_string();
        let r = send("DELETE", &url, &[], Vec::new()).await;
        assert_eq!(r.status, 200, "DELETE {url}: {}", r.text());
        assert_eq!(gw.session_count(), left, "gone once the 200 is out");
        assert_problem(
            &send("DELETE", &url, &[], Vec::new()).await,
            404,
            "DELETE again",
        );
        assert_problem(
            &send("GET", &url, &[], Vec::new()).await,
            404,
            "GET after DELETE",
        );
        let frag = format!("{CANDIDATE}\r\n");
        assert_problem(
            &patch(&url, Some(&etag), &frag).await,
            404,
            "PATCH after DELETE",
        );
        peer.kill();
    }
    gw.shutdown().await;
}

/// A peer that ends its session itself (DTLS close_notify, as GStreamer's whepsrc does on
/// teardown) and then DELETEs it gets 200, however the two race; a second DELETE is 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9725_4_2_delete_after_the_peer_closed_its_session_is_200() {
    let gw = start(contract_config()).await;
    let _publisher = live_publisher(&gw, "s").await;
    let viewer = live_viewer(&gw, "s").await;
    let url = viewer.location().to_string();
    viewer.close();
    wait_until(
        "the shard removed the closed session",
        Duration::from_secs(5),
        || gw.session_count() == 1,
    )
    .await;
    let r = send("DELETE", &url, &[], Vec::new()).await;
    assert_eq!(r.status, 200, "DELETE after close_notify: {}", r.text());
    assert_problem(
        &send("DELETE", &url, &[], Vec::new()).await,
        404,
        "DELETE again",
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9725_4_2_unknown_session_urls_are_404() {
    let gw = start(contract_config()).await;
    let publisher = live_publisher(&gw, "s").await;
    let location = publisher.location().to_string();
    let id = location.rsplit('/').next().expect("id").to_string();
    let base = format!("http://{}", gw.http_addr());
    let random = format!("{:032x}", rand::random::<u128>());
    let urls = [
        format!("{base}/whip/s/{random}"),
        format!("{base}/whep/s/{random}"),
        format!("{base}/whip/s/not-a-session"),
        format!("{base}/whip/s/{}", "g".repeat(32)),
        // The real id under another stream or the other endpoint, or spelled differently.
        format!("{base}/whip/t/{id}"),
        format!("{base}/whep/s/{id}"),
        format!("{base}/whip/s/{}", id.to_ascii_uppercase()),
    ];
    let frag = format!("{CANDIDATE}\r\n");
    for url in &urls {
        assert_problem(&send("GET", url, &[], Vec::new()).await, 404, url);
        assert_problem(&send("DELETE", url, &[], Vec::new()).await, 404, url);
        assert_problem(&patch(url, Some("*"), &frag).await, 404, url);
    }
    assert_eq!(
        gw.session_count(),
        1,
        "none of them touched the real session"
    );
    let r = send("GET", &location, &[], Vec::new()).await;
    assert_eq!(r.status, 204);
    gw.shutdown().await;
}

// ---- PATCH: trickle ICE (RFC 9725 §4.3.1, §4.3.2) --------------------------------------------

/// A WHIP session created from a real offer, before any connectivity: when clients trickle.
struct Posted {
    url: String,
    etag: String,
    /// The offer, for its ICE credentials.
    offer: String,
}

async fn posted_session(gw: &Gateway) -> Posted {
    let offer = offer(Direction::SendOnly);
    let r = post_sdp(&whip(gw, "s"), &offer).await;
    assert_eq!(r.status, 201, "{}", r.text());
    Posted {
        url: session_url(gw, r.header("location").expect("Location")),
        etag: r.header("etag").expect("ETag").to_string(),
        offer,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9725_4_3_2_trickle_patch_is_204_without_body_or_etag() {
    let gw = start(contract_config()).await;
    let Posted { url, etag, .. } = posted_session(&gw).await;
    let r = patch(&url, Some(&etag), &format!("{CANDIDATE}\r\n")).await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(r.body.is_empty(), "no body");
    assert_eq!(r.header("etag"), None, "no ETag on a trickle response");
    // End of candidates alone is a trickle too.
    let r = patch(&url, Some(&etag), "a=end-of-candidates\r\n").await;
    assert_eq!(r.status, 204, "{}", r.text());
    gw.shutdown().await;
}

/// RFC 8840 fragments repeat the current `ice-ufrag`/`ice-pwd` (RFC 9725's trickle example
/// does): only changed credentials are an ICE restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9725_4_3_2_trickle_with_the_current_credentials_is_204() {
    let gw = start(contract_config()).await;
    let Posted { url, etag, offer } = posted_session(&gw).await;
    let ufrag = attribute(&offer, "ice-ufrag").expect("offer ufrag");
    let pwd = attribute(&offer, "ice-pwd").expect("offer pwd");
    let mid = attribute(&offer, "mid").expect("offer mid");
    let m = offer.lines().find(|l| l.starts_with("m=")).expect("m-line");
    let frag = format!(
        "{m}\r\na=mid:{mid}\r\na=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\n{CANDIDATE}\r\na=end-of-candidates\r\n"
    );
    let r = patch(&url, Some(&etag), &frag).await;
    assert_eq!(r.status, 204, "a trickle, not a restart: {}", r.text());
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), None);
    let again = patch(&url, Some(&etag), &format!("{CANDIDATE}\r\n")).await;
    assert_eq!(again.status, 204, "the ETag is unchanged: {}", again.text());
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9725_4_3_1_patch_without_if_match_is_428() {
    let gw = start(contract_config()).await;
    let Posted { url, .. } = posted_session(&gw).await;
    let r = patch(&url, None, &format!("{CANDIDATE}\r\n")).await;
    assert_problem(&r, 428, "no If-Match");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9725_4_3_1_patch_with_another_etag_is_412() {
    let gw = start(contract_config()).await;
    let Posted { url, .. } = posted_session(&gw).await;
    let r = patch(&url, Some("\"nope\""), &format!("{CANDIDATE}\r\n")).await;
    assert_problem(&r, 412, "If-Match \"nope\"");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9725_4_3_1_patch_with_another_content_type_is_415() {
    let gw = start(contract_config()).await;
    let Posted { url, etag, .. } = posted_session(&gw).await;
    let frag = format!("{CANDIDATE}\r\n");
    let sdp = send(
        "PATCH",
        &url,
        &[("content-type", SDP), ("if-match", &etag)],
        frag.as_str(),
    )
    .await;
    // SDP is what answers a counter-offer; this session has none waiting (RFC 9110 §15.5.10).
    assert_problem(&sdp, 409, "PATCH application/sdp");
    let text = send(
        "PATCH",
        &url,
        &[("content-type", "text/plain"), ("if-match", &etag)],
        frag.as_str(),
    )
    .await;
    assert_problem(&text, 415, "PATCH text/plain");
    // RFC 5789 §3.1: a 415 to a PATCH names the accepted type in Accept-Patch.
    assert_eq!(text.header("accept-patch"), Some(SDPFRAG));
    assert_eq!(text.header("accept-post"), None);
    let none = send("PATCH", &url, &[("if-match", &etag)], frag.as_str()).await;
    assert_problem(&none, 415, "PATCH without Content-Type");
    // A fragment that is not SDP at all is a 400.
    assert_problem(&patch(&url, Some(&etag), "hello").await, 400, "PATCH hello");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9725_4_3_2_mdns_candidate_is_ignored_silently() {
    let gw = start(contract_config()).await;
    let Posted { url, etag, .. } = posted_session(&gw).await;
    let only = patch(&url, Some(&etag), &format!("{MDNS_CANDIDATE}\r\n")).await;
    assert_eq!(only.status, 204, "{}", only.text());
    assert!(only.body.is_empty());
    let mixed = patch(
        &url,
        Some(&etag),
        &format!("{MDNS_CANDIDATE}\r\n{CANDIDATE}\r\na=end-of-candidates\r\n"),
    )
    .await;
    assert_eq!(mixed.status, 204, "{}", mixed.text());
    assert_eq!(gw.session_count(), 1);
    gw.shutdown().await;
}

// ---- PATCH: ICE restart (RFC 9725 §4.3.3) ----------------------------------------------------

fn restart_fragment(ufrag: &str) -> String {
    format!(
        "a=ice-options:trickle\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n\
         a=ice-ufrag:{ufrag}\r\na=ice-pwd:0123456789abcdefghijklmn\r\n{CANDIDATE}\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9725_4_3_3_ice_restart_is_200_with_new_credentials_and_a_new_etag() {
    let gw = start(contract_config()).await;
    let publisher = live_publisher(&gw, "s").await;
    let url = publisher.location().to_string();
    let old_etag = publisher.etag().expect("ETag on the 201").to_string();
    let old_ufrag = attribute(publisher.answer_sdp(), "ice-ufrag").expect("answer ufrag");

    let r = patch(&url, Some("*"), &restart_fragment("rst1")).await;
    assert_eq!(r.status, 200, "restart: {}", r.text());
    assert_eq!(r.header("content-type"), Some(SDPFRAG));
    let frag = r.text();
    let ufrag = attribute(&frag, "ice-ufrag").expect("a=ice-ufrag in the 200");
    assert_ne!(ufrag, old_ufrag, "new credentials: {frag}");
    assert!(
        attribute(&frag, "ice-pwd").is_some_and(|p| !p.is_empty()),
        "{frag}"
    );
    assert!(
        attribute(&frag, "candidate").is_some(),
        "candidates: {frag}"
    );
    let new_etag = r.header("etag").expect("new ETag").to_string();
    assert_strong_etag(&new_etag, "restart");
    assert_ne!(new_etag, old_etag, "a new ICE session, a new entity-tag");

    let trickle = format!("{CANDIDATE}\r\n");
    let stale = patch(&url, Some(&old_etag), &trickle).await;
    assert_problem(&stale, 412, "the ETag of the previous ICE session");
    let current = patch(&url, Some(&new_etag), &trickle).await;
    assert_eq!(current.status, 204, "{}", current.text());
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9725_4_3_3_failed_ice_restart_keeps_the_session() {
    let gw = start(contract_config()).await;
    let publisher = live_publisher(&gw, "s").await;
    let url = publisher.location().to_string();
    let etag = publisher.etag().expect("ETag").to_string();
    let frag = format!("{CANDIDATE}\r\n");
    for bad in [
        // New ufrag without a password.
        "a=ice-ufrag:rst2\r\n".to_string(),
        // Credentials shorter than RFC 8839 allows (4 and 22 characters).
        "a=ice-ufrag:r\r\na=ice-pwd:short\r\n".to_string(),
        // Characters outside ice-char.
        restart_fragment("not a ufrag"),
    ] {
        let r = patch(&url, Some("*"), &bad).await;
        assert!((400..500).contains(&r.status), "{bad:?}: {}", r.status);
        assert_problem(&r, r.status, &bad);
        let get = send("GET", &url, &[], Vec::new()).await;
        assert_eq!(get.status, 204, "the session survives a failed restart");
        assert_eq!(gw.session_count(), 1);
        // ...with its ICE session: the entity-tag is unchanged.
        let trickle = patch(&url, Some(&etag), &frag).await;
        assert_eq!(trickle.status, 204, "{}", trickle.text());
    }
    assert!(publisher.is_connected());
    gw.shutdown().await;
}

// ---- OPTIONS, GET, HEAD, CORS ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9725_4_2_options_is_200_with_accept_post_and_cors() {
    let gw = start(contract_config()).await;
    for url in [whip(&gw, "s"), whep(&gw, "s")] {
        let r = send("OPTIONS", &url, &[], Vec::new()).await;
        assert_eq!(r.status, 200, "OPTIONS {url}");
        assert_eq!(r.header("accept-post"), Some(SDP), "{url}");
        assert_eq!(r.header("access-control-allow-origin"), Some("*"), "{url}");
        let methods = tokens(&r, "access-control-allow-methods");
        assert!(methods.contains(&"post".to_string()), "{url}: {methods:?}");
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_cors_preflight_is_200_with_cors_headers() {
    let gw = start(contract_config()).await;
    let preflight = [
        ("origin", "https://player.example"),
        ("access-control-request-method", "POST"),
        ("access-control-request-headers", "content-type"),
    ];
    for url in [whip(&gw, "s"), whep(&gw, "s")] {
        let r = send("OPTIONS", &url, &preflight, Vec::new()).await;
        assert_eq!(r.status, 200, "preflight {url}");
        assert_eq!(r.header("access-control-allow-origin"), Some("*"), "{url}");
        assert!(tokens(&r, "access-control-allow-methods").contains(&"post".to_string()));
        assert!(
            tokens(&r, "access-control-allow-headers").contains(&"content-type".to_string()),
            "{url}: Content-Type may be sent"
        );
        assert_eq!(r.header("accept-post"), Some(SDP));
        // RFC 9725 §4.6: ICE servers SHOULD NOT be sent to a preflight.
        assert!(r.header_all("link").is_empty(), "no Link on a preflight");
    }
    // The session resource: PATCH with If-Match and DELETE from a browser.
    let publisher = live_publisher(&gw, "s").await;
    let r = send(
        "OPTIONS",
        publisher.location(),
        &[
            ("origin", "https://player.example"),
            ("access-control-request-method", "PATCH"),
            ("access-control-request-headers", "content-type, if-match"),
        ],
        Vec::new(),
    )
    .await;
    assert_eq!(r.status, 200, "session preflight");
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let methods = tokens(&r, "access-control-allow-methods");
    assert!(
        methods.contains(&"patch".to_string()) && methods.contains(&"delete".to_string()),
        "{methods:?}"
    );
    let headers = tokens(&r, "access-control-allow-headers");
    assert!(
        headers.contains(&"content-type".to_string()) && headers.contains(&"if-match".to_string()),
        "{headers:?}"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9725_4_1_get_is_2xx_without_content_and_whep_head_is_200_sdp() {
    let gw = start(contract_config()).await;
    let publisher = live_publisher(&gw, "s").await;
    for url in [
        whip(&gw, "s"),
        whep(&gw, "s"),
        publisher.location().to_string(),
    ] {
        let r = send("GET", &url, &[], Vec::new()).await;
        assert!((200..300).contains(&r.status), "GET {url}: {}", r.status);
        assert!(r.body.is_empty(), "GET {url}: no content");
    }
    let head = send("HEAD", &whep(&gw, "s"), &[], Vec::new()).await;
    assert_eq!(head.status, 200, "HEAD on a WHEP endpoint");
    assert_eq!(head.header("content-type"), Some(SDP));
    assert!(head.body.is_empty());
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_cross_origin_post_responses_expose_location_etag_and_link() {
    let gw = start(contract_config()).await;
    let origin = ("origin", "https://encoder.example");
    let sdp = offer(Direction::SendOnly);
    let created = send(
        "POST",
        &whip(&gw, "s"),
        &[origin, ("content-type", SDP)],
        sdp.as_str(),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let wrong_type = send(
        "POST",
        &whip(&gw, "s"),
        &[origin, ("content-type", "text/plain")],
        sdp.as_str(),
    )
    .await;
    assert_eq!(wrong_type.status, 415);
    let no_publisher = send(
        "POST",
        &whep(&gw, "nobody"),
        &[origin, ("content-type", SDP)],
        offer(Direction::RecvOnly),
    )
    .await;
    assert_eq!(no_publisher.status, 409);
    for r in [&created, &wrong_type, &no_publisher] {
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some("*"),
            "{}",
            r.status
        );
        let exposed = tokens(r, "access-control-expose-headers");
        for h in ["location", "etag", "link", "retry-after"] {
            assert!(
                exposed.contains(&h.to_string()),
                "{}: {h} exposed: {exposed:?}",
                r.status
            );
        }
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9110_15_5_6_other_methods_are_405_with_allow() {
    let gw = start(contract_config()).await;
    let publisher = live_publisher(&gw, "s").await;
    for (url, method) in [
        (whip(&gw, "s"), "PUT"),
        (whep(&gw, "s"), "DELETE"),
        (whip(&gw, "s"), "PATCH"),
        (publisher.location().to_string(), "POST"),
        (publisher.location().to_string(), "PUT"),
    ] {
        let r = send(method, &url, &[], Vec::new()).await;
        assert_problem(&r, 405, &format!("{method} {url}"));
        let allow = tokens(&r, "allow");
        assert!(!allow.is_empty(), "{method} {url}: 405 has Allow");
        assert!(
            !allow.contains(&method.to_ascii_lowercase()),
            "{method} {url}: {allow:?}"
        );
    }
    gw.shutdown().await;
}

// ---- sessions outlive their publisher ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_sessions_outlive_a_deleted_or_killed_publisher() {
    let gw = start(contract_config()).await;
    let publisher = live_publisher(&gw, "s").await;
    let viewers = [live_viewer(&gw, "s").await, live_viewer(&gw, "s").await];
    assert_eq!(gw.session_count(), 3);

    let status = publisher.delete().await.expect("DELETE sent");
    assert_eq!(status, 200);
    assert_eq!(gw.session_count(), 2, "the viewers stay");
    for v in &viewers {
        let r = send("GET", v.location(), &[], Vec::new()).await;
        assert_eq!(r.status, 204, "viewer session after the publisher's DELETE");
    }

    let publisher = live_publisher(&gw, "s").await;
    let gone = publisher.location().to_string();
    assert_eq!(gw.session_count(), 3);
    publisher.kill();
    wait_until(
        "the killed publisher's consent expires",
        Duration::from_secs(10),
        || gw.session_count() == 2,
    )
    .await;
    assert_problem(
        &send("GET", &gone, &[], Vec::new()).await,
        404,
        "killed publisher",
    );
    for v in &viewers {
        let r = send("GET", v.location(), &[], Vec::new()).await;
        assert_eq!(r.status, 204, "viewer session after the publisher vanished");
        assert!(v.is_connected(), "and still connected");
    }
    gw.shutdown().await;
}

/// RFC 9725 §4.6 with a TURN REST-API server (coturn `use-auth-secret`): every 201 carries a
/// fresh `<expiry>:wishcast` username and the HMAC-SHA1 credential of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9725_4_6_turn_rest_credentials_are_derived_per_answer() {
    let mut config = test_config(1);
    config.ice_servers = vec![IceServer {
        url: "turn:turn.example.net:3478?transport=udp".into(),
        username: None,
        credential: None,
        secret: Some("shared-secret".into()),
        ttl_secs: 600,
    }];
    let gw = start(config).await;
    let publisher = Peer::publish(&whip(&gw, "turnrest"), opts(Some(VideoCodec::Vp8), false))
        .await
        .expect("publish");
    let post = request(
        "POST",
        &whep(&gw, "turnrest"),
        &[("content-type", "application/sdp")],
        offer(Direction::RecvOnly).into_bytes(),
    )
    .await
    .expect("post");
    assert_eq!(post.status, 201, "{}", post.text());
    let link = post.header_all("link").join(",");
    let user = link
        .split("username=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("username");
    let cred = link
        .split("credential=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("credential");
    let (expiry, name) = user.split_once(':').expect("expiry:name");
    assert_eq!(name, "wishcast");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let expiry: u64 = expiry.parse().expect("unix time");
    assert!(
        (now + 590..=now + 610).contains(&expiry),
        "expires in ttl_secs: {expiry} vs {now}"
    );
    let server = IceServer {
        url: String::new(),
        username: None,
        credential: None,
        secret: Some("shared-secret".into()),
        ttl_secs: 600,
    };
    assert_eq!(server.credentials(expiry - 600).1.as_deref(), Some(cred));
    drop(publisher);
    gw.shutdown().await;
}

/// A recvonly offer with only H264 video (every profile str0m offers) and Opus audio.
fn h264_viewer_offer() -> String {
    str0m_offer(
        Rtc::builder()
            .clear_codecs()
            .enable_h264(true)
            .enable_opus(true, false)
            .build(Instant::now()),
        Direction::RecvOnly,
        &[MediaKind::Video, MediaKind::Audio],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc6184_8_1_h264_viewer_only_in_packetization_mode_0_gets_a_mode_1_counter_offer() {
    let gw = start(contract_config()).await;
    let _publisher = live_publisher(&gw, "s").await;
    let both = h264_viewer_offer();
    assert!(both.contains("packetization-mode=1"), "{both}");
    // The same offer with every H264 payload type in mode 0 (RFC 6184: absent means 0).
    let mode0 = both.replace("packetization-mode=1", "packetization-mode=0");
    let r = post_sdp(&whep(&gw, "s"), &mode0).await;
    assert_eq!(
        r.status,
        406,
        "H264 in mode 0 for a mode-1 publisher: {}",
        r.text()
    );
    let counter = r.text();
    let fmtps: Vec<&str> = counter
        .lines()
        .filter(|l| l.starts_with("a=fmtp:") && l.contains("packetization-mode"))
        .collect();
    assert!(
        !fmtps.is_empty() && fmtps.iter().all(|l| l.contains("packetization-mode=1")),
        "the counter-offer has H264 in mode 1 only: {counter}"
    );
    let r = post_sdp(&whep(&gw, "s"), &both).await;
    assert_eq!(r.status, 201, "mode 1 offered: {}", r.text());
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_viewer_without_the_publishers_codec_gets_a_counter_offer_of_it() {
    let gw = start(contract_config()).await;
    let _publisher = live_publisher(&gw, "s").await;
    let vp8 = str0m_offer(
        Rtc::builder()
            .clear_codecs()
            .enable_vp8(true)
            .enable_opus(true, false)
            .build(Instant::now()),
        Direction::RecvOnly,
        &[MediaKind::Video, MediaKind::Audio],
    );
    let r = post_sdp(&whep(&gw, "s"), &vp8).await;
    assert_eq!(r.status, 406, "VP8 viewer of an H264 stream: {}", r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("application/sdp; valid-until=")),
        "{:?}",
        r.header("content-type")
    );
    let counter = r.text();
    assert!(counter.contains(" H264/90000"), "{counter}");
    assert!(!counter.contains(" VP8/90000"), "{counter}");
    // Without a publisher there is nothing to counter with: a stream's codecs are unknown.
    let r = post_sdp(&whep(&gw, "none"), &vp8).await;
    assert_problem(&r, 409, "VP8 viewer of a stream without a publisher");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc7587_7_opus_without_a_channel_count_is_served_as_stereo_opus() {
    let gw = start(contract_config()).await;
    let sdp = offer(Direction::SendOnly);
    let lax = sdp.replace("opus/48000/2", "opus/48000");
    assert_ne!(lax, sdp, "the offer names opus/48000/2: {sdp}");
    let r = post_sdp(&whip(&gw, "s"), &lax).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let answer = r.text();
    let audio = media_sections(&answer)
        .into_iter()
        .find(|s| s[0].starts_with("m=audio"))
        .expect("an audio section");
    assert!(
        !audio[0].contains(" 0 ") && audio.iter().any(|l| l.contains("opus/48000/2")),
        "audio accepted with Opus: {answer}"
    );
    gw.shutdown().await;
}

/// The offer with its second m-line as GStreamer's max-bundle policy writes it: port 0 and
/// `a=bundle-only` as its first attribute.
fn bundle_only_second(sdp: &str) -> String {
    let mut sections = 0;
    let mut pending = false;
    let out: String = sdp
        .split_inclusive('\n')
        .map(|line| {
            if line.starts_with("m=") {
                sections += 1;
                if sections == 2 {
                    pending = true;
                    let mut parts: Vec<&str> = line.splitn(3, ' ').collect();
                    parts[1] = "0";
                    return parts.join(" ");
                }
            }
            if pending && line.starts_with("a=") {
                pending = false;
                return format!("a=bundle-only\r\n{line}");
            }
            line.to_string()
        })
        .collect();
    assert!(out.contains("a=bundle-only"), "{out}");
    out
}

/// RFC 8843 §6: a section with port 0 and `a=bundle-only` is part of the bundle, not rejected:
/// it is answered, and its codecs count (a viewer's bundle-only video that does not fit the
/// stream gets a counter-offer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc8843_6_bundle_only_section_with_port_0_is_live() {
    let gw = start(contract_config()).await;
    let r = post_sdp(
        &whip(&gw, "t"),
        &bundle_only_second(&offer(Direction::SendOnly)),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let answer = r.text();
    let second = &media_sections(&answer)[1];
    assert!(
        second[0].split(' ').nth(1) != Some("0"),
        "the bundle-only section is accepted: {answer}"
    );

    let _publisher = live_publisher(&gw, "s").await;
    let vp8_viewer = str0m_offer(
        Rtc::builder()
            .clear_codecs()
            .enable_vp8(true)
            .enable_opus(true, false)
            .build(Instant::now()),
        Direction::RecvOnly,
        &[MediaKind::Audio, MediaKind::Video],
    );
    let r = post_sdp(&whep(&gw, "s"), &bundle_only_second(&vp8_viewer)).await;
    // Its codecs count: VP8 only, it is countered with the stream's H264.
    assert_eq!(
        r.status,
        406,
        "bundle-only VP8 video for an H264 stream: {}",
        r.text()
    );
    gw.shutdown().await;
}
