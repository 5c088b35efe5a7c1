//! Adaptive bitrate in the deterministic simulation: a viewer whose path carries less than
//! the largest simulcast layer settles on a layer that fits, from the loss in its own
//! receiver reports, and moves up once the path has room again.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use wishcast::config::Config;
use wishcast::peer::{Feed, PeerOptions, VideoCodec};
use wishcast::sim::{PeerId, Sim, Way};

/// Layers named so that their names say nothing of their size: "b" is the largest.
const LAYERS: [(&str, usize); 3] = [("a", 16), ("b", 1), ("c", 4)];
const CODEC: VideoCodec = VideoCodec::Vp8;
/// 10,000-byte frames at 30 per second: "b" is 2.4 Mbit/s, "c" 600 kbit/s, "a" 150 kbit/s.
const FRAME_BYTES: usize = 10_000;

fn feed() -> Feed {
    Feed::new(Some(CODEC), true)
        .with_fps(30)
        .with_gop(60)
        .with_sizes(FRAME_BYTES, FRAME_BYTES)
        .with_layers(&LAYERS)
}

/// A publisher sending [`feed`] for two seconds already, its layers' rates measured.
fn layered_publisher(sim: &mut Sim) -> PeerId {
    let p = sim
        .add_publisher(
            "s",
            PeerOptions {
                simulcast: LAYERS.iter().map(|(r, _)| r.to_string()).collect(),
                ..PeerOptions::with_video(CODEC)
            },
        )
        .expect("publisher accepted");
    assert!(sim.run_until_true(Duration::from_secs(2), |s| s.connected_count() == 1));
    sim.start_feed(p, feed());
    sim.run_for(Duration::from_secs(2));
    p
}

/// A token bucket on the gateway → viewer direction: `bps` with a `burst` of bytes, and
/// datagrams over it dropped, as a policer does. `on` switches it.
fn cap(
    bps: f64,
    burst: f64,
    on: Rc<Cell<bool>>,
    viewer: PeerId,
) -> impl FnMut(&wishcast::sim::Datagram<'_>) -> bool {
    let mut tokens = burst;
    let mut last: Option<Instant> = None;
    move |d| {
        if d.way != Way::FromGateway || d.peer != viewer {
            return false;
        }
        let elapsed = last.map_or(0.0, |t| d.at.saturating_duration_since(t).as_secs_f64());
        last = Some(d.at);
        tokens = (tokens + elapsed * bps / 8.0).min(burst);
        if !on.get() {
            return false;
        }
        let size = d.contents.len() as f64;
        if tokens >= size {
            tokens -= size;
            false
        } else {
            true
        }
    }
}

/// A bottleneck with a queue on the gateway → viewer direction: `bps`, datagrams waiting
/// their turn, and those that would wait longer than `depth` dropped (a drop-tail queue, as
/// a home router's). What each datagram waited is recorded.
#[derive(Default)]
struct Queue {
    /// When the queue is empty again, as an offset from the first datagram.
    free_at: Duration,
    first: Option<Instant>,
    /// The wait of the datagram the drop rule just let through, for the delay rule.
    wait: Option<(u64, Duration)>,
    /// (when, wait) of each datagram through; datagrams dropped.
    waits: Vec<(Instant, Duration)>,
    dropped: u64,
}

fn queue(sim: &mut Sim, bps: f64, depth: Duration, viewer: PeerId) -> Rc<RefCell<Queue>> {
    let q = Rc::new(RefCell::new(Queue::default()));
    let q2 = q.clone();
    sim.set_drop(move |d| {
        if d.way != Way::FromGateway || d.peer != viewer {
            return false;
        }
        let mut q = q2.borrow_mut();
        let first = *q.first.get_or_insert(d.at);
        let now = d.at.saturating_duration_since(first);
        let start = q.free_at.max(now);
        let wait = start - now;
        if wait > depth {
            q.dropped += 1;
            return true;
        }
        q.free_at = start + Duration::from_secs_f64(d.contents.len() as f64 * 8.0 / bps);
        q.wait = Some((d.nth, wait));
        q.waits.push((d.at, wait));
        false
    });
    let q3 = q.clone();
    sim.set_delay(move |d| {
        let mut q = q3.borrow_mut();
        match q.wait {
            Some((nth, wait)) if nth == d.nth && d.way == Way::FromGateway && d.peer == viewer => {
                q.wait = None;
                wait
            }
            _ => Duration::ZERO,
        }
    });
    q
}

