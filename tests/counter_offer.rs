//! WHEP counter-offers (draft-ietf-wish-whep, "Server Sends Counter-Offer"), over real HTTP,
//! UDP, ICE, DTLS and SRTP on loopback: a player whose offer names no codec the publisher sends
//! gets 406 with the gateway's own offer, PATCHes its answer, and plays the stream byte for
//! byte; bad answers get problem+json; an unanswered offer ends at its valid-until; the answer
//! needs the POST's token.

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::*;
use str0m::change::SdpOffer;
use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, Rtc, RtcConfig};
use wishcast::client::http::{request, Response};
use wishcast::client::{ClientError, ClientOptions, Peer, PeerOptions, VideoCodec};
use wishcast::Gateway;

const SDP: &str = "application/sdp";
const SDPFRAG: &str = "application/trickle-ice-sdpfrag";
const PROBLEM: &str = "application/problem+json";
const STUN_URL: &str = "stun:stun.example.net:3478";

/// An offer from str0m with only `cfg`'s codecs: one host candidate, recvonly video and audio.
fn offer_with(cfg: RtcConfig) -> String {
    str0m_offer(
        cfg.build(Instant::now()),
        Direction::RecvOnly,
        &[MediaKind::Video, MediaKind::Audio],
    )
}

/// A player that offers VP8 (and Opus) only.
fn vp8_offer() -> String {
    offer_with(
        Rtc::builder()
            .clear_codecs()
            .enable_vp8(true)
            .enable_opus(true, false),
    )
}

/// str0m's answer to `offer` on `cfg`'s codecs, with one host candidate.
fn answer_with(cfg: RtcConfig, offer: &str) -> String {
    let mut rtc = cfg.build(Instant::now());
    let addr = "127.0.0.1:40001".parse().expect("candidate address");
    rtc.add_local_candidate(Candidate::host(addr, "udp").expect("host candidate"));
    let offer = SdpOffer::from_sdp_string(offer).expect("the counter-offer is SDP str0m reads");
    rtc.sdp_api()
        .accept_offer(offer)
        .expect("str0m answers the counter-offer")
        .to_sdp_string()
}

/// A player's answer taking H264 and Opus.
fn h264_answer(offer: &str) -> String {
    answer_with(
        Rtc::builder()
            .clear_codecs()
            .enable_h264(true)
            .enable_opus(true, false),
        offer,
    )
}

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

async fn patch_answer(url: &str, token: Option<&str>, sdp: &str) -> Response {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", SDP)];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    send("PATCH", url, &headers, sdp).await
}

fn assert_problem(r: &Response, status: u16, what: &str) {
    assert_eq!(r.status, status, "{what}: status (body {})", r.text());
    assert_eq!(
        r.header("content-type"),
        Some(PROBLEM),
        "{what}: problem+json"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{what}: JSON body: {e}"));
    assert_eq!(json["status"], status, "{what}: status in the body");
    assert!(
        json["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{what}: a detail"
    );
}

/// A 406's counter-offer as a player reads it: the session URL and the SDP, after the
/// headers the draft asks for are checked.
fn read_counter_offer(gw: &Gateway, r: &Response, valid_for: Duration) -> (String, String) {
    assert_eq!(r.status, 406, "a counter-offer (body {})", r.text());
    let content_type = r.header("content-type").expect("Content-Type");
    let (essence, param) = content_type
        .split_once(';')
        .expect("Content-Type has a parameter");
    assert_eq!(essence.trim(), SDP);
    let date = param
        .trim()
        .strip_prefix("valid-until=\"")
        .and_then(|d| d.strip_suffix('"'))
        .unwrap_or_else(|| panic!("valid-until as a quoted HTTP-date: {content_type}"));
    let until = httpdate::parse_http_date(date).expect("valid-until is an HTTP-date");
    let ahead = until
        .duration_since(SystemTime::now())
        .unwrap_or_default()
        .as_secs_f64();
    let want = valid_for.as_secs_f64();
    assert!(
        ahead > want - 2.5 && ahead <= want,
        "valid-until {date} is about {want} s ahead, not {ahead} s"
    );
    let location = r.header("location").expect("Location");
    assert!(
        location.starts_with("/whep/"),
        "Location is the session: {location}"
    );
    assert!(r.header("etag").is_some(), "ETag, as on a 201");
    assert!(
        r.header_all("link")
            .iter()
            .any(|l| l.contains(STUN_URL) && l.contains("rel=\"ice-server\"")),
        "Link rel=ice-server, as on a 201: {:?}",
        r.header_all("link")
    );
    let url = format!("http://{}{location}", gw.http_addr());
    (url, r.text())
}

/// The lines of `sdp`'s m-section of `kind`.
fn section<'a>(sdp: &'a str, kind: &str) -> Vec<&'a str> {
    let mut lines = Vec::new();
    let mut inside = false;
    for line in sdp.lines().map(str::trim_end) {
        if line.starts_with("m=") {
            inside = line.starts_with(&format!("m={kind} "));
        }
        if inside {
            lines.push(line);
        }
    }
    lines
}

