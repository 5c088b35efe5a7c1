//! Sessions coming and going, on the simulated clock: publishers that leave and return or
//! vanish, viewers that vanish, late joiners. Timeouts run at their defaults (consent 30 s,
//! RFC 7675), which costs nothing here; the real-network tests prove the IO shell.

use std::time::{Duration, Instant};

use wishcast::peer::VideoCodec;
use wishcast::sim::{is_keyframe, Feed, PeerId, PeerOptions, Sim, SimError};
use wishcast::Config;

/// A publisher of "s" with a running feed and `n` viewers on a two-shard gateway, connected.
fn stream_with_viewers(n: usize) -> (Sim, PeerId, Vec<PeerId>) {
    stream_with_viewers_on(Config::default(), n)
}

/// [`stream_with_viewers`] on `config`.
fn stream_with_viewers_on(config: Config, n: usize) -> (Sim, PeerId, Vec<PeerId>) {
    let mut sim = Sim::new(config, 2);
    let p = sim
        .add_publisher("s", PeerOptions::with_video(VideoCodec::H264))
        .expect("publisher");
    let viewers: Vec<PeerId> = (0..n)
        .map(|_| {
            sim.add_viewer("s", PeerOptions::with_video(VideoCodec::H264))
                .expect("viewer")
        })
        .collect();
    assert!(sim.run_until_true(Duration::from_secs(5), |s| s.connected_count() == n + 1));
    sim.start_feed(p, Feed::new(Some(VideoCodec::H264), true));
    sim.run_for(Duration::from_secs(1));
    (sim, p, viewers)
}

/// The video frames `viewer` received after `since`, as (feed index, keyframe) of `feed`.
fn video_since(sim: &Sim, feed: &Feed, viewer: PeerId, since: Instant) -> Vec<(u64, bool)> {
    sim.peer(viewer)
        .received_video()
        .filter(|f| f.at > since)
        .map(|f| {
            let i = feed
                .check_video(&f.data)
                .unwrap_or_else(|e| panic!("{viewer:?}: {e}"));
            (i, is_keyframe(VideoCodec::H264, &f.data))
        })
        .collect()
}

/// A new publisher's media reaches `viewer` from a keyframe on, in order, without gaps.
fn plays_from_a_keyframe(sim: &Sim, publisher: PeerId, viewer: PeerId, since: Instant) {
    let feed = sim.feed(publisher).expect("feed");
    let got = video_since(sim, feed, viewer, since);
    assert!(
        got.len() > 30,
        "{viewer:?} plays the new publisher: {got:?}"
    );
    assert!(got[0].1, "{viewer:?} starts on a keyframe: {got:?}");
    assert!(
        got.windows(2).all(|w| w[1].0 == w[0].0 + 1),
        "{viewer:?} in order, without gaps: {got:?}"
    );
}

#[test]
fn publisher_leaves_and_returns_and_viewers_keep_their_sessions() {
    let (mut sim, p, viewers) = stream_with_viewers(4);
    sim.delete(p).expect("DELETE the publisher");
    assert_eq!(sim.hub.session_count(), 4, "the viewers stay");
    sim.run_for(Duration::from_secs(1));
    assert!(viewers.iter().all(|v| sim.peer(*v).is_connected()));
    let back = sim
        .add_publisher("s", PeerOptions::with_video(VideoCodec::H264))
        .expect("a new publisher");
    assert!(sim.run_until_true(Duration::from_secs(5), |s| s.peer(back).is_connected()));
    let since = sim.now();
    sim.start_feed(back, Feed::new(Some(VideoCodec::H264), true));
    sim.run_for(Duration::from_secs(2));
    for v in &viewers {
        plays_from_a_keyframe(&sim, back, *v, since);
    }
    assert_eq!(sim.hub.session_count(), 5);
}

