//! Shared pieces of the integration tests: a gateway on loopback with short timeouts, and a
//! publisher that sends a generated [`Feed`] on the real clock.
#![allow(dead_code)]

pub mod sse;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use wishcast::client::{ClientOptions, Peer, PeerOptions, ReceivedFrame, VideoCodec};
use wishcast::peer::{media, Feed};
use wishcast::{Config, Gateway};

/// Frames per second of the generated video; a keyframe every `GOP` frames.
pub const FPS: u64 = 30;
pub const GOP: u64 = 30;
/// About 2.4 Mbit/s at 30 fps: a GOP-cache replay is a burst worth pacing.
pub const VIDEO_BYTES: usize = 10_000;

pub fn test_config(shards: usize) -> Config {
    let mut c = Config::default();
    c.http.listen = "127.0.0.1:0".parse().expect("addr");
    c.media.bind_ip = "127.0.0.1".parse().expect("ip");
    c.media.udp_base_port = 0;
    c.media.shards = shards;
    c.timeouts.consent_secs = 3.0;
    c.timeouts.connect_secs = 5.0;
    // Debug builds on a shared two-core runner can keep a shard busy for seconds; load-based
    // admission and shedding are tested on their own (tests/overload*.rs), not left to
    // refuse sessions in tests of something else.
    c.limits.max_shard_load = 1.0;
    c.limits.shed_shard_load = 1.0;
    c
}

pub async fn start(config: Config) -> Gateway {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
    Gateway::start(config).await.expect("gateway starts")
}

pub fn whip(gw: &Gateway, stream: &str) -> String {
    format!("http://{}/whip/{stream}", gw.http_addr())
}

pub fn whep(gw: &Gateway, stream: &str) -> String {
    format!("http://{}/whep/{stream}", gw.http_addr())
}

/// A real str0m offer: one host candidate, one m-section per entry of `kinds`, in `dir`.
pub fn str0m_offer(
    mut rtc: str0m::Rtc,
    dir: str0m::media::Direction,
    kinds: &[str0m::media::MediaKind],
) -> String {
    let addr = "127.0.0.1:40000".parse().expect("candidate address");
    rtc.add_local_candidate(str0m::Candidate::host(addr, "udp").expect("host candidate"));
    let mut api = rtc.sdp_api();
    for kind in kinds {
        api.add_media(*kind, dir, Some("wishcast-test".into()), None, None);
    }
    let (offer, _pending) = api.apply().expect("str0m produces an offer");
    offer.to_sdp_string()
}

/// A publisher on `url` with ICE and DTLS done.
pub async fn connected_publisher(url: &str, opts: impl Into<ClientOptions>) -> Peer {
    let publisher = Peer::publish(url, opts).await.expect("publish accepted");
    publisher
        .wait_connected(Duration::from_secs(10))
        .await
        .expect("publisher connects");
    publisher
}

pub fn opts(video: Option<VideoCodec>, audio: bool) -> PeerOptions {
    PeerOptions {
        video,
        audio,
        ..PeerOptions::default()
    }
}

/// `n` viewers of `url`, each past its first video frame.
pub async fn watching(url: &str, codec: Option<VideoCodec>, audio: bool, n: usize) -> Vec<Peer> {
    let mut viewers = Vec::new();
    for _ in 0..n {
        let mut v = Peer::play(url, opts(codec, audio)).await.expect("play");
        v.next_frame(Duration::from_secs(5)).await.expect("frame");
        viewers.push(v);
    }
    viewers
}

/// `frames` of `v`'s video, each checked byte for byte, from a keyframe on, in order and
/// without gaps.
pub async fn plays_video(v: &mut Peer, codec: VideoCodec, frames: usize) {
    let (mut last, key, _) = next_checked_video(v, codec).await;
    assert!(key, "video starts on a keyframe");
    for _ in 1..frames {
        let (i, _, _) = next_checked_video(v, codec).await;
        assert_eq!(i, last + 1, "video in order without gaps");
        last = i;
    }
}

