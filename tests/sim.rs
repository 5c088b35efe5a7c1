//! Deterministic tests of the shard engine on the in-memory network ([`wishcast::sim`]): str0m
//! peers in frame mode, gateway engines in RTP mode, a fake clock, and loss where a test puts it.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use wishcast::peer::VideoCodec;
use wishcast::sim::{is_keyframe, Class, Feed, PeerId, PeerOptions, Sim, Way};
use wishcast::Config;

/// The video frame indices a viewer received, each checked byte for byte against the feed.
fn checked_video(sim: &Sim, publisher: PeerId, viewer: PeerId) -> Vec<u64> {
    let feed = sim.feed(publisher).expect("publisher has a feed");
    sim.peer(viewer)
        .received_video()
        .map(|f| match feed.check_video(&f.data) {
            Ok(i) => i,
            Err(e) => panic!("viewer {viewer:?}: {e}"),
        })
        .collect()
}

/// The Opus packet indices a viewer received, each checked byte for byte.
fn checked_audio(sim: &Sim, publisher: PeerId, viewer: PeerId) -> Vec<u64> {
    let feed = sim.feed(publisher).expect("publisher has a feed");
    sim.peer(viewer)
        .received_audio()
        .map(|f| match feed.check_audio(&f.data) {
            Ok(i) => i,
            Err(e) => panic!("viewer {viewer:?}: {e}"),
        })
        .collect()
}

fn upto(n: u64) -> Vec<u64> {
    (0..n).collect()
}

/// A publisher and one viewer of stream "s" on a one-shard gateway, connected.
fn pair(codec: VideoCodec) -> (Sim, PeerId, PeerId) {
    let mut sim = Sim::new(Config::default(), 1);
    let p = sim
        .add_publisher("s", PeerOptions::with_video(codec))
        .expect("publisher accepted");
    let v = sim
        .add_viewer("s", PeerOptions::with_video(codec))
        .expect("viewer accepted");
    assert!(
        sim.run_until_true(Duration::from_secs(5), |s| s.connected_count() == 2),
        "ICE + DTLS complete"
    );
    (sim, p, v)
}

// ---- 1. intact delivery -----------------------------------------------------------------------

/// Two seconds of video (keyframes at 0 and 30) and Opus reach the viewer byte for byte, in
/// order, with nothing missing.
fn frames_arrive_intact(codec: VideoCodec) {
    let (mut sim, p, v) = pair(codec);
    sim.start_feed(p, Feed::new(Some(codec), true).with_max_frames(60));
    sim.run_for(Duration::from_millis(2500));

    assert_eq!(checked_video(&sim, p, v), upto(60));
    let first = sim.peer(v).received_video().next().expect("a frame");
    assert!(is_keyframe(codec, &first.data), "starts on a keyframe");
    let sent_audio = sim.feed(p).expect("feed").audio_sent;
    assert!(sent_audio >= 95, "two seconds of 20 ms packets");
    assert_eq!(checked_audio(&sim, p, v), upto(sent_audio));
    assert_eq!(sim.peer(v).stats().discontinuities, 0);
    assert_eq!(sim.engine(0).counters.packets_no_codec, 0);
}

#[test]
fn h264_frames_arrive_byte_for_byte() {
    frames_arrive_intact(VideoCodec::H264);
}

#[test]
fn vp8_frames_arrive_byte_for_byte() {
    frames_arrive_intact(VideoCodec::Vp8);
}

// ---- 2 and 3. loss and retransmission -----------------------------------------------------------

/// Video RTP packets dropped on one leg: the 21st, 22nd (same frame) and 46th of the media SSRC.
const LOST: [u64; 3] = [20, 21, 45];