/// A publisher that does not come back: its viewers, on both shards, keep their sessions
/// through the grace period (default 10 s), then get the stream's end (DTLS close_notify) and
/// are removed, and the directory forgets the stream.
#[test]
fn viewers_get_the_streams_end_when_the_publisher_stays_away_past_the_grace_period() {
    let (mut sim, p, viewers) = stream_with_viewers(4);
    let grace = Config::default().timeouts.publisher_grace();
    assert_eq!(grace, Duration::from_secs(10));
    sim.delete(p).expect("DELETE the publisher");
    sim.run_for(grace - Duration::from_millis(300));
    assert_eq!(
        sim.hub.session_count(),
        4,
        "the viewers wait for a publisher"
    );
    assert!(viewers.iter().all(|v| sim.peer(*v).is_connected()));
    // Housekeeping runs every 100 ms.
    assert!(sim.run_until_true(Duration::from_millis(500), |s| s.hub.session_count() == 0));
    sim.run_for(Duration::from_millis(100));
    for v in &viewers {
        assert!(
            sim.peer(*v).is_closed(),
            "{v:?} was told the stream ended: {:?}",
            sim.peer(*v).state()
        );
    }
    let shards: std::collections::HashSet<usize> =
        viewers.iter().map(|v| sim.peer(*v).shard).collect();
    assert_eq!(shards.len(), 2, "viewers on both shards");
    assert!(sim.engines().iter().all(|e| e.session_count() == 0));
    // The stream is free: a viewer must wait for the next publisher (WHEP 409).
    assert!(sim
        .add_viewer("s", PeerOptions::with_video(VideoCodec::H264))
        .is_err());
}

/// A publisher that comes back late in the grace period keeps its viewers past its end: the
/// new publisher's media called the stream's end off on every shard.
#[test]
fn a_publisher_back_within_the_grace_period_keeps_its_viewers_past_it() {
    let (mut sim, p, viewers) = stream_with_viewers(4);
    let grace = Config::default().timeouts.publisher_grace();
    sim.delete(p).expect("DELETE the publisher");
    sim.run_for(grace - Duration::from_secs(2));
    let back = sim
        .add_publisher("s", PeerOptions::with_video(VideoCodec::H264))
        .expect("a new publisher");
    assert!(sim.run_until_true(Duration::from_secs(1), |s| s.peer(back).is_connected()));
    let since = sim.now();
    sim.start_feed(back, Feed::new(Some(VideoCodec::H264), true));
    sim.run_for(Duration::from_secs(5));
    assert_eq!(sim.hub.session_count(), 5, "nobody was ended");
    for v in &viewers {
        assert!(sim.peer(*v).is_connected());
        plays_from_a_keyframe(&sim, back, *v, since);
    }
}

/// A publisher that is back before the grace period ends but sends its first media only after
/// it: no viewer is ended, on the new publisher's shard or any other, because every shard with
/// viewers hears that a publisher started. They play its media when it comes.
#[test]
fn a_publisher_back_in_time_but_slow_to_send_keeps_the_viewers_of_every_shard() {
    let (mut sim, p, viewers) = stream_with_viewers(4);
    let grace = Config::default().timeouts.publisher_grace();
    sim.delete(p).expect("DELETE the publisher");
    sim.run_for(grace - Duration::from_secs(1));
    let back = sim
        .add_publisher("s", PeerOptions::with_video(VideoCodec::H264))
        .expect("a new publisher");
    assert!(sim.run_until_true(Duration::from_millis(500), |s| s.peer(back).is_connected()));
    let shard = sim.peer(back).shard;
    assert!(
        viewers.iter().any(|v| sim.peer(*v).shard != shard),
        "some viewers are on another shard than the new publisher"
    );
    // Well past the grace period, still no media.
    sim.run_for(Duration::from_secs(3));
    assert_eq!(sim.hub.session_count(), 5, "nobody was ended");
    let since = sim.now();
    sim.start_feed(back, Feed::new(Some(VideoCodec::H264), true));
    sim.run_for(Duration::from_secs(2));
    for v in &viewers {
        assert!(sim.peer(*v).is_connected());
        plays_from_a_keyframe(&sim, back, *v, since);
    }
}

