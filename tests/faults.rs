//! A panic in the WebRTC stack costs one session, never the shard: each untrusted or mutating
//! str0m call is isolated, and tests inject a panic at each kind of call
//! ([`wishcast::shard::engine::Site`]) on the deterministic simulation.

use std::time::Duration;

use wishcast::peer::VideoCodec;
use wishcast::shard::engine::Site;
use wishcast::shard::SessionError;
use wishcast::sim::{Feed, PeerId, PeerOptions, Sim, SimError};
use wishcast::Config;

/// Video frames `viewer` received after `since` (simulated time).
fn frames_since(sim: &Sim, viewer: PeerId, since: std::time::Instant) -> usize {
    sim.peer(viewer)
        .received_video()
        .filter(|f| f.at > since)
        .count()
}

/// A publisher with a running feed and two viewers (victim, bystander) on one shard.
fn three_on_one_shard() -> (Sim, PeerId, PeerId, PeerId) {
    let mut sim = Sim::new(Config::default(), 1);
    let p = sim
        .add_publisher("s", PeerOptions::with_video(VideoCodec::H264))
        .expect("publisher");
    let victim = sim
        .add_viewer("s", PeerOptions::with_video(VideoCodec::H264))
        .expect("victim");
    let bystander = sim
        .add_viewer("s", PeerOptions::with_video(VideoCodec::H264))
        .expect("bystander");
    assert!(sim.run_until_true(Duration::from_secs(5), |s| s.connected_count() == 3));
    sim.start_feed(p, Feed::new(Some(VideoCodec::H264), true));
    sim.run_for(Duration::from_secs(1));
    (sim, p, victim, bystander)
}

/// A panic at `site` for the victim's session removes that session only: it is counted, and
/// the publisher and the other viewer keep going.
fn contained(site: Site) {
    let (mut sim, p, victim, bystander) = three_on_one_shard();
    let session = sim.peer(victim).session;
    sim.engine_mut(0).faults.arm(site, Some(session));
    let armed = sim.now();
    sim.run_for(Duration::from_secs(2));
    let e = sim.engine(0);
    assert_eq!(e.counters.panics, 1, "{site:?}: the panic is counted");
    assert_eq!(
        e.session_count(),
        2,
        "{site:?}: only the victim's session is gone"
    );
    assert!(
        sim.hub.session(session).is_none(),
        "{site:?}: the hub forgot it"
    );
    assert!(sim.peer(p).is_connected());
    let after = frames_since(&sim, bystander, armed);
    assert!(
        after >= 50,
        "{site:?}: the bystander got {after} frames in 2 s"
    );
}

#[test]
fn a_panic_receiving_a_datagram_costs_one_session() {
    contained(Site::Receive);
}

#[test]
fn a_panic_polling_output_costs_one_session() {
    contained(Site::Poll);
}

#[test]
fn a_panic_on_a_timeout_costs_one_session() {
    contained(Site::Timeout);
}

#[test]
fn a_panic_writing_to_a_viewer_costs_one_session() {
    contained(Site::Write);
}

#[test]
fn a_panic_checking_an_unlearned_address_costs_one_session() {
    let mut sim = Sim::new(Config::default(), 1);
    let p = sim
        .add_publisher("s", PeerOptions::with_video(VideoCodec::H264))
        .expect("publisher");
    // Armed before the viewer's first check arrives: its address is not learned yet.
    let v = sim
        .add_viewer("s", PeerOptions::with_video(VideoCodec::H264))
        .expect("viewer");
    let session = sim.peer(v).session;
    sim.engine_mut(0).faults.arm(Site::Accepts, Some(session));
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.engine(0).counters.panics, 1);
    assert_eq!(sim.engine(0).session_count(), 1);
    assert!(
        sim.peer(p).is_connected(),
        "the publisher connects regardless"
    );
}

