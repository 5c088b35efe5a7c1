//! Sessions over time on the real network: time to the first frame for mid-stream joins (the
//! figures the README reports) and goodbyes at shutdown. Real UDP on loopback, real
//! ICE/DTLS/SRTP, real HTTP. Publishers leaving and returning, consent expiry, late joiners,
//! viewers' keyframe requests and ICE restart run on the simulated clock in
//! `sim_lifecycle.rs`; ICE restart over real HTTP and UDP is also in `http_contract.rs`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use wishcast::client::{Peer, ReceivedFrame, VideoCodec};

const H264: Option<VideoCodec> = Some(VideoCodec::H264);

async fn next_video(v: &mut Peer) -> (u64, bool, ReceivedFrame) {
    next_checked_video(v, VideoCodec::H264).await
}

/// Joins `joins` viewers one after another at staggered points of the GOP and returns the time
/// from each one's 201 to its first frame, and how many joins the gateway served from its GOP
/// cache (its own count: a join at a GOP boundary gets the new keyframe from the cache, which no
/// client-side clock comparison can tell apart).
async fn time_to_first_frame(gop_cache: bool, honor_pli: bool, joins: u64) -> (Vec<Duration>, u64) {
    let mut config = test_config(2);
    config.media.gop_cache = gop_cache;
    let gw = start(config).await;
    let feed = LiveFeed::start_with(&whip(&gw, "ttff"), H264, true, 0, honor_pli).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut out = Vec::new();
    for j in 0..joins {
        // Spread the joins over the GOP: 1000/joins ms apart plus a prime offset.
        tokio::time::sleep(Duration::from_millis(1000 / joins + 37 * j % 200)).await;
        let mut v = Peer::play(&whep(&gw, "ttff"), opts(H264, true))
            .await
            .expect("play");
        let (i, key, f) = next_video(&mut v).await;
        assert!(
            key,
            "the first frame a viewer gets is a keyframe (got frame {i})"
        );
        out.push(f.at.saturating_duration_since(v.posted_at()));
        v.delete().await.expect("delete");
    }
    let hits = gw.stats().gop_cache_hits;
    feed.stop().await;
    gw.shutdown().await;
    (out, hits)
}

fn report(label: &str, (t, hits): &(Vec<Duration>, u64)) {
    let mut ms: Vec<f64> = t.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    let median = ms[ms.len() / 2];
    let max = ms[ms.len() - 1];
    println!(
        "time to first frame, {label}: median {median:.0} ms, max {max:.0} ms, \
         {hits}/{} served from cache (GOP {GOP} frames at {FPS} fps)",
        t.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_mid_stream_starts_on_a_cached_keyframe() {
    let t = time_to_first_frame(true, false, 8).await;
    report("GOP cache on, fixed-GOP encoder", &t);
    assert_eq!(
        t.1, 8,
        "with the GOP cache every join starts from the cache"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_gop_cache_a_join_waits_for_the_next_keyframe() {
    let t = time_to_first_frame(false, false, 8).await;
    report("GOP cache off, fixed-GOP encoder", &t);
    assert_eq!(
        t.1, 0,
        "without the cache every join waits for a new keyframe"
    );
    let t = time_to_first_frame(false, true, 8).await;
    report("GOP cache off, encoder honouring PLI", &t);
}

/// Shutdown with live sessions: every peer is told (DTLS close_notify, RTCP BYE) and sees its
/// connection closed at once, rather than discovering it at ICE or consent timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_says_goodbye_to_live_peers() {
    let gw = start(test_config(2)).await;
    let feed = LiveFeed::start(&whip(&gw, "bye"), H264, true, 0).await;
    let mut viewer = Peer::play(&whep(&gw, "bye"), opts(H264, true))
        .await
        .expect("play");
    next_video(&mut viewer).await;
    let publisher = feed.stop().await;
    let t = Instant::now();
    gw.shutdown().await;
    assert!(
        t.elapsed() < Duration::from_secs(6),
        "shutdown took {:?}",
        t.elapsed()
    );
    for (who, peer) in [("viewer", &viewer), ("publisher", &publisher)] {
        let state = peer
            .wait_disconnected(Duration::from_secs(2))
            .await
            .unwrap_or_else(|e| panic!("{who} told within 2 s: {e}"));
        assert!(
            matches!(state, wishcast::client::LinkState::Closed(_)),
            "{who}: {state:?}"
        );
    }
}