/// Drops [`LOST`] on `way` of `victim`'s link; returns the sequence numbers dropped.
fn drop_video(sim: &mut Sim, way: Way, victim: PeerId) -> Rc<RefCell<Vec<u16>>> {
    let dropped: Rc<RefCell<Vec<u16>>> = Rc::default();
    let log = dropped.clone();
    sim.set_drop(move |d| {
        let Some(rtp) = d.rtp() else { return false };
        let hit = d.way == way && d.peer == victim && d.is_video_media() && LOST.contains(&rtp.nth);
        if hit {
            log.borrow_mut().push(rtp.seq);
        }
        hit
    });
    dropped
}

/// Loss between gateway and viewer is repaired by the gateway alone: the viewer NACKs exactly the
/// lost packets, the gateway answers with RTX from the viewer's resend buffer, the publisher never
/// hears of it, and every frame arrives intact.
fn viewer_leg_loss_is_repaired_by_the_gateway(codec: VideoCodec) {
    let (mut sim, p, v) = pair(codec);
    let dropped = drop_video(&mut sim, Way::FromGateway, v);
    sim.start_feed(p, Feed::new(Some(codec), true).with_max_frames(60));
    sim.run_for(Duration::from_millis(2500));

    let dropped = dropped.borrow().clone();
    assert_eq!(dropped.len(), 3, "the rule hit");
    let viewer = sim.peer(v);
    let nacked = viewer.rtcp_out().nacked_seqs();
    for s in &dropped {
        assert!(nacked.contains(s), "viewer NACKed {s}: {nacked:?}");
    }
    assert!(
        viewer.down.rtx >= 3,
        "gateway sent RTX for the lost packets: {:?}",
        viewer.down
    );
    let publisher = sim.peer(p);
    assert!(
        publisher.rtcp_in().nacks.is_empty(),
        "the publisher is not asked: {:?}",
        publisher.rtcp_in().nacks
    );
    assert_eq!(publisher.up.rtx, 0, "nothing is re-fetched upstream");

    assert_eq!(checked_video(&sim, p, v), upto(60), "every frame, intact");
    assert_eq!(sim.peer(v).stats().discontinuities, 0);
}

#[test]
fn viewer_leg_loss_is_repaired_by_the_gateway_h264() {
    viewer_leg_loss_is_repaired_by_the_gateway(VideoCodec::H264);
}

#[test]
fn viewer_leg_loss_is_repaired_by_the_gateway_vp8() {
    viewer_leg_loss_is_repaired_by_the_gateway(VideoCodec::Vp8);
}

/// Loss between publisher and gateway: the gateway (str0m in RTP mode) NACKs the publisher for
/// exactly the lost packets, the publisher retransmits them, the gateway forwards the repaired
/// packets into their places, and every viewer frame arrives intact.
fn publisher_leg_loss_is_nacked_upstream(codec: VideoCodec) {
    let (mut sim, p, v) = pair(codec);
    let dropped = drop_video(&mut sim, Way::ToGateway, p);
    sim.start_feed(p, Feed::new(Some(codec), true).with_max_frames(60));
    sim.run_for(Duration::from_millis(2500));

    let dropped = dropped.borrow().clone();
    assert_eq!(dropped.len(), 3, "the rule hit");
    let publisher = sim.peer(p);
    let nacked = publisher.rtcp_in().nacked_seqs();
    for s in &dropped {
        assert!(
            nacked.contains(s),
            "gateway NACKed {s} upstream: {nacked:?}"
        );
    }
    assert!(
        publisher.up.rtx >= 3,
        "publisher retransmitted: {:?}",
        publisher.up
    );

    assert_eq!(checked_video(&sim, p, v), upto(60), "every frame, intact");
    assert_eq!(sim.peer(v).stats().discontinuities, 0);
}

#[test]
fn publisher_leg_loss_is_nacked_upstream_h264() {
    publisher_leg_loss_is_nacked_upstream(VideoCodec::H264);
}

#[test]
fn publisher_leg_loss_is_nacked_upstream_vp8() {
    publisher_leg_loss_is_nacked_upstream(VideoCodec::Vp8);
}

