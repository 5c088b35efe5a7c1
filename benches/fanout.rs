//! Fan-out cost of one shard: 1 publisher → N viewers on one `Engine`, driven by the in-memory
//! network of `wishcast::sim` (no sockets, no syscalls).
//!
//! The publisher sends ~2.5 Mbit/s H264 at 30 fps (~10 RTP packets per frame, a keyframe every
//! 2 s) and Opus at 50 packets/s. After every viewer has connected and a warm-up second, the
//! bench times only the engine's own calls (datagrams in, timeouts, messages: rewriting, SRTP
//! protect, RTCP, the per-viewer resend buffers) over a few simulated seconds, and divides by the
//! packets it forwarded to viewers.
//!
//! Most viewers are "sinks": all of them do ICE + DTLS and keep their sessions alive, but only
//! `FULL` of them receive media (and are checked to get every frame); RTP and RTCP to the others
//! is dropped on the wire, as a kernel drop rule would on a real test rig, so their decryption
//! neither costs time nor evicts the engine's data from the CPU caches. The engine does the same
//! work either way.
//!
//! `cargo bench --bench fanout` runs N = 50, 200, 1000 several times each and prints the fastest
//! trial (the least disturbed by other load on the machine). Environment knobs for experiments:
//! `FANOUT_VIEWERS=N` (one trial of N only), `FANOUT_ALL_FULL=1` (every viewer receives and
//! decrypts), `FANOUT_RESEND=packets` (`media.resend_buffer_packets`), `FANOUT_EGRESS=str0m`
//! (`media.direct_egress` off: viewers' media through str0m's send path), `FANOUT_DTLS=dimpl` (the
//! sessions' DTLS on dimpl, the simulation's own, instead of the gateway's OpenSSL).

use std::time::{Duration, Instant};

use wishcast::peer::VideoCodec;
use wishcast::sim::{Class, Feed, PeerId, PeerOptions, Sim, Way};
use wishcast::Config;

const BITRATE: u64 = 2_500_000;
const FPS: u32 = 30;
/// Viewers that receive media, besides the sinks.
const FULL: usize = 4;

struct Trial {
    viewers: usize,
    sim_secs: f64,
    forwarded: u64,
    datagrams_out: u64,
    busy: Duration,
    /// CPU time of this thread over the measured window (engine and peers), if reported.
    thread_cpu: Option<Duration>,
    wall: Duration,
    /// Video frames per second each receiving viewer got (should be the feed's 30).
    full_fps: f64,
}

impl Trial {
    fn ns_per_packet(&self) -> f64 {
        self.busy.as_nanos() as f64 / self.forwarded.max(1) as f64
    }
    fn packets_per_viewer_sec(&self) -> f64 {
        self.forwarded as f64 / self.viewers as f64 / self.sim_secs
    }
}

