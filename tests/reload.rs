//! Live reload of the `wishcast` binary: the configuration file is rewritten and the process
//! gets SIGHUP. New requests follow the new tokens, limits and ICE servers; the session that
//! was playing keeps receiving frames; a broken file changes nothing.

mod common;
mod process;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::opts;
use process::Gateway;
use wishcast::client::{ClientError, ClientOptions, Peer, VideoCodec};

const STREAM: &str = "hall";
const CODEC: VideoCodec = VideoCodec::H264;
const LOG_WAIT: Duration = Duration::from_secs(10);

fn config(publish: &str, play: &str, max_viewers: usize) -> String {
    format!(
        "{}\n[limits]\nposts_per_minute_per_ip = 0\nmax_shard_load = 1.0\n\
         max_viewers_per_stream = {max_viewers}\n\n\
         [auth]\nenabled = true\n\n\
         [[auth.streams]]\npattern = \"*\"\npublish_tokens = [\"{publish}\"]\nplay_tokens = [\"{play}\"]\n",
        process::base_config(1, 5.0)
    )
}

fn with_token(token: &str) -> ClientOptions {
    ClientOptions {
        bearer: Some(token.to_string()),
        ..ClientOptions::from(opts(Some(CODEC), true))
    }
}

/// A refusal: the HTTP status and the problem type's last segment (`session-limit`).
type Refusal = (u16, String);

/// A viewer from a WHEP POST with `token`, or the refusal.
async fn play(gw: &Gateway, token: &str) -> Result<Peer, Refusal> {
    match Peer::play(&gw.url(&format!("/whep/{STREAM}")), with_token(token)).await {
        Ok(v) => Ok(v),
        Err(ClientError::Http { status, body }) => {
            let problem: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let kind = problem["type"].as_str().unwrap_or("").rsplit('/').next();
            Err((status, kind.unwrap_or("").to_string()))
        }
        Err(e) => panic!("WHEP POST: {e}"),
    }
}

fn unauthorized() -> Option<Refusal> {
    Some((401, "invalid-token".into()))
}

fn at_limit() -> Option<Refusal> {
    Some((503, "session-limit".into()))
}

/// Waits for the log line of the reload that follows position `from`.
fn reloaded(gw: &Gateway, from: u64) -> String {
    gw.wait_line_after(
        from,
        |l| l.contains("configuration reloaded") || l.contains("configuration not reloaded"),
        LOG_WAIT,
    )
    .unwrap_or_else(|| panic!("no reload logged:\n{}", gw.output_text()))
}

/// The video frames `v` receives within `wait`.
async fn frames_within(v: &mut Peer, wait: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + wait;
    let mut n = 0;
    while let Some(f) = v
        .next_frame(deadline.saturating_duration_since(tokio::time::Instant::now()))
        .await
    {
        if f.kind == str0m::media::MediaKind::Video {
            n += 1;
        }
    }
    n
}

/// A publisher with `token` sending the generated stream until stopped.
struct Feed {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Peer>,
}

impl Feed {
    async fn start(url: &str, token: &str) -> Feed {
        let publisher = Peer::publish(url, with_token(token))
            .await
            .expect("publish accepted");
        publisher
            .wait_connected(Duration::from_secs(10))
            .await
            .expect("publisher connects");
        let mut feed = wishcast::peer::Feed::new(Some(CODEC), true);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            feed.start(Instant::now());
            while !stopped.load(Ordering::SeqCst) {
                while let Some(f) = feed.take_due(Instant::now(), publisher.keyframe_requests()) {
                    let _ = publisher.send_frame(f.kind, f.rtp_time, f.data);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            publisher
        });
        Feed { stop, task }
    }

    async fn stop(self) -> Peer {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("feed task")
    }
}

/// Tokens and a limit change under a playing viewer: it plays on, and new requests follow
/// the new rules. A broken file, and a change that needs a restart, leave the rules running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_new_tokens_and_limits_and_live_sessions_play_on() {
    let gw = Gateway::start(&config("pub-1", "play-1", 2), "info");
    let feed = Feed::start(&gw.url(&format!("/whip/{STREAM}")), "pub-1").await;
    let mut viewer = play(&gw, "play-1")
        .await
        .expect("play with the first token");
    assert!(frames_within(&mut viewer, Duration::from_secs(2)).await > 0);
    assert_eq!(
        play(&gw, "play-2").await.err(),
        unauthorized(),
        "not a token yet"
    );

    // New tokens and one viewer per stream.
    let mark = gw.output_count();
    gw.rewrite_config(&config("pub-2", "play-2", 1));
    gw.signal(libc::SIGHUP);
    let line = reloaded(&gw, mark);
    assert!(line.contains("configuration reloaded"), "{line}");
    assert!(!line.contains("play-2"), "tokens are not logged: {line}");

    // The live viewer plays on, in the session it had.
    assert!(
        frames_within(&mut viewer, Duration::from_secs(2)).await > 0,
        "the viewer keeps receiving frames after the reload"
    );
    assert!(viewer.is_connected());
    // The old token is refused, the new one is recognised, and the lower limit holds.
    assert_eq!(play(&gw, "play-1").await.err(), unauthorized());
    assert_eq!(
        play(&gw, "play-2").await.err(),
        at_limit(),
        "one viewer per stream now, and one is playing"
    );
    let location = viewer.location().to_string();
    assert_eq!(
        viewer.delete().await.expect("DELETE by the creating token"),
        200,
        "{location}"
    );
    let mut second = play(&gw, "play-2")
        .await
        .expect("the new token, below the limit");
    assert!(frames_within(&mut second, Duration::from_secs(2)).await > 0);

    // A broken file: logged, and the running rules stay.
    let mark = gw.output_count();
    gw.rewrite_config("[limits]\nmax_viewers_per_stream = \"many\"\n");
    gw.signal(libc::SIGHUP);
    let line = reloaded(&gw, mark);
    assert!(line.contains("configuration not reloaded"), "{line}");
    assert_eq!(
        play(&gw, "play-2").await.err(),
        at_limit(),
        "the limit of 1 stays"
    );
    assert!(frames_within(&mut second, Duration::from_secs(1)).await > 0);

    // A change that needs a restart is named and not applied.
    let mut shards = config("pub-2", "play-2", 1);
    shards = shards.replace("shards = 1", "shards = 2");
    let mark = gw.output_count();
    gw.rewrite_config(&shards);
    gw.signal(libc::SIGHUP);
    reloaded(&gw, mark);
    assert!(
        gw.wait_line_after(
            mark,
            |l| l.contains("needs a restart") && l.contains("media.shards"),
            LOG_WAIT
        )
        .is_some(),
        "{}",
        gw.output_text()
    );

    assert_eq!(second.delete().await.expect("DELETE"), 200);
    let publisher = feed.stop().await;
    assert_eq!(publisher.delete().await.expect("DELETE"), 200);
}