/// An H264 + Opus publisher and one viewer (`opts`) on a one-shard gateway whose viewers'
/// media leaves through its own egress, connected.
fn egress_viewer(opts: PeerOptions) -> (Sim, PeerId, PeerId) {
    let mut config = Config::default();
    config.media.direct_egress = true;
    let mut sim = Sim::new(config, 1);
    let p = sim
        .add_publisher("s", PeerOptions::with_video(VideoCodec::H264))
        .expect("publisher");
    let v = sim.add_viewer("s", opts).expect("viewer");
    assert!(sim.run_until_true(Duration::from_secs(5), |s| s.connected_count() == 2));
    (sim, p, v)
}

/// Players line audio up with video by the sender reports (RFC 3550 §6.4.1), which the
/// gateway's own egress sends for each track: each gives the RTP time of its moment on that
/// track's clock, as the track's own packets show it, and counts no more packets than were
/// sent.
#[test]
fn sender_reports_give_each_tracks_rtp_time_of_their_moment() {
    let (mut sim, p, v) = egress_viewer(PeerOptions::with_video(VideoCodec::H264));
    sim.start_feed(p, Feed::new(Some(VideoCodec::H264), true));
    sim.run_for(Duration::from_millis(4500));

    let reports = sim.peer(v).rtcp_in().sender_reports.clone();
    let frames = sim.peer(v).frames().to_vec();
    let mut checked = [0usize; 2];
    for (at, sr) in &reports {
        let mid = sim
            .peer_mut(v)
            .rx_mid(*sr.ssrc)
            .expect("an SSRC the viewer receives");
        let Some(last) = frames.iter().rev().find(|f| f.mid == mid && f.at <= *at) else {
            continue;
        };
        let (clock, track) = if last.kind.is_audio() {
            (48_000, 1)
        } else {
            (90_000, 0)
        };
        let since = at.saturating_duration_since(last.at).as_secs_f64();
        let expected = (last.rtp_time as u32).wrapping_add((since * clock as f64) as u32);
        let off = (sr.rtp_time.numer() as u32).wrapping_sub(expected) as i32;
        // 20 ms: the report's moment and the packet's arrival are on either side of the
        // same path.
        assert!(
            off.unsigned_abs() < clock / 50,
            "{mid:?}: report says {} at {at:?}, its packets {expected}",
            sr.rtp_time.numer()
        );
        let received = frames
            .iter()
            .filter(|f| f.mid == mid && f.at <= *at)
            .count();
        assert!(
            sr.sender_packet_count as usize >= received,
            "{sr:?} vs {received} frames"
        );
        checked[track] += 1;
    }
    assert!(
        checked.iter().all(|n| *n >= 3),
        "reports checked (video, audio): {checked:?}"
    );
}

/// A viewer's receiver needs its round-trip time to space its NACKs (str0m assumes 100 ms
/// without one). It sends a receiver reference time (RFC 3611 §4.4), and the gateway's own
/// egress answers it with a DLRR beside its next sender report: on a path of 30 ms each way
/// the viewer measures about 60 ms.
#[test]
fn viewers_learn_their_round_trip_time_from_the_egress() {
    let (mut sim, p, v) = egress_viewer(PeerOptions {
        stats_interval: Some(Duration::from_millis(500)),
        ..PeerOptions::with_video(VideoCodec::H264)
    });
    sim.set_delay(move |d| {
        if d.peer == v {
            Duration::from_millis(30)
        } else {
            Duration::ZERO
        }
    });
    sim.start_feed(p, Feed::new(Some(VideoCodec::H264), true));
    sim.run_for(Duration::from_secs(5));

    let stats = sim.peer(v).ingress().to_vec();
    assert!(!stats.is_empty(), "ingress statistics");
    for s in &stats {
        let rtt = s.rtt.expect("a round-trip time on every track");
        assert!(
            (Duration::from_millis(55)..Duration::from_millis(80)).contains(&rtt),
            "{:?}: {rtt:?}",
            s.mid
        );
    }
}