#[test]
fn a_vanished_publisher_is_removed_at_consent_expiry_and_can_be_replaced() {
    let (mut sim, p, viewers) = stream_with_viewers(1);
    let killed = sim.now();
    sim.kill(p);
    sim.run_for(Duration::from_secs(20));
    let early = sim.add_publisher("s", PeerOptions::with_video(VideoCodec::H264));
    assert!(
        matches!(early, Err(SimError::Claim(_))),
        "before consent expiry the stream keeps its publisher: {early:?}"
    );
    let consent = Config::default().timeouts.consent();
    assert!(sim.run_until_true(Duration::from_secs(15), |s| s.hub.session_count() == 1));
    let gone = sim.now() - killed;
    // Consent runs from the viewer's last datagram, its answer to the gateway's last check
    // (they go out every second) or its last RTCP, shortly before it vanished.
    assert!(
        gone + Duration::from_secs(1) >= consent && gone <= consent + Duration::from_secs(1),
        "removed {gone:?} after it vanished (consent {consent:?})"
    );
    assert_eq!(sim.engine(sim.peer(p).shard).counters.sessions_expired, 1);
    let next = sim
        .add_publisher("s", PeerOptions::with_video(VideoCodec::H264))
        .expect("a replacement");
    assert!(sim.run_until_true(Duration::from_secs(5), |s| s.peer(next).is_connected()));
    let since = sim.now();
    sim.start_feed(next, Feed::new(Some(VideoCodec::H264), true));
    sim.run_for(Duration::from_secs(2));
    plays_from_a_keyframe(&sim, next, viewers[0], since);
}

#[test]
fn a_vanished_viewer_is_removed_at_consent_expiry() {
    let (mut sim, p, viewers) = stream_with_viewers(2);
    let killed = sim.now();
    sim.kill(viewers[0]);
    assert!(sim.run_until_true(Duration::from_secs(40), |s| s.hub.session_count() == 2));
    let gone = sim.now() - killed;
    let consent = Config::default().timeouts.consent();
    // Consent runs from the viewer's last datagram, its answer to the gateway's last check
    // (they go out every second) or its last RTCP, shortly before it vanished.
    assert!(
        gone + Duration::from_secs(1) >= consent && gone <= consent + Duration::from_secs(1),
        "removed {gone:?} after it vanished (consent {consent:?})"
    );
    assert!(sim.peer(p).is_connected() && sim.peer(viewers[1]).is_connected());
    let since = sim.now();
    sim.run_for(Duration::from_secs(1));
    let feed = sim.feed(p).expect("feed");
    assert!(video_since(&sim, feed, viewers[1], since).len() >= 29);
}

/// A viewer joining a stream that has run for a while, on another shard than the publisher,
/// gets the cached GOP with its audio: audio as well as video arrive without gaps, with an
/// encoder that ignores keyframe requests and with one that honours them.
#[test]
fn a_late_joiner_gets_gapless_audio_and_video() {
    for honor in [false, true] {
        let mut sim = Sim::new(Config::default(), 2);
        let p = sim
            .add_publisher("s", PeerOptions::with_video(VideoCodec::H264))
            .expect("publisher");
        assert!(sim.run_until_true(Duration::from_secs(5), |s| s.connected_count() == 1));
        let mut feed = Feed::new(Some(VideoCodec::H264), true);
        feed.honor_keyframe_requests = honor;
        sim.start_feed(p, feed);
        sim.run_for(Duration::from_millis(1400));
        let v = sim
            .add_viewer("s", PeerOptions::with_video(VideoCodec::H264))
            .expect("viewer");
        assert_ne!(sim.peer(v).shard, sim.peer(p).shard);
        sim.run_for(Duration::from_secs(3));
        let feed = sim.feed(p).expect("feed");
        let peer = sim.peer(v);
        let video: Vec<u64> = peer
            .received_video()
            .map(|f| feed.check_video(&f.data).expect("video"))
            .collect();
        let audio: Vec<u64> = peer
            .received_audio()
            .map(|f| feed.check_audio(&f.data).expect("audio"))
            .collect();
        assert!(video.len() >= 40 && audio.len() >= 80, "{honor}");
        for (name, seq) in [("audio", &audio), ("video", &video)] {
            assert!(
                seq.windows(2).all(|w| w[1] == w[0] + 1),
                "{name} without gaps (honor {honor}): {seq:?}"
            );
        }
    }
}