/// A viewer on automatic layer choice that asks for keyframes as a player does.
fn auto_viewer(sim: &mut Sim) -> PeerId {
    sim.add_viewer(
        "s",
        PeerOptions {
            request_keyframes: true,
            ..PeerOptions::with_video(CODEC)
        },
    )
    .expect("viewer accepted")
}

/// The layer (index into `LAYERS`) of each video frame `v` received in `[from, to)`.
fn layers_between(sim: &Sim, p: PeerId, v: PeerId, from: Instant, to: Instant) -> Vec<usize> {
    let feed = sim.feed(p).expect("feed");
    sim.peer(v)
        .received_video()
        .filter(|f| f.at >= from && f.at < to)
        .filter_map(|f| feed.check_layer(&f.data).ok().map(|(_, l)| l))
        .collect()
}

#[test]
fn a_capped_viewer_settles_on_a_layer_that_fits_and_moves_up_when_the_cap_lifts() {
    let seed = 1;
    let mut sim = Sim::with_seed(Config::default(), 1, seed);
    let p = layered_publisher(&mut sim);
    let v = auto_viewer(&mut sim);
    let capped = Rc::new(Cell::new(true));
    sim.set_drop(cap(1_000_000.0, 30_000.0, capped.clone(), v));
    assert!(sim.run_until_true(Duration::from_secs(3), |s| s.connected_count() == 2));
    let start = sim.now();
    sim.run_for(Duration::from_secs(20));
    let settled = layers_between(&sim, p, v, start + Duration::from_secs(12), sim.now());
    let fitting = settled.iter().filter(|l| **l != 1).count();
    println!(
        "seed {seed}: capped, seconds 12-20: {} frames, {} of layers that fit",
        settled.len(),
        fitting
    );
    assert!(!settled.is_empty(), "video plays under the cap");
    assert!(
        fitting * 10 >= settled.len() * 8,
        "at least 80 % of the frames from a layer under the cap: {settled:?}"
    );

    capped.set(false);
    let lifted = sim.now();
    let moved = sim.run_until_true(Duration::from_secs(30), |s| {
        layers_between(s, p, v, lifted, s.now())
            .iter()
            .rev()
            .take(30)
            .filter(|l| **l == 1)
            .count()
            == 30
    });
    let after = sim.now().saturating_duration_since(lifted);
    println!("seed {seed}: cap lifted, on the largest layer for a second after {after:?}");
    assert!(
        moved,
        "the viewer moves up to the largest layer once the cap lifts"
    );
}

/// Loss on the publisher's leg hits every layer; each layer's retransmissions (RTX per
/// layer, unwrapped by str0m) repair the one the viewer plays.
#[test]
fn each_layer_is_repaired_from_its_own_retransmissions() {
    let mut sim = Sim::with_seed(Config::default(), 1, 2);
    let p = layered_publisher(&mut sim);
    let v = sim
        .add_viewer("s", PeerOptions::with_video(CODEC))
        .expect("viewer accepted");
    assert!(sim.run_until_true(Duration::from_secs(3), |s| s.connected_count() == 2));
    // Every 20th video packet towards the gateway lost, on every layer; resends pass.
    sim.set_drop(move |d| d.way == Way::ToGateway && d.is_video_media() && d.nth % 20 == 7);
    let start = sim.now();
    sim.run_for(Duration::from_secs(10));
    let feed = sim.feed(p).expect("feed");
    let frames: Vec<_> = sim
        .peer(v)
        .received_video()
        .filter(|f| f.at >= start)
        .collect();
    let layers: Vec<usize> = frames
        .iter()
        .map(|f| feed.check_layer(&f.data).map(|(_, l)| l).expect("intact"))
        .collect();
    assert!(
        frames.len() >= 280,
        "about 30 frames a second: {}",
        frames.len()
    );
    assert!(
        layers.iter().all(|l| *l == 1),
        "the largest layer throughout"
    );
    let up = &sim.peer(p).up;
    assert!(up.dropped > 100, "losses on the way in: {}", up.dropped);
    // The last loss or two may still wait for their NACK when the run ends.
    assert!(
        up.rtx + 2 >= up.dropped,
        "each repaired: {} resent of {}",
        up.rtx,
        up.dropped
    );
    let gaps = frames.iter().filter(|f| !f.contiguous).count();
    assert_eq!(gaps, 0, "every loss repaired");
}