/// The engine's CPU per viewer join, without media: the WHEP answer, ICE and the DTLS
/// handshake (OpenSSL, ECDHE and ECDSA) as the shard runs them, HTTP left out. A figure for
/// BENCHMARKS.md, not a test: `cargo test --release --test sim engine_time_per_join --
/// --ignored --nocapture`.
#[test]
#[ignore]
fn engine_time_per_join() {
    const VIEWERS: usize = 300;
    let mut sim = Sim::new(Config::default(), 1);
    // The gateway's DTLS (OpenSSL), not the simulation's own.
    sim.set_crypto_provider(wishcast::dtls::crypto_provider());
    let codec = VideoCodec::H264;
    sim.add_publisher("j", PeerOptions::with_video(codec))
        .expect("publisher");
    assert!(sim.run_until_true(Duration::from_secs(5), |s| s.connected_count() == 1));
    sim.reset_engine_busy();
    for _ in 0..VIEWERS {
        sim.add_viewer("j", PeerOptions::sink(codec))
            .expect("viewer");
        sim.run_for(Duration::from_millis(2));
    }
    assert!(
        sim.run_until_true(Duration::from_secs(10), |s| s.connected_count()
            == VIEWERS + 1)
    );
    let per_join = sim.engine_busy_total() / VIEWERS as u32;
    eprintln!(
        "engine time per join: {per_join:?} ({:.0} joins per second of one core)",
        1.0 / per_join.as_secs_f64()
    );
}

// ---- 4. scale ---------------------------------------------------------------------------------

/// One publisher, many viewers over two shards in one process: all connect, and every viewer
/// gets the first frames intact and in order, across the shard boundary too.
#[test]
fn many_viewers_over_two_shards_get_every_frame() {
    const VIEWERS: usize = 500;
    const FRAMES: u64 = 15;
    let wall = Instant::now();
    let mut sim = Sim::new(Config::default(), 2);
    let p = sim
        .add_publisher("s", PeerOptions::with_video(VideoCodec::H264))
        .expect("publisher accepted");
    let viewer_opts = PeerOptions {
        raw_packets: false,
        ..PeerOptions::with_video(VideoCodec::H264)
    };
    let viewers: Vec<PeerId> = (0..VIEWERS)
        .map(|_| {
            sim.add_viewer("s", viewer_opts.clone())
                .expect("viewer accepted")
        })
        .collect();
    assert!(
        sim.run_until_true(Duration::from_secs(10), |s| s.connected_count()
            == VIEWERS + 1),
        "all connect: {} of {}",
        sim.connected_count(),
        VIEWERS + 1
    );
    let connected = wall.elapsed();

    sim.start_feed(
        p,
        Feed::new(Some(VideoCodec::H264), true)
            .with_max_frames(FRAMES)
            .with_sizes(2400, 3600),
    );
    sim.run_for(Duration::from_millis(1000));

    let per_shard: Vec<usize> = sim.engines().iter().map(|e| e.session_count()).collect();
    assert_eq!(per_shard.iter().sum::<usize>(), VIEWERS + 1);
    assert!(
        per_shard.iter().all(|n| *n >= VIEWERS / 2),
        "spread over both shards: {per_shard:?}"
    );
    for &v in &viewers {
        assert_eq!(checked_video(&sim, p, v), upto(FRAMES), "viewer {v:?}");
    }
    let forwarded: u64 = sim
        .engines()
        .iter()
        .map(|e| e.counters.packets_forwarded)
        .sum();
    assert!(sim.message_stats().delivered > 0, "packets crossed shards");
    eprintln!(
        "{VIEWERS} viewers: connected in {connected:?}, total {:?} wall; {forwarded} packets \
         forwarded, engines busy {:?}",
        wall.elapsed(),
        sim.engine_busy_total()
    );
}