#[test]
fn a_panic_parsing_a_datagram_drops_that_datagram_only() {
    let (mut sim, _p, victim, bystander) = three_on_one_shard();
    let dropped = sim.engine(0).counters.datagrams_invalid;
    sim.engine_mut(0).faults.arm(Site::Parse, None);
    let armed = sim.now();
    sim.run_for(Duration::from_secs(2));
    let e = sim.engine(0);
    assert_eq!(e.counters.panics, 1);
    assert_eq!(e.counters.datagrams_invalid, dropped + 1);
    assert_eq!(e.session_count(), 3, "no session is lost to one datagram");
    for v in [victim, bystander] {
        assert!(frames_since(&sim, v, armed) >= 50);
    }
}

#[test]
fn a_panic_on_an_offer_refuses_that_offer_and_the_next_one_is_served() {
    let (mut sim, _p, victim, bystander) = three_on_one_shard();
    sim.engine_mut(0).faults.arm(Site::Offer, None);
    let refused = sim.add_viewer("s", PeerOptions::with_video(VideoCodec::H264));
    assert!(
        matches!(
            refused,
            Err(SimError::Session(SessionError::Negotiation(_)))
        ),
        "{refused:?}"
    );
    assert_eq!(sim.engine(0).counters.panics, 1);
    assert_eq!(sim.hub.session_count(), 3, "the refused offer left the hub");
    let late = sim
        .add_viewer("s", PeerOptions::with_video(VideoCodec::H264))
        .expect("the next offer is served");
    let armed = sim.now();
    sim.run_for(Duration::from_secs(2));
    for v in [victim, bystander, late] {
        assert!(frames_since(&sim, v, armed) >= 30, "{v:?}");
    }
}

#[test]
fn a_panic_on_a_trickled_candidate_ends_that_session_only() {
    let (mut sim, p, victim, bystander) = three_on_one_shard();
    let session = sim.peer(victim).session;
    let etag = sim.peer(victim).etag.clone();
    sim.engine_mut(0).faults.arm(Site::Candidate, Some(session));
    let fragment = "a=candidate:1 1 udp 2130706431 192.0.2.9 40000 typ host\r\n";
    let r = sim.patch(victim, fragment, Some(&etag));
    assert!(
        matches!(r, Err(SimError::Session(SessionError::RestartFailed(_)))),
        "{r:?}"
    );
    let armed = sim.now();
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.engine(0).counters.panics, 1);
    assert_eq!(sim.engine(0).session_count(), 2);
    assert!(sim.peer(p).is_connected());
    assert!(frames_since(&sim, bystander, armed) >= 50);
}

/// The viewers of a shard that is not the publisher's: one of them panics on a write. The
/// others must keep receiving: the shard must not think its viewer list went empty and
/// unsubscribe from the publisher's shard.
#[test]
fn a_panic_in_one_viewers_write_leaves_the_other_viewers_of_its_shard_receiving() {
    let mut sim = Sim::new(Config::default(), 2);
    let p = sim
        .add_publisher("s", PeerOptions::with_video(VideoCodec::H264))
        .expect("publisher");
    let viewers: Vec<PeerId> = (0..4)
        .map(|_| {
            sim.add_viewer("s", PeerOptions::with_video(VideoCodec::H264))
                .expect("viewer")
        })
        .collect();
    assert!(sim.run_until_true(Duration::from_secs(5), |s| s.connected_count() == 5));
    let publisher_shard = sim.peer(p).shard;
    let remote: Vec<PeerId> = viewers
        .iter()
        .copied()
        .filter(|v| sim.peer(*v).shard != publisher_shard)
        .collect();
    assert!(
        remote.len() >= 2,
        "two viewers away from the publisher's shard"
    );
    let shard = sim.peer(remote[0]).shard;
    sim.start_feed(p, Feed::new(Some(VideoCodec::H264), true));
    sim.run_for(Duration::from_secs(1));
    let victim = sim.peer(remote[0]).session;
    sim.engine_mut(shard).faults.arm(Site::Write, Some(victim));
    let armed = sim.now();
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.engine(shard).counters.panics, 1);
    for v in &remote[1..] {
        let got = frames_since(&sim, *v, armed);
        assert!(
            got >= 50,
            "{v:?} got {got} frames in the 2 s after the panic"
        );
    }
}