/// A viewer moving to another layer asks the publisher for that layer's keyframe alone, at
/// once: the other layers' encoders are not made to send keyframes they need not.
#[test]
fn a_move_asks_for_the_new_layers_keyframe_alone() {
    let mut sim = Sim::with_seed(Config::default(), 1, 3);
    let p = layered_publisher(&mut sim);
    let v = sim
        .add_viewer("s", PeerOptions::with_video(CODEC))
        .expect("viewer accepted");
    assert!(sim.run_until_true(Duration::from_secs(3), |s| s.connected_count() == 2));
    sim.run_for(Duration::from_secs(1));
    let smallest = sim
        .peer_mut(p)
        .video_send_ssrc(Some("a"))
        .expect("layer a's SSRC");
    let asked = sim.now();
    sim.select_layer(v, Some("a")).expect("layer a picked");
    let moved = sim.run_until_true(Duration::from_secs(2), |s| {
        layers_between(s, p, v, asked, s.now()).contains(&0)
    });
    let took = sim.now().saturating_duration_since(asked);
    println!("picked layer a: its first frame after {took:?}");
    assert!(moved, "the viewer plays layer a");
    let plis: Vec<u32> = sim
        .peer(p)
        .rtcp_in()
        .pli_media
        .iter()
        .filter(|(at, _)| *at >= asked)
        .map(|(_, ssrc)| *ssrc)
        .collect();
    assert!(!plis.is_empty(), "a keyframe asked for");
    assert!(
        plis.iter().all(|s| *s == smallest),
        "layer a's alone: {plis:?}"
    );
    // The feed keyframes every 2 s; the requested one came well before.
    assert!(took < Duration::from_millis(500), "{took:?}");
}

/// One run of [`a_viewer_whose_path_queues_moves_down_before_it_loses`]: the queue's record
/// from the viewer's join, and the layers of the frames it got from second 8 on.
fn queued_run(transport_cc: bool) -> (Rc<RefCell<Queue>>, Vec<usize>, Instant) {
    let mut config = Config::default();
    config.media.transport_cc = transport_cc;
    let mut sim = Sim::with_seed(config, 1, 4);
    let p = layered_publisher(&mut sim);
    let v = auto_viewer(&mut sim);
    // 2 Mbit/s with 400 ms of queue: the largest layer (2.4 Mbit/s) fills it in 2 s.
    let q = queue(&mut sim, 2_000_000.0, Duration::from_millis(400), v);
    assert!(sim.run_until_true(Duration::from_secs(3), |s| s.connected_count() == 2));
    let start = sim.now();
    sim.run_for(Duration::from_secs(20));
    let layers = layers_between(&sim, p, v, start + Duration::from_secs(8), sim.now());
    (q, layers, start)
}

/// A path that queues before it drops (a bottleneck with a buffer): with transport-wide
/// feedback the gateway sees the queue grow and moves the viewer to a layer that fits before
/// the buffer overflows; from receiver reports alone it moves only once packets are lost.
#[test]
fn a_viewer_whose_path_queues_moves_down_before_it_loses() {
    let mut figures = Vec::new();
    for transport_cc in [true, false] {
        let (q, layers, start) = queued_run(transport_cc);
        let q = q.borrow();
        let mut waits: Vec<Duration> = q.waits.iter().map(|w| w.1).collect();
        waits.sort();
        let p95 = waits[waits.len() * 95 / 100];
        let late: Vec<Duration> = q
            .waits
            .iter()
            .filter(|w| w.0 >= start + Duration::from_secs(8))
            .map(|w| w.1)
            .collect();
        let late_mean = late.iter().sum::<Duration>() / late.len().max(1) as u32;
        let fitting = layers.iter().filter(|l| **l != 1).count();
        println!(
            "transport_cc {transport_cc}: dropped {} of {}, queue wait p95 {p95:?}, \
             mean from second 8 {late_mean:?}, frames from second 8 {} ({} of layers that fit)",
            q.dropped,
            q.waits.len() as u64 + q.dropped,
            layers.len(),
            fitting
        );
        figures.push((q.dropped, p95, layers.len(), fitting));
    }
    let (with, without) = (figures[0], figures[1]);
    assert!(with.2 > 0, "video plays");
    assert!(
        with.3 * 10 >= with.2 * 8,
        "with transport-wide feedback, at least 80 % of the frames from a layer that fits"
    );
    assert!(
        with.0 * 2 < without.0,
        "fewer than half the datagrams dropped: {} against {}",
        with.0,
        without.0
    );
    assert!(
        with.1 < without.1,
        "a shorter queue: p95 {:?} against {:?}",
        with.1,
        without.1
    );
}
