//! Slow and dead viewers over real sockets: a viewer that stops reading (its socket buffer
//! fills up) and one that vanishes are removed when their consent expires, and the other
//! viewers of the same shard keep receiving every frame, with latency figures printed for
//! the time before and after.

mod common;

use std::time::{Duration, Instant};

use common::*;
use str0m::media::MediaKind;
use wishcast::client::{Peer, VideoCodec};
use wishcast::peer::{media, Feed};

const FPS: u32 = 30;

/// Frame latencies of one viewer: (index, encoder time to arrival).
async fn receive(mut v: Peer, started: Instant, until: Instant) -> (Peer, Vec<(u64, Duration)>) {
    let mut got = Vec::new();
    while Instant::now() < until {
        let Some(f) = v.next_frame(Duration::from_millis(200)).await else {
            continue;
        };
        if f.kind != MediaKind::Video {
            continue;
        }
        let i = media::frame_index(f.codec, &f.data).expect("frame index");
        let due = started + Duration::from_secs(1) * i as u32 / FPS;
        got.push((i, f.at.saturating_duration_since(due)));
    }
    (v, got)
}

fn p99(mut d: Vec<Duration>) -> Duration {
    d.sort();
    d.get((d.len() * 99 / 100).min(d.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_vanished_viewers_expire_without_delaying_the_others() {
    // One shard: every viewer is served by the same thread as the stalled ones.
    let config = test_config(1);
    let consent = config.timeouts.consent();
    let gw = start(config).await;
    let codec = VideoCodec::H264;
    let publisher = connected_publisher(&whip(&gw, "s"), opts(Some(codec), true)).await;
    let feed = Feed::at_bitrate(codec, 2_500_000, FPS);
    let started = Instant::now();
    let sender = LiveFeed::run(publisher, feed);

    let healthy = watching(&whep(&gw, "s"), Some(codec), true, 4).await;
    let stalled = watching(&whep(&gw, "s"), Some(codec), true, 1).await;
    let vanished = watching(&whep(&gw, "s"), Some(codec), true, 1).await;
    assert_eq!(gw.session_count(), 7);

    let phase = Duration::from_secs(3);
    let before_end = Instant::now() + phase;
    // After the stall: consent expiry plus housekeeping, then as long again to measure.
    let after_start = before_end;
    let after_end = after_start + consent + Duration::from_secs(4);
    let tasks: Vec<_> = healthy
        .into_iter()
        .map(|v| tokio::spawn(receive(v, started, after_end)))
        .collect();
    tokio::time::sleep_until(before_end.into()).await;
    for v in &stalled {
        v.freeze().expect("freeze");
    }
    drop(vanished);

    // Both are removed on their consent timeout, not before.
    let mut removed_at = None;
    while Instant::now() < after_end {
        if gw.session_count() == 5 {
            removed_at.get_or_insert(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let removed_after = removed_at
        .expect("the stalled and the vanished viewer were removed")
        .saturating_duration_since(after_start);
    assert!(
        removed_after >= consent.saturating_sub(Duration::from_millis(500)),
        "removed on the consent timeout, not before: {removed_after:?}"
    );

    let (mut before, mut during, mut after) = (Vec::new(), Vec::new(), Vec::new());
    for t in tasks {
        let (v, got) = t.await.expect("viewer");
        let indices: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert!(
            indices.windows(2).all(|w| w[1] == w[0] + 1),
            "every frame, in order: {indices:?}"
        );
        assert!(
            indices.len() as u64 >= u64::from(FPS) * (after_end - started).as_secs() / 2,
            "kept receiving: {} frames",
            indices.len()
        );
        for (i, lat) in got {
            let at = started + Duration::from_secs(1) * i as u32 / FPS + lat;
            if at < before_end {
                before.push(lat);
            } else if at < after_start + removed_after {
                during.push(lat);
            } else {
                after.push(lat);
            }
        }
        drop(v);
    }
    eprintln!(
        "healthy viewers' frame latency p99: {:?} before the stall ({} frames), {:?} while \
         a stalled and a vanished viewer were still connected ({} frames), {:?} after both \
         expired ({} frames); removed {:?} after the stall",
        p99(before.clone()),
        before.len(),
        p99(during.clone()),
        during.len(),
        p99(after.clone()),
        after.len(),
        removed_after
    );
    drop(stalled);
    drop(sender.stop().await);
    gw.shutdown().await;
}