/// This thread's CPU time from `/proc/thread-self/schedstat` (first field, nanoseconds).
fn thread_cpu() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn run(viewers: usize, measure: Duration, all_full: bool) -> Trial {
    let mut config = Config::default();
    // The gateway's own egress unless asked for str0m's send path.
    config.media.direct_egress = !std::env::var("FANOUT_EGRESS").is_ok_and(|v| v == "str0m");
    if let Some(n) = env("FANOUT_RESEND") {
        config.media.resend_buffer_packets = n;
    }
    let mut sim = Sim::new(config, 1);
    // The gateway's DTLS (OpenSSL; the bench drops no handshake datagram), or with
    // FANOUT_DTLS=dimpl the simulation's own: SRTP is str0m's either way.
    if std::env::var("FANOUT_DTLS").as_deref() != Ok("dimpl") {
        sim.set_crypto_provider(wishcast::dtls::crypto_provider());
    }
    let publisher = sim
        .add_publisher("bench", PeerOptions::sink(VideoCodec::H264))
        .expect("publisher accepted");
    let ids: Vec<PeerId> = (0..viewers)
        .map(|_| {
            sim.add_viewer("bench", PeerOptions::sink(VideoCodec::H264))
                .expect("viewer accepted")
        })
        .collect();
    let all = viewers + 1;
    assert!(
        sim.run_until_true(Duration::from_secs(30), |s| s.connected_count() == all),
        "only {} of {all} peers connected",
        sim.connected_count()
    );
    let full: Vec<PeerId> = if all_full {
        ids.clone()
    } else {
        ids.iter().copied().take(FULL).collect()
    };
    if !all_full {
        let receiving = full.clone();
        sim.set_drop(move |d| {
            d.way == Way::FromGateway
                && matches!(d.class, Class::Rtp(_) | Class::Rtcp)
                && d.peer != publisher
                && !receiving.contains(&d.peer)
        });
    }
    sim.start_feed(publisher, Feed::at_bitrate(VideoCodec::H264, BITRATE, FPS));
    sim.run_for(Duration::from_secs(1));

    let forwarded0 = sim.engine(0).counters.packets_forwarded;
    let out0: u64 = sim.peers().iter().map(|p| p.down.datagrams).sum();
    let frames0: u64 = full.iter().map(|p| sim.peer(*p).stats().video_frames).sum();
    sim.reset_engine_busy();
    let cpu0 = thread_cpu();
    let wall = Instant::now();
    sim.run_for(measure);
    let wall = wall.elapsed();
    let thread_cpu = match (cpu0, thread_cpu()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let forwarded = sim.engine(0).counters.packets_forwarded - forwarded0;
    let datagrams_out = sim.peers().iter().map(|p| p.down.datagrams).sum::<u64>() - out0;
    let frames = full
        .iter()
        .map(|p| sim.peer(*p).stats().video_frames)
        .sum::<u64>()
        - frames0;
    Trial {
        viewers,
        sim_secs: measure.as_secs_f64(),
        forwarded,
        datagrams_out,
        busy: sim.engine_busy(0),
        thread_cpu,
        wall,
        full_fps: frames as f64 / full.len() as f64 / measure.as_secs_f64(),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; no other arguments are read.
    let all_full = env::<u8>("FANOUT_ALL_FULL").is_some_and(|v| v == 1);
    let plan: Vec<(usize, u64, usize)> = match env::<usize>("FANOUT_VIEWERS") {
        Some(n) => vec![(n, 2, 1)],
        None => vec![(50, 3, 5), (200, 3, 3), (1000, 2, 3)],
    };
    let started = Instant::now();
    let mut best: Vec<Trial> = Vec::new();
    for (viewers, secs, trials) in plan {
        let mut results: Vec<Trial> = (0..trials)
            .map(|_| run(viewers, Duration::from_secs(secs), all_full))
            .collect();
        for t in &results {
            eprintln!(
                "  N={:5}  {:6.0} ns/pkt  engine {:7.1?}  thread CPU {:>9}  wall {:7.1?}",
                t.viewers,
                t.ns_per_packet(),
                t.busy,
                t.thread_cpu
                    .map(|d| format!("{d:.1?}"))
                    .unwrap_or_else(|| "n/a".into()),
                t.wall
            );
        }
        results.sort_by(|a, b| a.ns_per_packet().total_cmp(&b.ns_per_packet()));
        best.push(results.swap_remove(0));
    }

    println!();
    println!(
        "1 publisher -> N viewers on one engine: {:.1} Mbit/s H264 at {FPS} fps + Opus 50 pkt/s; \
         {}; engine time only, fastest trial",
        BITRATE as f64 / 1e6,
        if all_full {
            "every viewer receives".to_string()
        } else {
            format!("{FULL} viewers receive, the rest are sinks")
        }
    );
    println!(
        "| viewers | sim s | pkts forwarded | pkt/s per viewer | datagrams out per pkt | \
         engine ns/pkt | pkts/s per core | viewers/core @2.5 Mbit/s | engine share of thread CPU | \
         receiving viewers' fps |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for t in &best {
        let ns = t.ns_per_packet();
        let per_core = 1e9 / ns;
        let share = t
            .thread_cpu
            .map(|c| format!("{:.0} %", 100.0 * t.busy.as_secs_f64() / c.as_secs_f64()))
            .unwrap_or_else(|| "n/a".into());
        println!(
            "| {} | {:.0} | {} | {:.0} | {:.3} | {:.0} | {:.0} k | {:.0} | {} | {:.1} |",
            t.viewers,
            t.sim_secs,
            t.forwarded,
            t.packets_per_viewer_sec(),
            t.datagrams_out as f64 / t.forwarded.max(1) as f64,
            ns,
            per_core / 1e3,
            per_core / t.packets_per_viewer_sec(),
            share,
            t.full_fps,
        );
    }
    println!();
    println!("total bench time {:.1?}", started.elapsed());
}