// ---- 5. keyframe requests -----------------------------------------------------------------------

/// The PLIs a publisher received at or after `since`.
fn plis_since(sim: &Sim, publisher: PeerId, since: Instant) -> usize {
    sim.peer(publisher)
        .rtcp_in()
        .plis
        .iter()
        .filter(|t| **t >= since)
        .count()
}

/// Viewers joining need a keyframe (no GOP cache, the encoder sends one only when asked), so each
/// join is a keyframe request; the publisher still gets at most one PLI per 500 ms interval:
/// `ceil(elapsed / 500 ms) + 1` over any window.
fn keyframe_requests_are_coalesced(join_gap: Duration) {
    const VIEWERS: usize = 50;
    let mut config = Config::default();
    config.media.gop_cache = false;
    config.media.keyframe_request_interval_ms = 500;
    let mut sim = Sim::new(config, 2);
    let p = sim
        .add_publisher("s", PeerOptions::with_video(VideoCodec::H264))
        .expect("publisher accepted");
    assert!(sim.run_until_true(Duration::from_secs(5), |s| s.connected_count() == 1));
    sim.start_feed(p, Feed::new(Some(VideoCodec::H264), true).with_gop(0));
    sim.run_for(Duration::from_secs(1));

    // Real joins finish ICE + DTLS at scattered times: give each viewer its own path delay
    // (0 to 30 ms each way), or all 50 would connect in the same instant and str0m would merge
    // their requests into one PLI without any help from the gateway.
    sim.set_delay(move |d| {
        if d.peer == p {
            Duration::ZERO
        } else {
            Duration::from_millis((d.peer.0 as u64 * 7919) % 31)
        }
    });
    let start = sim.now();
    let viewer_opts = PeerOptions {
        raw_packets: false,
        ..PeerOptions::with_video(VideoCodec::H264)
    };
    let mut viewers = Vec::new();
    for _ in 0..VIEWERS {
        viewers.push(sim.add_viewer("s", viewer_opts.clone()).expect("viewer"));
        if !join_gap.is_zero() {
            sim.run_for(join_gap);
        }
    }
    let all_playing = |s: &Sim| viewers.iter().all(|v| s.peer(*v).stats().video_frames > 0);
    assert!(
        sim.run_until_true(Duration::from_secs(5), all_playing),
        "every viewer gets a keyframe"
    );
    // Requests held back inside an interval go out when it ends: count them too.
    sim.run_for(Duration::from_secs(1));
    let elapsed = sim.now() - start;

    let plis = plis_since(&sim, p, start);
    let bound = elapsed.as_millis().div_ceil(500) as usize + 1;
    assert!(plis >= 1, "the joins asked for a keyframe");
    let requests: u64 = sim
        .engines()
        .iter()
        .map(|e| e.counters.keyframe_requests_sent)
        .sum();
    assert!(
        requests as usize <= bound + 1,
        "the shards handed str0m {requests} PLIs (one before the joins)"
    );
    assert!(
        plis <= bound,
        "{plis} PLIs for {VIEWERS} joins in {elapsed:?}: at most {bound}"
    );
    // Consecutive PLIs are at least an interval apart.
    let times: Vec<Instant> = sim.peer(p).rtcp_in().plis.clone();
    for w in times.windows(2) {
        assert!(
            w[1] - w[0] >= Duration::from_millis(500),
            "PLIs {:?} apart",
            w[1] - w[0]
        );
    }
    for &v in &viewers {
        let first = sim.peer(v).received_video().next().expect("a frame");
        assert!(
            is_keyframe(VideoCodec::H264, &first.data),
            "viewer {v:?} starts on a keyframe"
        );
    }
}

#[test]
fn keyframe_requests_of_simultaneous_joins_are_coalesced() {
    keyframe_requests_are_coalesced(Duration::ZERO);
}

