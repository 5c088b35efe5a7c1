//! Overload on the simulated clock: control messages between shards that must survive a full
//! media queue, admission control by measured load, load shedding, and keyframe requests
//! that cannot flood another shard. The real-socket counterpart is tests/overload.rs.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use wishcast::hub::ClaimError;
use wishcast::peer::VideoCodec;
use wishcast::sim::{is_keyframe, Fate, Feed, MessageKind, PeerId, PeerOptions, Sim, SimError};
use wishcast::Config;

fn h264() -> PeerOptions {
    PeerOptions::with_video(VideoCodec::H264)
}

/// The feed indices of the video frames `viewer` received, each checked intact.
fn video(sim: &Sim, publisher: PeerId, viewer: PeerId) -> Vec<u64> {
    let feed = sim.feed(publisher).expect("feed");
    sim.peer(viewer)
        .received_video()
        .map(|f| {
            feed.check_video(&f.data)
                .unwrap_or_else(|e| panic!("{viewer:?}: {e}"))
        })
        .collect()
}

/// A viewer joins while the media queue into the publisher's shard overflows all the time
/// (another stream's media, published on the other shard, fills it): its subscription is a
/// control message, so it gets through, and the viewer plays once media flows again. Were it
/// queued with media, it would be lost and the viewer stay black with nothing to repair it.
#[test]
fn control_messages_survive_a_full_media_queue() {
    let mut sim = Sim::new(Config::default(), 2);
    // Placement goes to the shard with the fewest sessions, the lower on a tie.
    let pa = sim.add_publisher("a", h264()).expect("publisher a"); // shard 0
    let pc = sim.add_publisher("c", h264()).expect("publisher c"); // shard 1
    let vc = sim.add_viewer("c", h264()).expect("viewer c"); // shard 0
    assert!(sim.run_until_true(Duration::from_secs(5), |s| s.connected_count() == 3));
    assert_ne!(sim.peer(pc).shard, sim.peer(vc).shard);
    let feed = |gop| Feed::new(Some(VideoCodec::H264), false).with_gop(gop);
    sim.start_feed(pc, feed(30).with_sizes(20_000, 20_000));
    sim.start_feed(pa, feed(30));
    sim.run_for(Duration::from_millis(500));
    // Room for 2 delayed media packets, each held 2 s: "c" keeps shard 0's queue full.
    sim.message_capacity = 2;
    let control_sent = Rc::new(RefCell::new(Vec::new()));
    let seen = control_sent.clone();
    sim.set_message_rule(move |m| {
        if m.kind.is_control() {
            seen.borrow_mut().push((m.kind, m.to));
            Fate::Delay(Duration::from_millis(5))
        } else {
            Fate::Delay(Duration::from_secs(2))
        }
    });
    sim.run_for(Duration::from_millis(100));
    let v = sim.add_viewer("a", h264()).expect("viewer a");
    assert_ne!(
        sim.peer(v).shard,
        sim.peer(pa).shard,
        "the viewer is remote"
    );
    sim.run_for(Duration::from_secs(1));
    assert!(
        sim.message_stats().overflowed > 50,
        "the media queue overflowed: {:?}",
        sim.message_stats()
    );
    let to_publisher = (MessageKind::Subscribe, sim.peer(pa).shard);
    assert!(
        control_sent.borrow().contains(&to_publisher),
        "the subscription went into the full queue: {:?}",
        control_sent.borrow()
    );
    sim.clear_message_rule();
    sim.stop_feed(pc);
    let since = sim.now();
    sim.run_for(Duration::from_secs(2));
    let feed = sim.feed(pa).expect("feed");
    let got: Vec<(u64, bool)> = sim
        .peer(v)
        .received_video()
        .filter(|f| f.at > since)
        .map(|f| {
            let i = feed.check_video(&f.data).expect("intact");
            (i, is_keyframe(VideoCodec::H264, &f.data))
        })
        .collect();
    assert!(got.len() > 40, "the viewer of a plays: {got:?}");
    let first_key = got.iter().position(|f| f.1).expect("a keyframe arrives");
    assert!(
        got[first_key..].windows(2).all(|w| w[1].0 == w[0].0 + 1),
        "gapless from the keyframe on: {got:?}"
    );
}

/// A shard whose measured load is at `limits.max_shard_load` takes no new session; when every
/// shard is, the hub refuses with `Overloaded` (503 at the HTTP layer); once load falls, new
/// sessions are taken again.
#[test]
fn admission_skips_busy_shards_and_refuses_when_all_are_busy() {
    let mut sim = Sim::new(Config::default(), 2);
    let p = sim.add_publisher("s", h264()).expect("publisher");
    let busy = sim.peer(p).shard;
    let other = 1 - busy;
    sim.set_load(busy, 0.9);
    for _ in 0..3 {
        let v = sim.add_viewer("s", h264()).expect("viewer admitted");
        assert_eq!(
            sim.peer(v).shard,
            other,
            "new sessions avoid the busy shard"
        );
    }
    // 3 sessions cost 0.6: each new one is predicted to add 0.2 until the next measurement,
    // so two more fit under 0.85 and the third does not.
    sim.set_load(other, 0.6);
    for _ in 0..2 {
        let v = sim.add_viewer("s", h264()).expect("viewer admitted");
        assert_eq!(sim.peer(v).shard, other);
    }
    match sim.add_viewer("s", h264()) {
        Err(SimError::Claim(ClaimError::Overloaded)) => {}
        other => panic!("every shard busy: refused, got {:?}", other.map(|_| ())),
    }
    assert_eq!(
        sim.hub().session_count(),
        6,
        "a refused session leaves nothing behind"
    );
    sim.set_load(busy, 0.3);
    let v = sim.add_viewer("s", h264()).expect("admitted again");
    assert_eq!(sim.peer(v).shard, busy);
    assert!(sim.run_until_true(Duration::from_secs(5), |s| s.connected_count() == 7));
}

