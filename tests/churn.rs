//! Churn against the `wishcast` binary in its own process: viewers joining and leaving by the
//! thousand (half by DELETE, half vanishing until consent expires), and publishers restarting
//! under attached viewers.
//!
//! `cargo test` runs bounded counts. `scripts/soak-churn.sh` runs the same tests with the full
//! counts through the `WISHCAST_CHURN_*` variables read by [`Plan::from_env`].

mod common;
mod process;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{expected_video, opts, LiveFeed};
use process::{Gateway, Usage};
use wishcast::client::{Peer, VideoCodec};
use wishcast::peer::media;

const STREAM: &str = "churn";
const CODEC: VideoCodec = VideoCodec::H264;
/// Consent timeout of the gateway under test: vanished viewers are gone this long after.
const CONSENT_SECS: f64 = 2.0;
/// A viewer's first video frame, or a new publisher's first frame at a viewer.
const FRAME_WAIT: Duration = Duration::from_secs(15);
/// Time for the last vanished viewers to expire and the directory to empty.
const DRAIN_WAIT: Duration = Duration::from_secs(30);
/// Time the allocator gets to return freed memory (decay, trimming) before RSS is read, for
/// the baseline and at the end alike.
const SETTLE: Duration = Duration::from_secs(5);
/// Longer wait for RSS, descriptors and threads that are not back within bounds after that.
const SETTLE_WAIT: Duration = Duration::from_secs(30);
/// RSS at the end may exceed the baseline by this fraction.
const RSS_SLACK: f64 = 0.20;
/// Descriptors and threads may differ from the baseline by this many (a signalling connection
/// being closed as the count is read).
const COUNT_SLACK: usize = 2;

/// How much churn: bounded defaults for CI, full counts from the environment.
#[derive(Clone, Copy, Debug)]
struct Plan {
    /// Join/leave cycles measured, after the warm-up.
    cycles: usize,
    /// Cycles before the baseline is taken: allocator arenas, caches and pools grow to their
    /// working size in these. They must last a few consent timeouts, so that as many vanished
    /// sessions wait for expiry as during the measured round.
    warmup: usize,
    /// Viewers joining at once.
    concurrency: usize,
    /// Publisher restarts with viewers attached.
    restarts: usize,
    /// Viewers attached through the restarts.
    viewers: usize,
}

impl Plan {
    fn from_env() -> Plan {
        let var = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        Plan {
            cycles: var("WISHCAST_CHURN_CYCLES", 1000),
            warmup: var("WISHCAST_CHURN_WARMUP", 1000),
            concurrency: var("WISHCAST_CHURN_CONCURRENCY", 8).max(1),
            restarts: var("WISHCAST_CHURN_RESTARTS", 10),
            viewers: var("WISHCAST_CHURN_VIEWERS", 4).max(1),
        }
    }
}

/// No POST rate limit and no admission by shard load: the churn is the point here, and a debug
/// build on a shared machine is busy enough to be refused new sessions otherwise.
fn config() -> String {
    format!(
        "{}\n[limits]\nposts_per_minute_per_ip = 0\nmax_shard_load = 1.0\nshed_shard_load = 1.0\n",
        process::base_config(2, CONSENT_SECS)
    )
}

/// How a viewer leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Leave {
    Delete,
    /// Stops sending without a DELETE, BYE or close_notify: consent expires on the gateway.
    Vanish,
}

/// The next video frame of `v`, skipping audio.
async fn next_video(v: &mut Peer, wait: Duration) -> Option<wishcast::client::ReceivedFrame> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        let f = v.next_frame(left).await?;
        if f.kind == str0m::media::MediaKind::Video {
            return Some(f);
        }
    }
}

/// One viewer: joins, plays its first video frame, leaves.
async fn cycle(url: &str, leave: Leave) -> Result<(), String> {
    let mut v = Peer::play(url, opts(Some(CODEC), true))
        .await
        .map_err(|e| format!("play: {e}"))?;
    if next_video(&mut v, FRAME_WAIT).await.is_none() {
        return Err(format!(
            "{}: no video frame in {FRAME_WAIT:?} ({:?}, {:?})",
            v.location(),
            v.state(),
            v.stats()
        ));
    }
    match leave {
        Leave::Delete => match v.delete().await {
            Ok(200) => Ok(()),
            Ok(status) => Err(format!("DELETE answered {status}")),
            Err(e) => Err(format!("DELETE: {e}")),
        },
        Leave::Vanish => {
            // `kill` joins the peer's thread.
            tokio::task::spawn_blocking(move || v.kill())
                .await
                .map_err(|e| format!("kill: {e}"))
        }
    }
}