/// Twenty PLIs from four viewers (on both shards) within 100 ms reach the publisher as one at
/// once, then at most one per 500 ms interval, plus the one held back (RFC 4585 §3.5.4's
/// rate limit, `media.keyframe_request_interval_ms`).
#[test]
fn viewer_keyframe_requests_reach_the_publisher_coalesced() {
    let (mut sim, p, viewers) = stream_with_viewers(4);
    sim.run_for(Duration::from_millis(700));
    sim.stop_feed(p);
    let since = sim.now();
    let plis = |sim: &Sim| {
        sim.peer(p)
            .rtcp_in()
            .plis
            .iter()
            .filter(|t| **t >= since)
            .count()
    };
    for _ in 0..5 {
        for v in &viewers {
            sim.request_keyframe(*v).expect("PLI");
        }
        sim.run_for(Duration::from_millis(20));
    }
    let burst = sim.now() - since;
    sim.run_for(Duration::from_millis(800));
    let got = plis(&sim);
    // One per 500 ms, and one early retry (300 ms) of a PLI no keyframe answered: the feed
    // is stopped, so none does.
    let allowed = 3 + burst.as_millis() as usize / 500;
    assert!(
        (1..=allowed).contains(&got),
        "20 viewer PLIs in {burst:?} reach the publisher as 1..={allowed}: {got}"
    );
}

/// RFC 9725 §4.3.3: after an ICE restart both sides run on the new credentials; media keeps
/// flowing and consent keeps being refreshed well past the consent timeout.
#[test]
fn ice_restart_keeps_media_and_consent_alive() {
    let (mut sim, p, viewers) = stream_with_viewers(1);
    let v = viewers[0];
    let first_etag = sim.peer(v).etag.clone();
    sim.restart_ice(v).expect("ICE restart accepted");
    assert_ne!(sim.peer(v).etag, first_etag, "new ETag after the restart");
    let consent = Config::default().timeouts.consent();
    let since = sim.now();
    sim.run_for(consent + Duration::from_secs(5));
    assert!(sim.peer(v).is_connected());
    assert_eq!(
        sim.hub.session_count(),
        2,
        "consent held on the new credentials"
    );
    let feed = sim.feed(p).expect("feed");
    let got = video_since(&sim, feed, v, since);
    let expected = (consent.as_secs() + 5) * 30;
    assert!(
        got.len() as u64 + 3 >= expected,
        "media continues after the restart: {} of {expected} frames",
        got.len()
    );
    assert!(got.windows(2).all(|w| w[1].0 == w[0].0 + 1), "without gaps");
}

/// Many publisher restarts in a row, with viewers on both shards: each viewer plays every new
/// publisher from a whole keyframe (SPS and PPS included), in the session it started with.
#[test]
fn many_publisher_restarts_start_every_viewer_on_a_whole_keyframe() {
    let (mut sim, mut p, viewers) = stream_with_viewers(4);
    for r in 1..=30u64 {
        sim.delete(p).expect("DELETE the publisher");
        sim.run_for(Duration::from_millis(50 + 37 * (r % 7)));
        p = sim
            .add_publisher("s", PeerOptions::with_video(VideoCodec::H264))
            .expect("a new publisher");
        assert!(sim.run_until_true(Duration::from_secs(5), |s| s.peer(p).is_connected()));
        let since = sim.now();
        sim.start_feed(
            p,
            Feed::new(Some(VideoCodec::H264), true).with_first(r * 1_000_000),
        );
        sim.run_for(Duration::from_millis(1500));
        for v in &viewers {
            let feed = sim.feed(p).expect("feed");
            let first = sim
                .peer(*v)
                .received_video()
                .filter(|f| f.at > since)
                .find(|f| media_index(&f.data) >= r * 1_000_000)
                .map(|f| feed.check_video(&f.data));
            match first {
                Some(Ok(_)) => {}
                other => panic!("restart {r}, viewer {v:?}: first frame {other:?}"),
            }
        }
    }
}