fn config() -> wishcast::Config {
    let mut c = test_config(2);
    c.ice_servers = vec![wishcast::config::IceServer {
        url: STUN_URL.into(),
        username: None,
        credential: None,
        secret: None,
        ttl_secs: 86_400,
    }];
    c
}

async fn viewers_of(gw: &Gateway, stream: &str) -> u64 {
    let r = send(
        "GET",
        &format!("http://{}/api/streams", gw.http_addr()),
        &[],
        Vec::new(),
    )
    .await;
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("stream list");
    v["streams"]
        .as_array()
        .and_then(|l| l.iter().find(|s| s["name"] == stream))
        .and_then(|s| s["viewers"].as_u64())
        .unwrap_or(0)
}

/// The draft's exchange by hand: 406 with the headers and a sendonly offer of the publisher's
/// codecs; the answer PATCHed is 204.
/// A VP8-only player's offer to stream "co", whose publisher sends H264.
async fn post_vp8_offer(gw: &Gateway) -> Response {
    send(
        "POST",
        &whep(gw, "co"),
        &[("content-type", SDP)],
        vp8_offer(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_without_the_publishers_codec_gets_a_counter_offer() {
    let gw = start(config()).await;
    let feed = LiveFeed::start(&whip(&gw, "co"), Some(VideoCodec::H264), true, 0).await;
    assert_eq!(gw.session_count(), 1);

    let r = post_vp8_offer(&gw).await;
    let (url, offer) = read_counter_offer(&gw, &r, Duration::from_secs(30));
    assert_eq!(gw.session_count(), 2, "the waiting session is registered");
    assert_eq!(viewers_of(&gw, "co").await, 1, "and counted as a viewer");

    assert!(
        offer.lines().any(|l| l.starts_with("a=group:BUNDLE ")),
        "BUNDLE:\n{offer}"
    );
    let video = section(&offer, "video");
    let audio = section(&offer, "audio");
    for (kind, lines) in [("video", &video), ("audio", &audio)] {
        assert!(
            lines.contains(&"a=sendonly"),
            "{kind} is sendonly:\n{offer}"
        );
        assert!(
            lines.contains(&"a=setup:actpass"),
            "{kind}: setup actpass (JSEP)"
        );
    }
    for attr in [
        "a=ice-ufrag:",
        "a=ice-pwd:",
        "a=fingerprint:",
        "a=candidate:",
    ] {
        assert!(
            offer.lines().any(|l| l.starts_with(attr)),
            "{attr} as in an answer:\n{offer}"
        );
    }
    let rtpmaps = |lines: &[&str]| -> Vec<String> {
        lines
            .iter()
            .filter_map(|l| l.strip_prefix("a=rtpmap:"))
            .filter_map(|l| l.split_whitespace().nth(1))
            .map(|c| c.split('/').next().unwrap_or("").to_ascii_uppercase())
            .collect()
    };
    let video_codecs = rtpmaps(&video);
    assert!(
        video_codecs.iter().any(|c| c == "H264"),
        "the publisher's H264: {video_codecs:?}"
    );
    assert!(
        video_codecs.iter().all(|c| c == "H264" || c == "RTX"),
        "only what the publisher sends: {video_codecs:?}"
    );
    // The test publisher's H264 is packetization mode 1: a player could not take mode 0.
    assert!(
        video
            .iter()
            .filter(|l| l.starts_with("a=fmtp:") && !l.contains("apt="))
            .all(|l| l.contains("packetization-mode=1")),
        "H264 in the publisher's packetization mode only:\n{offer}"
    );
    assert_eq!(rtpmaps(&audio), vec!["OPUS".to_string()]);

    let answered = patch_answer(&url, None, &h264_answer(&offer)).await;
    assert_eq!(answered.status, 204, "answer taken: {}", answered.text());
    assert!(answered.body.is_empty());
    assert_eq!(gw.session_count(), 2);
    assert_eq!(viewers_of(&gw, "co").await, 1, "one viewer, answered");

    // The session is an ordinary one now: DELETE ends it.
    assert_eq!(send("DELETE", &url, &[], Vec::new()).await.status, 200);
    assert_eq!(gw.session_count(), 1);
    assert_eq!(viewers_of(&gw, "co").await, 0);
    drop(feed.stop().await);
    gw.shutdown().await;
}

/// A VP8-only player plays an H264 stream through the counter-offer, byte for byte, in either
/// DTLS role; a player that takes only its own codec is refused at its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_offered_player_plays_the_stream_byte_for_byte() {
    let gw = start(config()).await;
    let feed = LiveFeed::start(&whip(&gw, "live"), Some(VideoCodec::H264), true, 0).await;
    for dtls_active in [false, true] {
        let opts = ClientOptions {
            answer_codecs: vec![VideoCodec::H264],
            ..ClientOptions::from(PeerOptions {
                dtls_active,
                ..opts(Some(VideoCodec::Vp8), true)
            })
        };
        let mut v = Peer::play(&whep(&gw, "live"), opts)
            .await
            .expect("the counter-offer answered");
        assert!(v.offer_sdp().contains("VP8"), "the player offered VP8");
        assert!(!v.offer_sdp().contains("H264"), "and not H264");
        v.wait_connected(Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("connects (DTLS active: {dtls_active}): {e}"));
        plays_video(&mut v, VideoCodec::H264, 45).await;
        v.restart_ice().await.expect("ICE restart");
        for _ in 0..30 {
            next_checked_video(&mut v, VideoCodec::H264).await;
        }
        assert_eq!(gw.session_count(), 2);
        assert_eq!(v.delete().await.expect("DELETE"), 200);
        wait_for(|| gw.session_count() == 1, "the viewer gone").await;
    }

    // Taking only VP8, the player answers with no video the gateway offered (nor audio).
    let refused = Peer::play(&whep(&gw, "live"), opts(Some(VideoCodec::Vp8), false)).await;
    match refused {
        Err(ClientError::Http { status: 422, .. }) => {}
        Err(e) => panic!("422 to an answer without the offered codecs, not {e}"),
        Ok(_) => panic!("422 to an answer without the offered codecs, not a session"),
    }
    drop(feed.stop().await);
    gw.shutdown().await;
}

async fn wait_for(mut done: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "{what} within 5 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Answers that cannot be served get problem+json, and the offer keeps waiting for a good one;
/// SDP to a session that is not waiting for an answer is a conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_answers_are_refused_and_the_offer_waits() {
    let mut c = config();
    c.timeouts.connect_secs = 60.0;
    let gw = start(c).await;
    let feed = LiveFeed::start(&whip(&gw, "co"), Some(VideoCodec::H264), false, 0).await;
    let r = post_vp8_offer(&gw).await;
    let (url, offer) = read_counter_offer(&gw, &r, Duration::from_secs(30));
    assert!(
        section(&offer, "audio").is_empty(),
        "no audio from a video-only publisher"
    );
    let good = h264_answer(&offer);

    assert_problem(&patch_answer(&url, None, "hello").await, 400, "not SDP");
    assert_problem(
        &patch_answer(&url, None, &good.replace("a=recvonly", "a=sendrecv")).await,
        422,
        "sendrecv answer",
    );
    assert_problem(
        &patch_answer(&url, None, &good.replace("a=recvonly", "a=inactive")).await,
        422,
        "inactive answer",
    );
    let vp8 = answer_with(Rtc::builder().clear_codecs().enable_vp8(true), &offer);
    assert_problem(
        &patch_answer(&url, None, &vp8).await,
        422,
        "no offered codec",
    );
    let wrong_type = send(
        "PATCH",
        &url,
        &[("content-type", "text/plain")],
        good.clone(),
    )
    .await;
    assert_problem(&wrong_type, 415, "neither SDP nor a fragment");
    let fragment = send(
        "PATCH",
        &url,
        &[("content-type", SDPFRAG), ("if-match", "*")],
        "a=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\n",
    )
    .await;
    assert_problem(&fragment, 409, "a fragment before the answer");
    assert_eq!(gw.session_count(), 2, "the offer still waits");

    let answered = patch_answer(&url, None, &good).await;
    assert_eq!(
        answered.status,
        204,
        "a good answer after bad ones: {}",
        answered.text()
    );
    assert_problem(
        &patch_answer(&url, None, &good).await,
        409,
        "a second answer",
    );

    // A session created from the player's own offer has no counter-offer to answer.
    let v = Peer::play(&whep(&gw, "co"), opts(Some(VideoCodec::H264), false))
        .await
        .expect("an H264 player gets a 201");
    assert_problem(
        &patch_answer(v.location(), None, &good).await,
        409,
        "SDP to a 201 session",
    );
    drop(v);
    drop(feed.stop().await);
    gw.shutdown().await;
}

/// An unanswered counter-offer ends at its valid-until: the session leaves the directory and
/// its shard, and a late answer finds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_counter_offer_expires() {
    let mut c = config();
    c.timeouts.counter_offer_secs = 2.0;
    let gw = start(c).await;
    let feed = LiveFeed::start(&whip(&gw, "co"), Some(VideoCodec::H264), true, 0).await;
    let r = post_vp8_offer(&gw).await;
    let posted = Instant::now();
    let (url, offer) = read_counter_offer(&gw, &r, Duration::from_secs(2));
    assert_eq!(gw.session_count(), 2);
    assert_eq!(viewers_of(&gw, "co").await, 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while gw.session_count() > 1 {
        assert!(Instant::now() < deadline, "the counter-offer expires");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        posted.elapsed() >= Duration::from_millis(1500),
        "not before its valid-until: {:?}",
        posted.elapsed()
    );
    assert_eq!(viewers_of(&gw, "co").await, 0);
    assert_problem(
        &patch_answer(&url, None, &h264_answer(&offer)).await,
        404,
        "late answer",
    );
    let s = gw.stats();
    assert!(s.sessions_expired >= 1, "counted as expired");
    drop(feed.stop().await);
    gw.shutdown().await;
}

const AUTH: &str = r#"
enabled = true
[[streams]]
pattern = "class-*"
publish_tokens = ["pub-class-8d2f71e4"]
play_tokens = ["play-class-4b9e06c1", "play-class-second-77a1"]
"#;

/// The answer goes to the session resource, which belongs to the token that POSTed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answer_needs_the_posts_token() {
    let mut c = config();
    c.auth = toml::from_str(AUTH).expect("[auth] parses");
    let gw = start(c).await;
    let publisher = connected_publisher(
        &whip(&gw, "class-a"),
        ClientOptions {
            bearer: Some("pub-class-8d2f71e4".into()),
            ..ClientOptions::from(opts(Some(VideoCodec::H264), true))
        },
    )
    .await;
    let r = send(
        "POST",
        &whep(&gw, "class-a"),
        &[
            ("content-type", SDP),
            ("authorization", "Bearer play-class-4b9e06c1"),
        ],
        vp8_offer(),
    )
    .await;
    let (url, offer) = read_counter_offer(&gw, &r, Duration::from_secs(30));
    let answer = h264_answer(&offer);
    assert_eq!(
        patch_answer(&url, None, &answer).await.status,
        401,
        "no token"
    );
    let other = patch_answer(&url, Some("play-class-second-77a1"), &answer).await;
    assert!(
        matches!(other.status, 401 | 403),
        "another token's answer is refused: {}",
        other.status
    );
    let own = patch_answer(&url, Some("play-class-4b9e06c1"), &answer).await;
    assert_eq!(own.status, 204, "the POST's token: {}", own.text());
    drop(publisher);
    gw.shutdown().await;
}
