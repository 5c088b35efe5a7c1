//! Offers of one m-section without `a=group:BUNDLE`, as GStreamer's webrtcbin sends them for a
//! video-only or audio-only track, over real UDP with real ICE, DTLS and SRTP. One m-section
//! needs no group; the answer must not add one (RFC 8843 §7.3), and media must flow. Several
//! m-sections without a group would need a transport each, which a session here does not
//! have: those offers get a 422 that says so.

mod common;

use std::time::{Duration, Instant};

use common::*;
use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, Rtc};
use wishcast::client::http::request;
use wishcast::client::{ClientOptions, Peer, VideoCodec};
use wishcast::peer::{media, Feed};

const CODEC: VideoCodec = VideoCodec::H264;

/// A peer's options that offer `video` and/or audio without a BUNDLE group.
fn unbundled(video: Option<VideoCodec>, audio: bool) -> ClientOptions {
    ClientOptions {
        unbundled: true,
        ..ClientOptions::from(opts(video, audio))
    }
}

/// A publisher sending the generated feed, connected with `options`; its answer checked as
/// [`check_single_answer`] does when it offered without a group.
async fn publishing(url: &str, options: ClientOptions) -> LiveFeed {
    let (video, audio, single) = (options.peer.video, options.peer.audio, options.unbundled);
    let publisher = Peer::publish(url, options).await.expect("publish accepted");
    if single {
        check_single_answer(publisher.answer_sdp(), "WHIP");
    }
    publisher
        .wait_connected(Duration::from_secs(10))
        .await
        .expect("publisher connects");
    let feed = Feed::new(video, audio)
        .with_fps(FPS as u32)
        .with_gop(GOP)
        .with_sizes(VIDEO_BYTES, VIDEO_BYTES);
    LiveFeed::run(publisher, feed)
}

/// What an offerer without BUNDLE checks in the answer: no group (RFC 8843 §7.3: an answer
/// puts an m-section in a BUNDLE group only if the offer did), one accepted m-section with a
/// port and a candidate to send to.
fn check_single_answer(answer: &str, what: &str) {
    let lines: Vec<&str> = answer.lines().map(|l| l.trim_end_matches('\r')).collect();
    assert!(
        !lines.iter().any(|l| l.starts_with("a=group:")),
        "{what}: the answer adds no group:\n{answer}"
    );
    let m: Vec<&&str> = lines.iter().filter(|l| l.starts_with("m=")).collect();
    assert_eq!(m.len(), 1, "{what}: one m-section:\n{answer}");
    let port = m[0].split_whitespace().nth(1).unwrap_or("0");
    assert_ne!(port, "0", "{what}: the m-section is accepted:\n{answer}");
    assert!(
        lines.iter().any(|l| l.starts_with("a=candidate:")),
        "{what}: a candidate:\n{answer}"
    );
}

/// `v`'s next Opus frame within 5 s, byte for byte as the test publisher made it.
async fn next_checked_audio(v: &mut Peer) -> u64 {
    loop {
        let f = v
            .next_frame(Duration::from_secs(5))
            .await
            .expect("a frame within 5 s");
        if f.kind != MediaKind::Audio {
            continue;
        }
        let i = media::frame_index(f.codec, &f.data).expect("opus index");
        assert_eq!(
            f.data[..],
            media::opus_frame(i)[..],
            "opus frame {i} intact"
        );
        return i;
    }
}