/// What a churn round did.
#[derive(Debug, Default)]
struct Round {
    done: usize,
    failures: Vec<String>,
    took: Duration,
}

/// `n` join/leave cycles, `concurrency` at a time; even cycles DELETE, odd ones vanish.
async fn churn(gw: &Gateway, n: usize, concurrency: usize) -> Round {
    let url = Arc::new(gw.url(&format!("/whep/{STREAM}")));
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (url, next, failures) = (url.clone(), next.clone(), failures.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= n {
                        break;
                    }
                    let leave = if i % 2 == 0 {
                        Leave::Delete
                    } else {
                        Leave::Vanish
                    };
                    if let Err(e) = cycle(&url, leave).await {
                        failures
                            .lock()
                            .expect("failures")
                            .push(format!("cycle {i} ({leave:?}): {e}"));
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("churn worker");
    }
    let failures = std::mem::take(&mut *failures.lock().expect("failures"));
    Round {
        done: n,
        failures,
        took: started.elapsed(),
    }
}

/// Waits until only the publisher is left and the allocator has had [`SETTLE`] to return
/// what the sessions freed; then, if RSS, descriptors or threads are not within bounds of
/// `baseline` (when given), a while longer for them. Returns the sessions and the last reading.
async fn settle(gw: &Gateway, baseline: Option<Usage>) -> ((u64, u64), Usage) {
    let sessions = gw.wait_sessions((1, 0), DRAIN_WAIT).await;
    tokio::time::sleep(SETTLE).await;
    let deadline = Instant::now() + SETTLE_WAIT;
    loop {
        let u = gw.usage();
        if baseline.is_none_or(|b| within(b, u)) || Instant::now() >= deadline {
            return (sessions, u);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn within(baseline: Usage, u: Usage) -> bool {
    u.rss_kb as f64 <= baseline.rss_kb as f64 * (1.0 + RSS_SLACK)
        && u.fds.abs_diff(baseline.fds) <= COUNT_SLACK
        && u.threads.abs_diff(baseline.threads) <= COUNT_SLACK
}

/// Viewers join and leave, half by DELETE and half by vanishing: afterwards no session is
/// left, descriptors and threads are back to where they were, and RSS is within 20 % of the
/// baseline taken after a warm-up round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_churn_returns_sessions_memory_descriptors_and_threads() {
    let plan = Plan::from_env();
    let log = std::env::var("WISHCAST_CHURN_LOG").unwrap_or_else(|_| "warn".into());
    let gw = Gateway::start(&config(), &log);
    let feed = LiveFeed::start(&gw.url(&format!("/whip/{STREAM}")), Some(CODEC), true, 0).await;
    let idle = gw.usage();
    let warm = churn(&gw, plan.warmup, plan.concurrency).await;
    assert!(
        warm.failures.is_empty(),
        "{} warm-up cycles failed, first: {:?}",
        warm.failures.len(),
        &warm.failures[..warm.failures.len().min(5)]
    );
    let (sessions, baseline) = settle(&gw, None).await;
    assert_eq!(sessions, (1, 0), "after the warm-up: (publishers, viewers)");
    let round = churn(&gw, plan.cycles, plan.concurrency).await;
    let (sessions, end) = settle(&gw, Some(baseline)).await;
    println!(
        "churn: {} cycles ({} at once, half DELETE, half vanished) in {:.1} s, {} failed",
        round.done,
        plan.concurrency,
        round.took.as_secs_f64(),
        round.failures.len()
    );
    println!("churn: publisher only:  {idle}");
    println!("churn: after {} warm-up cycles: {baseline}", plan.warmup);
    println!("churn: after {} cycles: {end}", plan.cycles);
    println!(
        "churn: sessions at the end: {} publisher, {} viewers",
        sessions.0, sessions.1
    );
    assert!(
        round.failures.is_empty(),
        "{} of {} cycles failed, first: {:?}\n{}",
        round.failures.len(),
        round.done,
        &round.failures[..round.failures.len().min(5)],
        gw.output_text()
    );
    assert_eq!(sessions, (1, 0), "(publishers, viewers) after the churn");
    assert!(
        end.fds.abs_diff(baseline.fds) <= COUNT_SLACK,
        "descriptors: {baseline} before, {end} after"
    );
    assert!(
        end.threads.abs_diff(baseline.threads) <= COUNT_SLACK,
        "threads: {baseline} before, {end} after"
    );
    assert!(
        end.rss_kb as f64 <= baseline.rss_kb as f64 * (1.0 + RSS_SLACK),
        "RSS grew more than {:.0} %: {baseline} before, {end} after",
        RSS_SLACK * 100.0
    );
    let publisher = feed.stop().await;
    assert_eq!(publisher.delete().await.expect("DELETE"), 200);
    assert_eq!(gw.wait_sessions((0, 0), DRAIN_WAIT).await, (0, 0));
}

/// The first video frame of the publisher numbering its frames from `first`: older frames
/// still queued are skipped. It must be a keyframe, byte for byte as sent.
async fn first_frame_from(v: &mut Peer, first: u64) -> Result<u64, String> {
    let deadline = Instant::now() + FRAME_WAIT;
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .ok_or("no frame of the new publisher")?;
        let f = next_video(v, left)
            .await
            .ok_or("no frame of the new publisher")?;
        let Some(index) = media::frame_index(CODEC, &f.data) else {
            return Err("a video frame without an index".into());
        };
        if index < first {
            continue;
        }
        if !media::is_keyframe(CODEC, &f.data) {
            return Err(format!(
                "frame {index} is the first of the new publisher but no keyframe"
            ));
        }
        let sent = expected_video(CODEC, index, true);
        if f.data[..] != sent[..] {
            return Err(format!(
                "keyframe {index} differs from what was sent: {} bytes of {}, contiguous {}, \
                 the end of what was sent: {}",
                f.data.len(),
                sent.len(),
                f.contiguous,
                sent.ends_with(&f.data)
            ));
        }
        return Ok(index);
    }
}

/// The viewer session ids the API lists for the stream.
async fn viewer_ids(gw: &Gateway) -> Vec<String> {
    let r = wishcast::client::http::request(
        "GET",
        &gw.url(&format!("/api/streams/{STREAM}")),
        &[],
        Vec::new(),
    )
    .await
    .expect("GET the stream");
    assert_eq!(r.status, 200, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
    let mut ids: Vec<String> = v["viewers"]
        .as_array()
        .expect("viewers")
        .iter()
        .filter_map(|s| s["id"].as_str().map(str::to_string))
        .collect();
    ids.sort();
    ids
}

/// The publisher goes and a new one comes, again and again, while viewers stay attached:
/// each viewer plays every new publisher from a keyframe, in the session it started with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_restarts_keep_viewers_playing_in_their_sessions() {
    let plan = Plan::from_env();
    let gw = Gateway::start(&config(), "warn");
    let whip = gw.url(&format!("/whip/{STREAM}"));
    let whep = gw.url(&format!("/whep/{STREAM}"));
    let mut feed = LiveFeed::start(&whip, Some(CODEC), true, 0).await;
    let mut viewers = common::watching(&whep, Some(CODEC), true, plan.viewers).await;
    let mut ids: Vec<String> = viewers
        .iter()
        .filter_map(|v| v.location().rsplit('/').next().map(str::to_string))
        .collect();
    ids.sort();
    assert_eq!(viewer_ids(&gw).await, ids);
    let before = gw.usage();
    let started = Instant::now();
    for r in 1..=plan.restarts as u64 {
        let publisher = feed.stop().await;
        assert_eq!(
            publisher.delete().await.expect("DELETE"),
            200,
            "restart {r}"
        );
        let first = r * 1_000_000;
        feed = LiveFeed::start(&whip, Some(CODEC), true, first).await;
        for (k, v) in viewers.iter_mut().enumerate() {
            if let Err(e) = first_frame_from(v, first).await {
                panic!("restart {r}, viewer {k}: {e}\n{}", gw.output_text());
            }
            assert!(v.is_connected(), "restart {r}, viewer {k} is connected");
        }
    }
    let after = gw.usage();
    println!(
        "restarts: {} publisher restarts under {} viewers in {:.1} s",
        plan.restarts,
        plan.viewers,
        started.elapsed().as_secs_f64()
    );
    println!("restarts: before {before}; after {after}");
    assert_eq!(
        viewer_ids(&gw).await,
        ids,
        "the viewers keep their sessions"
    );
    assert_eq!(gw.sessions().await, (1, plan.viewers as u64));
    for v in viewers {
        assert_eq!(v.delete().await.expect("DELETE"), 200);
    }
    let publisher = feed.stop().await;
    assert_eq!(publisher.delete().await.expect("DELETE"), 200);
    assert_eq!(gw.wait_sessions((0, 0), DRAIN_WAIT).await, (0, 0));
}