fn media_index(data: &[u8]) -> u64 {
    wishcast::peer::media::frame_index(VideoCodec::H264, data).unwrap_or(0)
}

/// The publisher is replaced while a viewer that just joined is still being sent the old
/// publisher's GOP: the new publisher's first keyframe reaches that viewer whole, SPS and PPS
/// included, rather than queued behind the rest of the old replay.
#[test]
fn a_publisher_replaced_during_a_viewers_gop_replay_starts_it_on_a_whole_keyframe() {
    let mut sim = Sim::new(Config::default(), 1);
    let p = sim
        .add_publisher("s", PeerOptions::with_video(VideoCodec::H264))
        .expect("publisher");
    assert!(sim.run_until_true(Duration::from_secs(5), |s| s.connected_count() == 1));
    // A long GOP of big frames: about 2 MB cached, over a second of replay at 16 Mbit/s.
    let big = |first| {
        Feed::new(Some(VideoCodec::H264), false)
            .with_gop(120)
            .with_sizes(30_000, 20_000)
            .with_first(first)
    };
    sim.start_feed(p, big(0));
    sim.run_for(Duration::from_millis(3500));
    let v = sim
        .add_viewer("s", PeerOptions::with_video(VideoCodec::H264))
        .expect("viewer");
    assert!(sim.run_until_true(Duration::from_secs(5), |s| s.peer(v).is_connected()));
    sim.run_for(Duration::from_millis(100));
    assert!(
        sim.peer(v).received_video().count() < 60,
        "the replay is still under way"
    );
    sim.delete(p).expect("DELETE the publisher");
    let next = sim
        .add_publisher("s", PeerOptions::with_video(VideoCodec::H264))
        .expect("a new publisher");
    assert!(sim.run_until_true(Duration::from_secs(5), |s| s.peer(next).is_connected()));
    sim.start_feed(next, big(1_000_000));
    sim.run_for(Duration::from_secs(2));
    let feed = sim.feed(next).expect("feed");
    let first = sim
        .peer(v)
        .received_video()
        .find(|f| media_index(&f.data) >= 1_000_000)
        .map(|f| feed.check_video(&f.data));
    assert!(
        matches!(first, Some(Ok(1_000_000))),
        "the new publisher's first keyframe arrives whole: {first:?}"
    );
}

/// A viewer's NAT gives it a new mapping mid-stream (or it moves to another network and its
/// client keeps the session): once nothing comes from the old address for 3 s, the gateway's
/// media follows the viewer's next receiver report to the new one, and stays there.
#[test]
fn media_follows_a_viewer_whose_nat_mapping_changes() {
    let mut config = Config::default();
    config.media.direct_egress = true;
    let (mut sim, p, viewers) = stream_with_viewers_on(config, 1);
    let v = viewers[0];
    sim.run_for(Duration::from_secs(1));
    let new_addr: std::net::SocketAddr = "198.51.100.7:40000".parse().expect("addr");
    sim.rebind(v, new_addr);
    let since = sim.now();
    // Past two of str0m's statistics events (every 5 s), which name its own selected pair.
    sim.run_for(Duration::from_secs(12));
    let feed = sim.feed(p).expect("feed");
    // Lost: the 3 s of silence, up to a second to the next report, and the frames until the
    // viewer has a keyframe again (218 of 360 arrived in the run that set this bound).
    let got = video_since(&sim, feed, v, since);
    assert!(
        got.len() >= 200,
        "media reaches the new address: {} of 360 frames",
        got.len()
    );
    let recent = video_since(&sim, feed, v, since + Duration::from_secs(6));
    assert!(
        recent.len() >= 175,
        "and stays there: {} of 180 frames in the last 6 s",
        recent.len()
    );
}