/// `v`'s next video frame within 5 s, checked byte for byte against what the test publisher
/// generated: its index, whether it is a keyframe, and the frame.
pub async fn next_checked_video(v: &mut Peer, codec: VideoCodec) -> (u64, bool, ReceivedFrame) {
    loop {
        let f = v
            .next_frame(Duration::from_secs(5))
            .await
            .expect("a frame within 5 s");
        if f.kind != str0m::media::MediaKind::Video {
            continue;
        }
        let i = media::frame_index(f.codec, &f.data).expect("frame index");
        let key = media::is_keyframe(f.codec, &f.data);
        assert_eq!(
            f.data[..],
            expected_video(codec, i, key)[..],
            "frame {i} intact"
        );
        return (i, key, f);
    }
}

/// The video frame with index `i` as the test publisher generates it (`key`: as a keyframe).
pub fn expected_video(codec: VideoCodec, i: u64, key: bool) -> Vec<u8> {
    media::video_frame(codec, i, key, VIDEO_BYTES)
}

/// Longest the sending task sleeps, so a stop is seen soon.
const FEED_TICK: Duration = Duration::from_millis(20);

/// A publisher sending a generated stream: video frame `i` at `i / FPS` seconds, Opus every
/// 20 ms.
pub struct LiveFeed {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Peer>,
}

impl LiveFeed {
    /// Publishes `codec` (+ Opus) to `url` and feeds it until stopped; starts at frame `first`.
    /// Keyframes come every `GOP` frames, like an encoder with a fixed keyframe interval.
    pub async fn start(url: &str, codec: Option<VideoCodec>, audio: bool, first: u64) -> LiveFeed {
        LiveFeed::start_with(url, codec, audio, first, false).await
    }

    /// As [`LiveFeed::start`]; with `honor_pli` a keyframe request makes the next frame a
    /// keyframe, as browsers' encoders do.
    pub async fn start_with(
        url: &str,
        codec: Option<VideoCodec>,
        audio: bool,
        first: u64,
        honor_pli: bool,
    ) -> LiveFeed {
        let publisher = connected_publisher(url, opts(codec, audio)).await;
        let mut feed = Feed::new(codec, audio)
            .with_fps(FPS as u32)
            .with_gop(GOP)
            .with_sizes(VIDEO_BYTES, VIDEO_BYTES)
            .with_first(first);
        feed.honor_keyframe_requests = honor_pli;
        LiveFeed::run(publisher, feed)
    }

    /// Starts `feed` now and sends its frames through the connected `publisher` as they fall
    /// due, until stopped.
    pub fn run(publisher: Peer, mut feed: Feed) -> LiveFeed {
        feed.start(Instant::now());
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            while !stopped.load(Ordering::SeqCst) {
                let requests = publisher.keyframe_requests();
                while let Some(f) = feed.take_due(Instant::now(), requests) {
                    // Refused writes are counted in the publisher's stats.
                    let _ = publisher.send_layer_frame(f.kind, f.rid, f.rtp_time, f.data);
                }
                let tick = Instant::now() + FEED_TICK;
                let wake = feed.next_due().map_or(tick, |t| t.min(tick));
                tokio::time::sleep_until(wake.into()).await;
            }
            publisher
        });
        LiveFeed { stop, task }
    }

    /// Stops sending and returns the publisher (still connected).
    pub async fn stop(self) -> Peer {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("feed task")
    }
}

/// Everything this test binary logs at `filter` (the first call's filter wins: a process has one
/// global subscriber), kept in memory so tests can read what an operator's log would show.
pub fn captured_logs(filter: &str) -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_ansi(false)
            .with_writer(move || LogSink(sink.clone()))
            .try_init();
        buf
    })
}

/// The captured log so far, as text.
pub fn captured_text(filter: &str) -> String {
    String::from_utf8_lossy(
        &captured_logs(filter)
            .lock()
            .unwrap_or_else(|p| p.into_inner()),
    )
    .into_owned()
}

struct LogSink(Arc<Mutex<Vec<u8>>>);

impl Write for LogSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