#[test]
fn keyframe_requests_of_staggered_joins_are_coalesced() {
    // 50 joins over two seconds: without coalescing, 50 PLIs.
    keyframe_requests_are_coalesced(Duration::from_millis(40));
}

// ---- SRTP profile ----------------------------------------------------------------------------

/// Collects formatted log lines in memory.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// SRTP runs on AEAD-AES-GCM (about a third of AES-CM-HMAC-SHA1's cost per packet with
/// aws-lc-rs), never AES_CM_128_HMAC_SHA1_80, when the peer supports it. The gateway is the
/// DTLS client (it answers `a=setup:active`) and offers GCM first; the peer, the DTLS server,
/// picks. str0m only logs the choice, so the test reads its log.
#[test]
fn srtp_uses_aead_aes_gcm() {
    let logs = Captured::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("str0m=debug")
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let (mut sim, _, _) = pair(VideoCodec::Vp8);
        // The peers are connected once they have sent their last flight; the gateway takes
        // its keys when that flight arrives.
        sim.run_for(Duration::from_millis(200));
    });
    let text =
        String::from_utf8_lossy(&logs.0.lock().unwrap_or_else(|p| p.into_inner())).to_string();
    let profiles: Vec<&str> = text
        .lines()
        .filter_map(|l| {
            l.split("DTLS set SRTP keying material and profile: ")
                .nth(1)
        })
        .collect();
    assert_eq!(
        profiles.len(),
        4,
        "both ends of both sessions report a profile: {profiles:?}"
    );
    assert!(
        profiles.iter().all(|p| p.contains("GCM")),
        "AEAD-AES-GCM negotiated: {profiles:?}"
    );
}

// ---- ICE answers before the peer's own check ------------------------------------------------

/// The gateway checks a peer's candidate while the peer's own checks are lost: the answers
/// come from an address the gateway has not learned yet and carry no ufrag of its. They must
/// reach the session, not be dropped as from an unknown source (a browser's answer often
/// arrives first).
#[test]
fn ice_answers_from_unlearned_addresses_reach_their_session() {
    let mut sim = Sim::new(Config::default(), 1);
    // Binding requests (type 0x0001) from peers are lost for the first 600 ms; their answers
    // (0x0101) to the gateway's checks go through.
    let start = sim.now();
    sim.set_drop(move |d| {
        d.way == Way::ToGateway
            && d.class == Class::Stun
            && d.contents.starts_with(&[0x00, 0x01])
            && d.at < start + Duration::from_millis(600)
    });
    let p = sim
        .add_publisher("s", PeerOptions::with_video(VideoCodec::Vp8))
        .expect("publisher accepted");
    sim.run_for(Duration::from_millis(500));
    let answers = sim.engine(0).counters.datagrams_in;
    assert!(answers > 0, "the peer answered the gateway's checks");
    assert_eq!(
        sim.engine(0).counters.datagrams_unknown_source,
        0,
        "answers to the gateway's own checks were dropped as unknown"
    );
    assert!(
        sim.run_until_true(Duration::from_secs(5), |s| s.peer(p).is_connected()),
        "ICE + DTLS complete once the peer's checks get through"
    );
    assert_eq!(sim.engine(0).counters.datagrams_unknown_source, 0);
}

// ---- shard channels that reorder and overflow -----------------------------------------------

/// A publisher on one shard and a viewer on the other (2 shards), connected, with a feed.
fn across_shards() -> (Sim, PeerId, PeerId) {
    let mut sim = Sim::new(Config::default(), 2);
    let p = sim
        .add_publisher("s", PeerOptions::with_video(VideoCodec::H264))
        .expect("publisher");
    let v = sim
        .add_viewer("s", PeerOptions::with_video(VideoCodec::H264))
        .expect("viewer");
    assert_ne!(sim.peer(p).shard, sim.peer(v).shard, "the viewer is remote");
    assert!(sim.run_until_true(Duration::from_secs(5), |s| s.connected_count() == 2));
    (sim, p, v)
}

