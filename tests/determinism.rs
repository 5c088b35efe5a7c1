//! The engine is a pure function of its inputs: the same simulation with the same seed, loss
//! and message delays replays byte for byte, so any failure it finds can be replayed.

use std::time::Duration;

use wishcast::peer::VideoCodec;
use wishcast::sim::{Fate, Feed, MessageKind, PeerOptions, Sim};
use wishcast::Config;

/// What a run leaves behind: its log of datagrams and shard messages, and every video frame
/// each viewer received (simulated arrival time, RTP time, bytes).
type Outcome = (Vec<u8>, Vec<Vec<(Duration, u64, Vec<u8>)>>);

/// Two shards, a publisher, two viewers from the start and one that joins mid-stream; 5 % of
/// video lost towards the gateway and back, some media between shards delayed (reordered).
fn run(seed: u64) -> Outcome {
    let mut sim = Sim::with_seed(Config::default(), 2, seed);
    sim.record_log(true);
    let start = sim.now();
    let p = sim
        .add_publisher("s", PeerOptions::with_video(VideoCodec::H264))
        .expect("publisher");
    let mut viewers: Vec<_> = (0..2)
        .map(|_| {
            sim.add_viewer("s", PeerOptions::with_video(VideoCodec::H264))
                .expect("viewer")
        })
        .collect();
    assert!(sim.run_until_true(Duration::from_secs(5), |s| s.connected_count() == 3));
    sim.set_drop(|d| d.is_video_media() && d.rtp().is_some_and(|r| r.nth % 20 == 7));
    sim.set_message_rule(|m| {
        if m.kind == MessageKind::Media && m.nth % 10 == 3 {
            Fate::Delay(Duration::from_millis(3))
        } else {
            Fate::Deliver
        }
    });
    sim.start_feed(p, Feed::new(Some(VideoCodec::H264), true));
    sim.run_for(Duration::from_millis(1500));
    viewers.push(
        sim.add_viewer("s", PeerOptions::with_video(VideoCodec::H264))
            .expect("late viewer"),
    );
    sim.run_for(Duration::from_millis(1500));
    let frames = viewers
        .iter()
        .map(|v| {
            sim.peer(*v)
                .received_video()
                .map(|f| (f.at - start, f.rtp_time, f.data.to_vec()))
                .collect()
        })
        .collect();
    (by_instant(sim.log()), frames)
}

/// The log with the lines of each instant sorted. str0m orders the datagrams one peer sends at
/// one instant (audio and video due together) by its own hash-map iteration, which no seed
/// reaches; what each party sends and when is compared exactly.
fn by_instant(log: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(log);
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_by_key(|l| l.split(' ').next().and_then(|t| t.parse::<u128>().ok()));
    let mut out = Vec::new();
    for group in lines.chunk_by(|a, b| a.split(' ').next() == b.split(' ').next()) {
        let mut group = group.to_vec();
        group.sort();
        for l in group {
            out.extend_from_slice(l.as_bytes());
            out.push(b'\n');
        }
    }
    out
}

#[test]
fn the_same_seed_replays_the_same_run_byte_for_byte() {
    let (log, frames) = run(7);
    let text = String::from_utf8_lossy(&log);
    for what in [
        " stun ",
        " dtls ",
        " rtp ",
        " rtcp ",
        " media s ",
        " subscribe s ",
    ] {
        assert!(text.contains(what), "the log records {what:?}");
    }
    assert!(
        frames.iter().all(|f| f.len() > 40),
        "every viewer got video"
    );
    let (again, frames_again) = run(7);
    if log != again {
        let first = text
            .lines()
            .zip(String::from_utf8_lossy(&again).lines())
            .position(|(a, b)| a != b);
        let again = String::from_utf8_lossy(&again);
        let at = first.unwrap_or(0);
        let around = |t: &str| {
            t.lines()
                .skip(at.saturating_sub(2))
                .take(3)
                .collect::<Vec<_>>()
                .join("\n")
        };
        panic!(
            "the logs part at line {first:?}:\n{}\n---\n{}",
            around(&text),
            around(&again)
        );
    }
    assert_eq!(frames, frames_again, "the same frames at the same times");
    let (other, _) = run(8);
    assert_ne!(log, other, "another seed gives another run");
}