/// Consecutive Opus frames, intact and in order.
async fn plays_audio(v: &mut Peer, frames: usize) {
    let mut last = next_checked_audio(v).await;
    for _ in 1..frames {
        let i = next_checked_audio(v).await;
        assert_eq!(i, last + 1, "audio in order without gaps");
        last = i;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_video_only_offer_without_bundle_group_is_served() {
    let gw = start(test_config(1)).await;
    let feed = publishing(&whip(&gw, "v"), unbundled(Some(CODEC), false)).await;
    let mut viewer = Peer::play(&whep(&gw, "v"), opts(Some(CODEC), false))
        .await
        .expect("play accepted");
    plays_video(&mut viewer, CODEC, 40).await;
    drop(viewer);
    feed.stop().await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_audio_only_offer_without_bundle_group_is_served() {
    let gw = start(test_config(1)).await;
    let feed = publishing(&whip(&gw, "a"), unbundled(None, true)).await;
    let mut viewer = Peer::play(&whep(&gw, "a"), opts(None, true))
        .await
        .expect("play accepted");
    plays_audio(&mut viewer, 50).await;
    drop(viewer);
    feed.stop().await;
    gw.shutdown().await;
}

/// A video-only viewer of an audio and video stream; its session also survives an ICE
/// restart, which re-offers what str0m read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_video_only_offer_without_bundle_group_is_served() {
    let gw = start(test_config(1)).await;
    let feed = publishing(
        &whip(&gw, "wv"),
        ClientOptions::from(opts(Some(CODEC), true)),
    )
    .await;
    let mut viewer = Peer::play(&whep(&gw, "wv"), unbundled(Some(CODEC), false))
        .await
        .expect("play accepted");
    check_single_answer(viewer.answer_sdp(), "WHEP");
    plays_video(&mut viewer, CODEC, 30).await;
    viewer.restart_ice().await.expect("ICE restart");
    // Frames after the restart keep coming, intact.
    for _ in 0..30 {
        next_checked_video(&mut viewer, CODEC).await;
    }
    assert_eq!(viewer.stats().audio_frames, 0, "no audio was negotiated");
    drop(viewer);
    feed.stop().await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_audio_only_offer_without_bundle_group_is_served() {
    let gw = start(test_config(1)).await;
    let feed = publishing(
        &whip(&gw, "wa"),
        ClientOptions::from(opts(Some(CODEC), true)),
    )
    .await;
    let mut viewer = Peer::play(&whep(&gw, "wa"), unbundled(None, true))
        .await
        .expect("play accepted");
    check_single_answer(viewer.answer_sdp(), "WHEP");
    plays_audio(&mut viewer, 50).await;
    assert_eq!(viewer.stats().video_frames, 0, "no video was negotiated");
    drop(viewer);
    feed.stop().await;
    gw.shutdown().await;
}

/// An audio and video offer without a group: each m-section would need its own ICE and DTLS
/// transport. The POST gets a 422 problem that names the missing group, and nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_m_sections_without_bundle_group_get_422_naming_the_group() {
    let gw = start(test_config(1)).await;
    let _publisher = publishing(
        &whip(&gw, "m"),
        ClientOptions::from(opts(Some(CODEC), true)),
    )
    .await;
    for (url, dir, what) in [
        (whip(&gw, "other"), Direction::SendOnly, "WHIP"),
        (whep(&gw, "m"), Direction::RecvOnly, "WHEP"),
    ] {
        let mut rtc = Rtc::builder().build(Instant::now());
        let addr = "127.0.0.1:40000".parse().expect("addr");
        rtc.add_local_candidate(Candidate::host(addr, "udp").expect("candidate"));
        let mut api = rtc.sdp_api();
        for kind in [MediaKind::Video, MediaKind::Audio] {
            api.add_media(kind, dir, Some("s".into()), None, None);
        }
        let (offer, _pending) = api.apply().expect("an offer");
        let offer = wishcast::sdp::strip_bundle_group(&offer.to_sdp_string());
        assert!(!offer.contains("a=group"), "{offer}");
        let r = request(
            "POST",
            &url,
            &[("content-type", "application/sdp")],
            offer.into_bytes(),
        )
        .await
        .expect("an HTTP answer");
        assert_eq!(r.status, 422, "{what}: {}", r.text());
        assert_eq!(
            r.header("content-type"),
            Some("application/problem+json"),
            "{what}"
        );
        let problem: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains("a=group:BUNDLE") && detail.contains("2 m-sections"),
            "{what}: {problem}"
        );
    }
    assert_eq!(gw.session_count(), 1, "only the publisher");
    gw.shutdown().await;
}
