//! Loss and jitter over real sockets: the gateway on loopback, with real kernel packet loss
//! from an iptables `statistic` rule on one leg (the publisher's or the viewers') and random
//! 0-50 ms delay from a userspace relay (the kernel here has no netem).
//!
//! Each test binds the suffering peers to a loopback address of its own (127.11.x.y) and
//! inserts a rule for that address in a chain of its own, removed when the test ends. Without
//! root or iptables the tests say so and pass.
//!
//! The figures of the loss matrix come from the ignored `matrix_cell`, which
//! `scripts/loss-matrix.sh` runs with its settings in the environment.

mod common;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use str0m::media::MediaKind;
use wishcast::client::impair::{ImpairError, IptablesLoss, Relay};
use wishcast::client::{ClientOptions, Peer, PeerOptions, VideoCodec};
use wishcast::peer::{media, Feed};

/// Which side of the gateway suffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leg {
    /// Publisher ↔ gateway.
    Publisher,
    /// Gateway ↔ viewers.
    Viewers,
}

#[derive(Clone, Debug)]
struct Cell {
    /// Names the iptables chain and picks the loopback addresses; unique per test.
    tag: u8,
    leg: Leg,
    loss: f64,
    jitter: Duration,
    viewers: usize,
    seconds: u64,
    bitrate: u64,
    /// Keyframe interval of the encoder, in seconds; it also honours keyframe requests.
    gop_secs: u64,
    /// The gateway runs ICE-lite (`media.ice_lite`) instead of full ICE.
    ice_lite: bool,
}

/// What one viewer saw.
#[derive(Debug, Default)]
struct ViewerReport {
    /// From the start of its POST to its first keyframe (the first picture).
    ttff: Option<Duration>,
    /// From the POST until ICE connected, and until DTLS finished after it.
    ice: Option<Duration>,
    dtls: Option<Duration>,
    /// Frames between its first and last received frame.
    expected: u64,
    lost: u64,
    /// Longest time from a gap's first missing frame to the keyframe after it, in media time
    /// (frames at the encoder's rate) and as seen at the viewer.
    worst_gap_frames: u64,
    worst_gap_wall: Duration,
    /// Gaps older than a second with no keyframe after them.
    unclosed: u64,
    corrupt: u64,
    /// The first frame was a keyframe (a decoder can start on it).
    first_is_key: bool,
    /// Frames before the first keyframe (undecodable).
    before_keyframe: u64,
    /// Frames assembled across a known gap (not contiguous), which a decoder discards.
    incomplete: u64,
    /// Frames received again after a restart from the GOP cache.
    repeated: u64,
    /// Frame latency, encoder clock to arrival, per received frame.
    latencies: Vec<Duration>,
}

#[derive(Debug)]
struct Report {
    viewers: Vec<ViewerReport>,
    dropped: u64,
    sessions_after: usize,
    keyframe_requests: u64,
}

impl Report {
    fn frames_lost_pct(&self) -> f64 {
        let (lost, expected) = self
            .viewers
            .iter()
            .fold((0, 0), |(l, e), v| (l + v.lost, e + v.expected));
        100.0 * lost as f64 / expected.max(1) as f64
    }

    fn ttffs(&self) -> Vec<Duration> {
        self.sorted(|v| v.ttff)
    }

    fn sorted(&self, f: impl Fn(&ViewerReport) -> Option<Duration>) -> Vec<Duration> {
        let mut t: Vec<Duration> = self.viewers.iter().filter_map(f).collect();
        t.sort();
        t
    }

    fn summary(&self, cell: &Cell) -> String {
        let t = self.ttffs();
        let ice = self.sorted(|v| v.ice);
        let dtls = self.sorted(|v| v.dtls);
        let worst_frames = self.viewers.iter().map(|v| v.worst_gap_frames).max();
        let worst_wall = self.viewers.iter().map(|v| v.worst_gap_wall).max();
        let mut lat: Vec<Duration> = self
            .viewers
            .iter()
            .flat_map(|v| v.latencies.iter().copied())
            .collect();
        lat.sort();
        format!(
            "leg={:?} loss={:.0}% jitter={}ms viewers={} secs={}: frames lost {:.3}%, \
             ttff p50 {} ms p99 {} ms (ICE p50 {} p99 {}, DTLS done p50 {} p99 {}), worst gap to keyframe {} frames / {} ms, \
             latency p50 {} ms p99 {} ms, datagrams dropped {}, PLIs at publisher {}, \
             started on a delta frame {}, unclosed gaps {}",
            cell.leg,
            cell.loss * 100.0,
            cell.jitter.as_millis(),
            cell.viewers,
            cell.seconds,
            self.frames_lost_pct(),
            ms(pct(&t, 50)),
            ms(pct(&t, 99)),
            ms(pct(&ice, 50)),
            ms(pct(&ice, 99)),
            ms(pct(&dtls, 50)),
            ms(pct(&dtls, 99)),
            worst_frames.unwrap_or(0),
            ms(worst_wall),
            ms(pct(&lat, 50)),
            ms(pct(&lat, 99)),
            self.dropped,
            self.keyframe_requests,
            self.viewers.iter().filter(|v| !v.first_is_key).count(),
            self.viewers.iter().map(|v| v.unclosed).sum::<u64>(),
        )
    }
}