/// Media between shards that arrives out of order (every third packet 15 ms late) still
/// gives the remote viewer every frame, intact and in order.
#[test]
fn reordered_media_between_shards_reaches_the_remote_viewer_intact() {
    let (mut sim, p, v) = across_shards();
    sim.set_message_rule(|m| match (m.kind, m.nth % 3) {
        (wishcast::sim::MessageKind::Media, 1) => {
            wishcast::sim::Fate::Delay(Duration::from_millis(15))
        }
        _ => wishcast::sim::Fate::Deliver,
    });
    sim.start_feed(
        p,
        Feed::new(Some(VideoCodec::H264), false).with_max_frames(60),
    );
    sim.run_for(Duration::from_secs(3));
    assert!(
        sim.message_stats().delayed > 20,
        "{:?}",
        sim.message_stats()
    );
    assert_eq!(checked_video(&sim, p, v), upto(60));
}

/// A shard whose queue overflows (media held back 200 ms, room for 20) loses media, counts
/// it, and its viewer recovers on a keyframe once the queue drains.
#[test]
fn an_overfilled_shard_queue_drops_media_and_the_viewer_recovers() {
    let (mut sim, p, v) = across_shards();
    sim.message_capacity = 20;
    sim.set_message_rule(|m| match m.kind {
        wishcast::sim::MessageKind::Media => wishcast::sim::Fate::Delay(Duration::from_millis(200)),
        _ => wishcast::sim::Fate::Deliver,
    });
    sim.start_feed(p, Feed::new(Some(VideoCodec::H264), true).with_gop(300));
    sim.run_for(Duration::from_secs(2));
    assert!(
        sim.message_stats().overflowed > 0,
        "{:?}",
        sim.message_stats()
    );
    sim.clear_message_rule();
    sim.run_for(Duration::from_secs(3));
    // Once the queue drained, the stream flows again: the last 60 frames (2 s) in order and
    // without gaps, up to what the publisher sent last.
    let got = checked_video(&sim, p, v);
    let tail = &got[got.len().saturating_sub(60)..];
    assert!(
        tail.len() == 60 && tail.windows(2).all(|w| w[1] == w[0] + 1),
        "frames flow again, in order: {tail:?}"
    );
    let sent = sim.feed(p).map_or(0, |f| f.video_sent);
    assert!(
        tail[59] + 2 >= sent,
        "and are current: {} of {sent}",
        tail[59]
    );
}

/// A viewer on another shard subscribes while the publisher's session is registered but its
/// `Create` is still on the way to its shard: the publisher's shard must keep that
/// subscription when the session arrives, and the viewer gets the stream.
#[test]
fn a_subscription_made_while_the_publisher_is_being_created_is_kept() {
    let mut sim = Sim::new(Config::default(), 2);
    let p = sim
        .add_peer_held(
            wishcast::session::Role::Publish,
            "s",
            PeerOptions::with_video(VideoCodec::H264),
        )
        .expect("publisher registered");
    let v = sim
        .add_viewer("s", PeerOptions::with_video(VideoCodec::H264))
        .expect("viewer");
    assert_ne!(sim.peer(p).shard, sim.peer(v).shard);
    assert!(sim.run_until_true(Duration::from_secs(5), |s| s.peer(v).is_connected()));
    sim.release(p).expect("the publisher's session is created");
    assert!(sim.run_until_true(Duration::from_secs(5), |s| s.connected_count() == 2));
    sim.start_feed(
        p,
        Feed::new(Some(VideoCodec::H264), true).with_max_frames(30),
    );
    sim.run_for(Duration::from_secs(2));
    assert_eq!(
        checked_video(&sim, p, v),
        upto(30),
        "the viewer gets the stream"
    );
}