/// A shard that stays at `limits.shed_shard_load` for `shed_after_secs` closes its newest
/// viewers, a few per window, with a DTLS close the viewer sees, until its load is below the
/// admission threshold; the older viewers and the publisher keep the whole stream.
#[test]
fn a_shard_that_stays_overloaded_sheds_its_newest_viewers_cleanly() {
    let mut sim = Sim::new(Config::default(), 1);
    let p = sim.add_publisher("s", h264()).expect("publisher");
    assert!(sim.run_until_true(Duration::from_secs(5), |s| s.connected_count() == 1));
    sim.start_feed(p, Feed::new(Some(VideoCodec::H264), true).with_gop(30));
    let mut viewers = Vec::new();
    for _ in 0..40 {
        viewers.push(sim.add_viewer("s", h264()).expect("viewer"));
        sim.run_for(Duration::from_millis(20));
    }
    assert!(sim.run_until_true(Duration::from_secs(5), |s| s.connected_count() == 41));
    sim.run_for(Duration::from_secs(1));

    // Below the threshold nothing happens, however long.
    for _ in 0..8 {
        sim.set_load(0, 0.9);
        sim.run_for(Duration::from_millis(500));
    }
    assert_eq!(sim.engine(0).counters.sessions_shed, 0);

    // At it: 2 s of grace, then one in 32 viewers (rounded up) per window.
    for _ in 0..4 {
        sim.set_load(0, 1.0);
        sim.run_for(Duration::from_millis(500));
    }
    assert_eq!(
        sim.engine(0).counters.sessions_shed,
        0,
        "no shedding within the grace time"
    );
    for _ in 0..3 {
        sim.set_load(0, 1.0);
        sim.run_for(Duration::from_millis(500));
    }
    assert_eq!(
        sim.engine(0).counters.sessions_shed,
        2 + 2 + 2,
        "ceil(40/32), ceil(38/32), ceil(36/32)"
    );
    // Once shedding, it goes on until the load is below the admission threshold (0.85).
    sim.set_load(0, 0.9);
    sim.run_for(Duration::from_millis(500));
    let shed = sim.engine(0).counters.sessions_shed;
    assert_eq!(shed, 6 + 2, "ceil(34/32) more at 0.9");
    sim.set_load(0, 0.5);
    sim.run_for(Duration::from_secs(1));
    sim.set_load(0, 1.0);
    sim.run_for(Duration::from_millis(500));
    assert_eq!(
        sim.engine(0).counters.sessions_shed,
        shed,
        "a fall below the threshold restarts the grace time"
    );

    let (kept, gone) = viewers.split_at(viewers.len() - shed as usize);
    for &v in gone {
        assert!(
            sim.peer(v).is_closed(),
            "{v:?}, among the newest, was closed cleanly: {:?}",
            sim.peer(v).state()
        );
    }
    assert_eq!(sim.hub().session_count(), 1 + kept.len());
    let since = sim.now();
    sim.run_for(Duration::from_secs(1));
    for &v in kept {
        assert!(sim.peer(v).is_connected(), "{v:?} stays");
        let got = video(&sim, p, v);
        assert!(
            got.windows(2).all(|w| w[1] == w[0] + 1),
            "{v:?} got every frame: {got:?}"
        );
        assert!(
            sim.peer(v).received_video().any(|f| f.at > since),
            "{v:?} still plays"
        );
    }
}

/// Viewers on one shard asking for keyframes as fast as they like send the publisher's shard
/// at most one request per `media.keyframe_request_interval_ms`: the control channel between
/// shards is never lossy, so no peer may flood it.
#[test]
fn keyframe_requests_to_another_shard_are_coalesced() {
    let mut sim = Sim::new(Config::default(), 2);
    let p = sim.add_publisher("s", h264()).expect("publisher");
    let viewers: Vec<PeerId> = (0..6)
        .map(|_| sim.add_viewer("s", h264()).expect("viewer"))
        .collect();
    assert!(sim.run_until_true(Duration::from_secs(5), |s| s.connected_count() == 7));
    sim.start_feed(p, Feed::new(Some(VideoCodec::H264), true).with_gop(300));
    sim.run_for(Duration::from_secs(1));
    let remote: Vec<PeerId> = viewers
        .into_iter()
        .filter(|v| sim.peer(*v).shard != sim.peer(p).shard)
        .collect();
    assert!(remote.len() >= 2, "viewers on the other shard");
    let requests = Rc::new(RefCell::new(Vec::new()));
    let seen = requests.clone();
    sim.set_message_rule(move |m| {
        if m.kind == MessageKind::KeyframeRequest {
            seen.borrow_mut().push(m.at);
        }
        Fate::Deliver
    });
    let start = sim.now();
    // Every remote viewer sends a PLI every 20 ms for 2 s: 50 a second each.
    for _ in 0..100 {
        for &v in &remote {
            sim.request_keyframe(v).expect("pli");
        }
        sim.run_for(Duration::from_millis(20));
    }
    let requests = requests.borrow();
    assert!(
        requests.len() >= 3 && requests.len() <= 5,
        "2 s of requests at one per 500 ms: {} ({:?})",
        requests.len(),
        requests.iter().map(|t| *t - start).collect::<Vec<_>>()
    );
    assert!(
        requests
            .windows(2)
            .all(|w| w[1] - w[0] >= Duration::from_millis(500)),
        "spaced by the interval"
    );
}