fn pct(sorted: &[Duration], p: usize) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() * p).div_ceil(100)).clamp(1, sorted.len()) - 1;
    Some(sorted[i])
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| d.as_millis().to_string())
}

const FPS: u32 = 30;

/// Sets up the cell's impairment, or says why the test is skipped.
fn impairment(cell: &Cell, addr: IpAddr) -> Option<Option<IptablesLoss>> {
    if cell.loss == 0.0 {
        return Some(None);
    }
    match IptablesLoss::new(&format!("wishcast-loss-{}", cell.tag), addr, cell.loss) {
        Ok(l) => Some(Some(l)),
        Err(e @ (ImpairError::NotRoot(_) | ImpairError::NoIptables(_))) => {
            eprintln!("skipped: {e} (run as root with iptables installed)");
            None
        }
        Err(e) => panic!("iptables rule: {e}"),
    }
}

/// One cell at a time. The cells assert recovery within a second of media time; four of them
/// at once (each a gateway, a publisher and its viewers with their timers) on a two-core
/// machine measured the scheduler as much as the gateway: a starved runtime fires its NACK and
/// keyframe-request timers late, and a gap stretched past a second in about one full run in
/// six.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn run(cell: Cell) -> Option<Report> {
    let _one = ONE_AT_A_TIME.lock().await;
    let publisher_ip: IpAddr = format!("127.11.{}.1", cell.tag).parse().expect("ip");
    let viewer_ip: IpAddr = format!("127.11.{}.2", cell.tag).parse().expect("ip");
    let lossy = match cell.leg {
        Leg::Publisher => publisher_ip,
        Leg::Viewers => viewer_ip,
    };
    let loss = impairment(&cell, lossy)?;
    // The relay binds 127.0.0.1, so its own datagrams do not meet the loss rule again.
    let relay = (!cell.jitter.is_zero()).then(|| {
        Arc::new(Relay::new(
            "127.0.0.1".parse().expect("ip"),
            cell.jitter,
            u64::from(cell.tag),
        ))
    });
    let client = |ip: IpAddr, leg: Leg, peer: PeerOptions| ClientOptions {
        bind_ip: ip,
        relay: relay.clone().filter(|_| cell.leg == leg),
        ..ClientOptions::from(peer)
    };

    let mut config = test_config(2);
    config.media.ice_lite = cell.ice_lite;
    let gw = start(config).await;
    let codec = VideoCodec::H264;
    let publisher = Peer::publish(
        &whip(&gw, "s"),
        client(publisher_ip, Leg::Publisher, opts(Some(codec), true)),
    )
    .await
    .expect("publish accepted");
    publisher
        .wait_connected(Duration::from_secs(20))
        .await
        .expect("publisher connects");
    let frame_bytes = (cell.bitrate / 8 / u64::from(FPS)) as usize;
    let mut feed = Feed::at_bitrate(codec, cell.bitrate, FPS).with_gop(cell.gop_secs * 30);
    feed.honor_keyframe_requests = true;
    let started = Instant::now();
    let sender = LiveFeed::run(publisher, feed);

    let end = started + Duration::from_secs(cell.seconds);
    let mut tasks = Vec::new();
    for _ in 0..cell.viewers {
        let url = whep(&gw, "s");
        // Like a browser, the viewer asks for a keyframe when it cannot decode.
        let peer = PeerOptions {
            request_keyframes: true,
            ..PeerOptions::with_video(codec)
        };
        let o = client(viewer_ip, Leg::Viewers, peer);
        tasks.push(tokio::spawn(async move {
            watch(url, o, codec, frame_bytes, started, end).await
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut viewers = Vec::new();
    for t in tasks {
        viewers.push(t.await.expect("viewer task"));
    }
    let publisher = sender.stop().await;
    let keyframe_requests = publisher.keyframe_requests();
    let dropped = loss.as_ref().map_or(0, IptablesLoss::dropped);
    let sessions_after = gw.session_count();
    drop(publisher);
    gw.shutdown().await;
    Some(Report {
        viewers,
        dropped,
        sessions_after,
        keyframe_requests,
    })
}

/// A viewer from its POST until `end`: which frames arrived, intact, and when.
async fn watch(
    url: String,
    o: ClientOptions,
    codec: VideoCodec,
    frame_bytes: usize,
    started: Instant,
    end: Instant,
) -> ViewerReport {
    let mut r = ViewerReport::default();
    let posted = Instant::now();
    let mut v = match Peer::play(&url, o).await {
        Ok(v) => v,
        Err(e) => panic!("play refused: {e}"),
    };
    // (index, arrival, keyframe)
    let mut frames: Vec<(u64, Instant, bool)> = Vec::new();
    while Instant::now() < end {
        let Some(f) = v.next_frame(Duration::from_millis(200)).await else {
            continue;
        };
        if f.kind != MediaKind::Video {
            continue;
        }
        let Some(i) = media::frame_index(f.codec, &f.data) else {
            r.corrupt += 1;
            continue;
        };
        let key = media::is_keyframe(f.codec, &f.data);
        if f.data[..] != media::video_frame(codec, i, key, frame_bytes)[..] {
            if frames.is_empty() {
                // A start without its SPS/PPS: a decoder shows nothing yet.
                r.before_keyframe += 1;
            } else if !f.contiguous {
                // Assembled across a gap the receiver knows of (a packet lost for good): a
                // decoder drops it and waits for the keyframe that closes the gap.
                r.incomplete += 1;
            } else {
                r.corrupt += 1;
            }
            continue;
        }
        if frames.is_empty() {
            if r.ttff.is_none() {
                r.first_is_key = key;
            }
            r.ttff = Some(f.at.saturating_duration_since(posted));
            if !key {
                // Nothing a decoder can show before a keyframe: wait for one.
                r.before_keyframe += 1;
                continue;
            }
        }
        if frames.last().is_some_and(|l| i <= l.0) {
            // Sent again: the gateway restarted this viewer from its GOP cache.
            r.repeated += 1;
            continue;
        }
        let due = started + Duration::from_secs(1) * i as u32 / FPS;
        r.latencies.push(f.at.saturating_duration_since(due));
        frames.push((i, f.at, key));
    }
    let stats = v.stats();
    r.ice = stats
        .ice_connected_at
        .map(|t| t.saturating_duration_since(posted));
    r.dtls = stats
        .connected_at
        .map(|t| t.saturating_duration_since(posted));
    drop(v);
    let Some(&(first, _, _)) = frames.first() else {
        return r;
    };
    let last = frames.iter().map(|f| f.0).max().unwrap_or(first);
    r.expected = last - first + 1;
    r.lost = r.expected - frames.len() as u64;
    for w in frames.windows(2) {
        let ((a, at, _), (b, _, _)) = (w[0], w[1]);
        if b <= a + 1 {
            continue;
        }
        let missing = a + 1;
        let gap_seen = at + Duration::from_secs(1) / FPS;
        match frames.iter().find(|f| f.0 > missing && f.2) {
            Some(&(k, kat, _)) => {
                r.worst_gap_frames = r.worst_gap_frames.max(k - missing);
                r.worst_gap_wall = r
                    .worst_gap_wall
                    .max(kat.saturating_duration_since(gap_seen));
            }
            None if last - missing > u64::from(FPS) => r.unclosed += 1,
            None => {}
        }
    }
    r
}

fn cell(tag: u8, leg: Leg, loss: f64) -> Cell {
    Cell {
        tag,
        leg,
        loss,
        jitter: Duration::from_millis(50),
        viewers: 4,
        seconds: 12,
        bitrate: 2_500_000,
        gop_secs: 4,
        ice_lite: false,
    }
}

/// 5 % loss and 0-50 ms jitter: every viewer gets every frame, or a keyframe within a second
/// of media time after the first frame it missed.
fn assert_recovers(cell: &Cell, report: &Report) {
    eprintln!("{}", report.summary(cell));
    assert!(report.dropped > 0, "the loss rule dropped datagrams");
    for (n, v) in report.viewers.iter().enumerate() {
        assert_eq!(v.corrupt, 0, "viewer {n}: every frame intact");
        assert!(v.ttff.is_some(), "viewer {n} got video");
        assert!(
            v.before_keyframe <= u64::from(FPS),
            "viewer {n}: its first keyframe came within a second: {v:?}"
        );
        assert!(
            v.expected > u64::from(FPS) * (cell.seconds - 4),
            "viewer {n} kept receiving: {v:?}"
        );
        assert_eq!(v.unclosed, 0, "viewer {n}: every gap closed by a keyframe");
        assert!(
            v.worst_gap_frames <= u64::from(FPS),
            "viewer {n}: a gap lasted {} frames before a keyframe",
            v.worst_gap_frames
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_leg_5_percent_loss_and_jitter_recovers_within_a_second() {
    let c = cell(1, Leg::Publisher, 0.05);
    let Some(report) = run(c.clone()).await else {
        return;
    };
    assert_recovers(&c, &report);
    assert_eq!(report.sessions_after, c.viewers + 1, "nobody was dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_leg_5_percent_loss_and_jitter_recovers_within_a_second() {
    let c = cell(2, Leg::Viewers, 0.05);
    let Some(report) = run(c.clone()).await else {
        return;
    };
    assert_recovers(&c, &report);
    assert_eq!(report.sessions_after, c.viewers + 1, "nobody was dropped");
}

/// 20 % loss on either leg: the stream degrades, but every viewer connects (DTLS completes
/// under the loss), keeps receiving intact frames to the end, and no session is lost.
async fn heavy_loss_degrades_without_stalls(tag: u8, leg: Leg) {
    let c = Cell {
        jitter: Duration::ZERO,
        viewers: 6,
        ..cell(tag, leg, 0.20)
    };
    let Some(report) = run(c.clone()).await else {
        return;
    };
    eprintln!("{}", report.summary(&c));
    // The handshake's flights are repeated at most 100 ms apart for their first 3 s
    // (`wishcast::dtls`), so every viewer connects well within the run.
    for (n, v) in report.viewers.iter().enumerate() {
        assert!(
            v.ttff.is_some(),
            "viewer {n} connected and got video: {v:?}"
        );
        assert_eq!(v.corrupt, 0, "viewer {n}: frames intact");
        assert_eq!(v.unclosed, 0, "viewer {n}: every gap closed by a keyframe");
        assert!(
            v.expected > u64::from(FPS) * (c.seconds - 5),
            "viewer {n} kept receiving to the end: {v:?}"
        );
    }
    assert_eq!(report.sessions_after, c.viewers + 1, "nobody was dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_leg_20_percent_loss_degrades_without_stalls() {
    heavy_loss_degrades_without_stalls(3, Leg::Publisher).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_leg_20_percent_loss_degrades_without_stalls() {
    heavy_loss_degrades_without_stalls(4, Leg::Viewers).await;
}

/// One cell of the loss matrix, set by the environment (see `scripts/loss-matrix.sh`):
/// `LOSS_LEG` (publisher|viewers), `LOSS_PCT`, `LOSS_JITTER_MS`, `LOSS_VIEWERS`,
/// `LOSS_SECS`, `LOSS_ICE_LITE` (1: the gateway runs ICE-lite). Prints one `MATRIX` line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run by scripts/loss-matrix.sh"]
async fn matrix_cell() {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    let leg = match env("LOSS_LEG", "viewers").as_str() {
        "publisher" => Leg::Publisher,
        _ => Leg::Viewers,
    };
    let c = Cell {
        tag: 99,
        leg,
        loss: env("LOSS_PCT", "5").parse::<f64>().unwrap_or(5.0) / 100.0,
        jitter: Duration::from_millis(env("LOSS_JITTER_MS", "0").parse().unwrap_or(0)),
        viewers: env("LOSS_VIEWERS", "20").parse().unwrap_or(20),
        seconds: env("LOSS_SECS", "20").parse().unwrap_or(20),
        bitrate: 2_500_000,
        gop_secs: 2,
        ice_lite: env("LOSS_ICE_LITE", "0") == "1",
    };
    let Some(report) = run(c.clone()).await else {
        return;
    };
    let t = report.ttffs();
    let worst = report.viewers.iter().map(|v| v.worst_gap_wall).max();
    let unclosed: u64 = report.viewers.iter().map(|v| v.unclosed).sum();
    println!(
        "MATRIX {:?} {:.0} {} {:.3} {} {} {} {} {}",
        c.leg,
        c.loss * 100.0,
        c.jitter.as_millis(),
        report.frames_lost_pct(),
        ms(pct(&t, 50)),
        ms(pct(&t, 99)),
        ms(worst),
        unclosed,
        report.sessions_after,
    );
    eprintln!("{}", report.summary(&c));
    if env("LOSS_DETAIL", "0") == "1" {
        // The slowest starts, each split into its steps (client's view).
        let mut slow: Vec<&ViewerReport> = report.viewers.iter().collect();
        slow.sort_by_key(|v| std::cmp::Reverse(v.ttff));
        for v in slow.iter().take(8) {
            eprintln!(
                "SLOW ttff {} ms: ICE {} ms, DTLS done {} ms",
                ms(v.ttff),
                ms(v.ice),
                ms(v.dtls)
            );
        }
    }
}
