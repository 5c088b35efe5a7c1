//! The interop matrix: peers nobody on the project wrote publish and watch through the gateway.
//!
//! Publishers: Chromium (through the bundled `/publish/...` page), aiortc, GStreamer `whipsink`.
//! Viewers: Chromium (through `/watch/...`), aiortc, GStreamer `whepsrc`. For H264 and for VP8, each
//! publisher feeds all three viewers at once, so every publisher × viewer pair is a cell. A cell
//! passes when the viewer decoded frames of the publisher's size in the publisher's codec within
//! a few seconds, Opus packets arrived, and its DELETE was answered 200. GStreamer also
//! publishes H264 video alone to every viewer, offered as webrtcbin offers one track by itself:
//! without a BUNDLE group. Each publisher's DELETE must end its session on the gateway. Every
//! request carries a bearer token, as OBS sends one. Chromium also publishes simulcast, VP8 and
//! H264, to its own player, which switches layers, and to a test kit viewer; and to its player
//! on automatic choice over a link the kernel caps, which must move down to the smallest layer
//! and back up to the largest once the cap lifts (the times are printed).
//!
//! The peers are driven by the scripts in `tests/interop/` (protocol in its README), installed by
//! `tests/interop/setup.sh` into `interop/` in cargo's target tmpdir: Debian packages (as root), a
//! Python venv, an npm folder and GStreamer's WHIP/WHEP plugin, built there. The test itself only
//! asks `setup.sh --check` whether they are in place, which installs nothing. The environment
//! variable `WISHCAST_INTEROP` says what happens when they are not:
//!
//! - unset: every test of the matrix prints `interop: skipped ...` with the install hint to stderr
//!   and passes, so a plain `cargo test` on a developer's machine installs nothing;
//! - `require`: every test fails with that hint instead (`.ci/run` sets it, after running
//!   `setup.sh`, so CI cannot pass without the matrix);
//! - `install`: the test runs `setup.sh` itself, which installs what is missing, and fails if
//!   that fails.
//!
//! Cells run one publisher at a time: the machine has two cores, and three browsers at once would
//! measure the machine rather than the gateway.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use wishcast::Gateway;

/// How long each viewer watches; the first frame is expected within the first few seconds.
const WATCH_SECS: u64 = 8;
/// A viewer's first frame later than this fails its cell.
const FIRST_FRAME_LIMIT_MS: u64 = 5_000;
const PUBLISH_TOKEN: &str = "interop-publish-3f9c1a";
const PLAY_TOKEN: &str = "interop-play-7b2e64";

/// One publisher at a time (see the module doc).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What the matrix tells a developer whose machine lacks its peers.
const INSTALL_HINT: &str = "run tests/interop/setup.sh (as root to add Debian packages), then \
                            cargo test --test interop";

/// What `setup.sh` installed.
struct Tools {
    python: String,
    node_modules: String,
    gst_plugin_path: String,
    chromium: String,
    /// coturn's server, for the relay cell.
    turnserver: String,
}

/// What `WISHCAST_INTEROP` asks for when the peers are missing (see the module doc).
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Skip,
    Require,
    Install,
}

fn mode() -> Mode {
    let v = std::env::var_os("WISHCAST_INTEROP").unwrap_or_default();
    match v.to_str() {
        Some("") => Mode::Skip,
        Some("require") => Mode::Require,
        Some("install") => Mode::Install,
        _ => panic!("WISHCAST_INTEROP is unset, \"require\" or \"install\", not {v:?}"),
    }
}

/// The peers `setup.sh` reports, or what it said was missing; asked once per test binary.
fn peers() -> &'static Result<Tools, String> {
    static PEERS: OnceLock<Result<Tools, String>> = OnceLock::new();
    PEERS.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("interop");
        let install = mode() == Mode::Install;
        let mut setup = Command::new("bash");
        setup.arg(repo().join("tests/interop/setup.sh"));
        if install {
            // Its progress, minutes of it on a first run, goes straight to the terminal.
            setup.stderr(Stdio::inherit());
        } else {
            setup.arg("--check").stderr(Stdio::piped());
        }
        let out = setup
            .arg(&dir)
            .output()
            .expect("bash runs tests/interop/setup.sh");
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            let how = if install { "" } else { " --check" };
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(format!(
                "tests/interop/setup.sh{how} failed ({}):\n{stderr}{stdout}",
                out.status
            ));
        }
        let last = stdout.lines().last().unwrap_or_default();
        let v: Value = serde_json::from_str(last)
            .unwrap_or_else(|e| panic!("setup.sh's last line is not JSON ({e}): {last}"));
        let field = |k: &str| {
            v[k].as_str()
                .unwrap_or_else(|| panic!("setup.sh gave no {k}: {last}"))
                .to_string()
        };
        Ok(Tools {
            python: field("python"),
            node_modules: field("node_modules"),
            gst_plugin_path: field("gst_plugin_path"),
            chromium: field("chromium"),
            turnserver: field("turnserver"),
        })
    })
}

/// Whether the matrix can run here. Without its peers it says it skips `what`, on stderr past
/// the test harness's capture so a plain `cargo test` shows it, unless `WISHCAST_INTEROP`
/// demands the peers: then the test fails with the same hint.
fn peers_installed(what: &str) -> bool {
    let Err(why) = peers() else {
        return true;
    };
    match mode() {
        Mode::Skip => {
            let _ = writeln!(
                std::io::stderr(),
                "interop: skipped {what}: peers not installed; {INSTALL_HINT}"
            );
            false
        }
        Mode::Require => panic!(
            "interop: peers not installed and WISHCAST_INTEROP=require; {INSTALL_HINT}\n{why}"
        ),
        Mode::Install => panic!("interop: installing the peers failed; {why}"),
    }
}

/// The peers; only called once `peers_installed` said yes.
fn tools() -> &'static Tools {
    peers()
        .as_ref()
        .expect("peers_installed is asked before any driver starts")
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where screenshots of the browser player go; the test prints their paths.
fn output_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("interop-output");
    std::fs::create_dir_all(&dir).expect("output dir");
    dir
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum PeerKind {
    Chromium,
    Aiortc,
    Gstreamer,
}

impl PeerKind {
    const ALL: [PeerKind; 3] = [PeerKind::Chromium, PeerKind::Aiortc, PeerKind::Gstreamer];

    fn name(self) -> &'static str {
        match self {
            PeerKind::Chromium => "chromium",
            PeerKind::Aiortc => "aiortc",
            PeerKind::Gstreamer => "gstreamer",
        }
    }

    /// The driver command for this peer, with its environment.
    fn command(self) -> Command {
        let t = tools();
        let mut c = match self {
            PeerKind::Chromium => {
                let mut c = Command::new("node");
                c.arg(repo().join("tests/interop/chromium.mjs"))
                    .env("NODE_PATH", &t.node_modules)
                    .env("WISHCAST_NODE_MODULES", &t.node_modules)
                    .env("CHROMIUM", &t.chromium);
                c
            }
            PeerKind::Aiortc => {
                let mut c = Command::new(&t.python);
                c.arg(repo().join("tests/interop/aiortc_peer.py"));
                c
            }
            PeerKind::Gstreamer => {
                let mut c = Command::new("/usr/bin/python3");
                c.arg(repo().join("tests/interop/gst_peer.py"))
                    .env("GST_PLUGIN_PATH", &t.gst_plugin_path);
                c
            }
        };
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }
}

/// A running driver: its JSON lines on a channel, its stderr kept for failure messages.
struct Driver {
    what: String,
    child: Child,
    events: Receiver<Value>,
    /// Every event taken off `events` so far, in order.
    seen: Vec<Value>,
    stderr: std::sync::Arc<Mutex<String>>,
}

impl Driver {
    fn spawn(peer: PeerKind, what: String, args: &[String]) -> Driver {
        let mut child = peer
            .command()
            .args(args)
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: driver starts: {e}"));
        let (tx, events) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let name = what.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => {
                        if tx.send(v).is_err() {
                            break;
                        }
                    }
                    Err(_) => eprintln!("{name}: stdout line that is not JSON: {line}"),
                }
            }
        });
        let stderr = std::sync::Arc::new(Mutex::new(String::new()));
        let (keep, err) = (stderr.clone(), child.stderr.take().expect("piped stderr"));
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if let Ok(mut s) = keep.lock() {
                    s.push_str(&line);
                    s.push('\n');
                }
            }
        });
        Driver {
            what,
            child,
            events,
            seen: Vec::new(),
            stderr,
        }
    }

    /// The next event named `name`, failing on an `error` event, an exit or the deadline.
    fn expect(&mut self, name: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) if v["event"] == "error" => self.fail(&format!("reported {v}")),
                Ok(v) => {
                    self.seen.push(v.clone());
                    if v["event"] == name {
                        return v;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.fail(&format!("no \"{name}\" within {within:?}"))
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    self.fail(&format!("exited ({status:?}) before \"{name}\""))
                }
            }
        }
    }

    /// The next event, or `None` if none came within `within`; fails on an `error` event or
    /// an exit, as [`Driver::expect`] does.
    fn next(&mut self, within: Duration) -> Option<Value> {
        match self.events.recv_timeout(within) {
            Ok(v) if v["event"] == "error" => self.fail(&format!("reported {v}")),
            Ok(v) => {
                self.seen.push(v.clone());
                Some(v)
            }
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().ok();
                self.fail(&format!("exited ({status:?}) while running"))
            }
        }
    }

    fn fail(&mut self, why: &str) -> ! {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(100));
        let log = self.stderr.lock().map(|s| s.clone()).unwrap_or_default();
        let tail: String = log
            .lines()
            .rev()
            .take(60)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        panic!(
            "{}: {why}\n--- its stderr (last lines) ---\n{tail}",
            self.what
        )
    }

    /// Asks the driver to stop the way an operator would (SIGTERM).
    fn terminate(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
    }

    fn wait_exit(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                if !status.success() {
                    self.fail(&format!("exited with {status}"));
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.fail(&format!("still running {within:?} after it was done"));
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gateway with bearer tokens required to publish and to play any stream (and to read its
/// API: [`ADMIN_TOKEN`]), and the real
/// consent timeout: RFC 7675 has peers check consent every 5 s on average (libnice, under
/// GStreamer, does), so the 3 s the other socket tests use can expire a healthy viewer between
/// two checks when its RTCP is sparse.
async fn gateway() -> Gateway {
    common::start(gateway_config()).await
}

/// The configuration [`gateway`] starts.
fn gateway_config() -> wishcast::Config {
    let mut c = common::test_config(2);
    c.timeouts.consent_secs = wishcast::Config::default().timeouts.consent_secs;
    c.auth = toml::from_str(&format!(
        "enabled = true\nadmin_tokens = [\"{ADMIN_TOKEN}\"]\n[[streams]]\npattern = \"*\"\n\
         publish_tokens = [\"{PUBLISH_TOKEN}\"]\nplay_tokens = [\"{PLAY_TOKEN}\"]\n"
    ))
    .expect("[auth] parses");
    c
}

/// One cell's outcome, for the table the matrix prints.
struct Cell {
    publisher: PeerKind,
    viewer: PeerKind,
    codec: &'static str,
    first_frame_ms: u64,
    frames: u64,
    size: (u64, u64),
    audio_packets: u64,
}

/// Publishes `codec` from `publisher`, lets every viewer kind watch at once, checks each cell,
/// then stops the publisher and checks the gateway ended its session.
async fn matrix_row(publisher: PeerKind, codec: &'static str) {
    matrix_row_with(publisher, codec, false).await;
}

/// As [`matrix_row`]; with `video_only` the publisher sends no audio and offers its one track
/// the way the peer does by itself (`--video-only` in tests/interop/README.md).
async fn matrix_row_with(publisher: PeerKind, codec: &'static str, video_only: bool) {
    if !peers_installed(&format!("{} publishing {codec}", publisher.name())) {
        return;
    }
    let _serial = SERIAL.lock().await;
    let gw = gateway().await;
    let only = if video_only { "-video-only" } else { "" };
    let stream = format!("{}-{codec}{only}", publisher.name());
    let base = format!("http://{}", gw.http_addr());

    let mut args: Vec<String> = vec![
        "publish".into(),
        "--url".into(),
        format!("{base}/whip/{stream}"),
        "--codec".into(),
        codec.into(),
        "--token".into(),
        PUBLISH_TOKEN.into(),
    ];
    if video_only {
        args.push("--video-only".into());
    }
    let mut pubd = Driver::spawn(
        publisher,
        format!("{} publishing {codec}{only}", publisher.name()),
        &args,
    );
    let published = pubd.expect("publishing", Duration::from_secs(60));
    let width = published["width"].as_u64().unwrap_or(0);
    let height = published["height"].as_u64().unwrap_or(0);
    let audio = published["audio"].as_bool().unwrap_or(false);
    assert!(width > 0 && height > 0, "publisher size: {published}");
    assert_eq!(audio, !video_only, "publisher audio: {published}");
    assert_eq!(published["codec"], codec, "publisher codec: {published}");
    if publisher == PeerKind::Chromium {
        assert_eq!(published["path"], "udp", "the page's path: {published}");
    }

    let mut viewers: Vec<(PeerKind, Driver)> = PeerKind::ALL
        .iter()
        .map(|&v| {
            let mut args = vec![
                "play".to_string(),
                "--url".into(),
                format!("{base}/whep/{stream}"),
                "--seconds".into(),
                WATCH_SECS.to_string(),
                "--token".into(),
                PLAY_TOKEN.into(),
            ];
            if v == PeerKind::Chromium {
                let shot = output_dir().join(format!("player-{stream}.png"));
                args.push("--screenshot".into());
                args.push(shot.display().to_string());
            }
            let what = format!("{} watching {} {codec}", v.name(), publisher.name());
            (v, Driver::spawn(v, what, &args))
        })
        .collect();

    let mut cells = Vec::new();
    for (viewer, d) in viewers.iter_mut() {
        let summary = d.expect("summary", Duration::from_secs(WATCH_SECS + 60));
        d.wait_exit(Duration::from_secs(10));
        let first = d.seen.iter().find(|v| v["event"] == "first_frame").cloned();
        let what = d.what.clone();
        let first_frame_ms = first.as_ref().and_then(|v| v["ms"].as_u64());
        let frames = summary["frames"].as_u64().unwrap_or(0);
        let size = (
            summary["width"].as_u64().unwrap_or(0),
            summary["height"].as_u64().unwrap_or(0),
        );
        let audio_packets = summary["audio_packets"].as_u64().unwrap_or(0);
        assert!(frames > 0, "{what}: no frame decoded: {summary}");
        let first_frame_ms = first_frame_ms.unwrap_or_else(|| panic!("{what}: no first_frame"));
        assert!(
            first_frame_ms <= FIRST_FRAME_LIMIT_MS,
            "{what}: first frame after {first_frame_ms} ms"
        );
        assert_eq!(size, (width, height), "{what}: decoded size: {summary}");
        assert_eq!(summary["codec"], codec, "{what}: codec: {summary}");
        if audio {
            assert!(audio_packets > 0, "{what}: no audio: {summary}");
        }
        assert_eq!(
            summary["delete_status"], 200,
            "{what}: the viewer's DELETE: {summary}"
        );
        if *viewer == PeerKind::Chromium {
            assert_eq!(
                summary["nonuniform"], true,
                "{what}: the picture drawn from <video> is uniform: {summary}"
            );
            assert_eq!(summary["path"], "udp", "{what}: the page's path: {summary}");
        }
        cells.push(Cell {
            publisher,
            viewer: *viewer,
            codec,
            first_frame_ms,
            frames,
            size,
            audio_packets,
        });
    }
    drop(viewers);

    pubd.terminate();
    let deleted = pubd.expect("deleted", Duration::from_secs(10));
    assert_eq!(deleted["status"], 200, "publisher's DELETE: {deleted}");
    pubd.wait_exit(Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(5);
    while gw.session_count() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        gw.session_count(),
        0,
        "sessions left on the gateway after every peer's DELETE"
    );
    gw.shutdown().await;

    for c in &cells {
        println!(
            "interop cell: {:>9} -> {:<9} {:<4} first frame {:>5} ms, {} frames {}x{}, {} audio packets",
            c.publisher.name(),
            c.viewer.name(),
            c.codec,
            c.first_frame_ms,
            c.frames,
            c.size.0,
            c.size.1,
            c.audio_packets
        );
    }
    if cells.iter().any(|c| c.viewer == PeerKind::Chromium) {
        println!(
            "interop screenshot: {}",
            output_dir().join(format!("player-{stream}.png")).display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_publishes_h264_to_every_viewer() {
    matrix_row(PeerKind::Chromium, "h264").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_publishes_vp8_to_every_viewer() {
    matrix_row(PeerKind::Chromium, "vp8").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_publishes_h264_to_every_viewer() {
    matrix_row(PeerKind::Aiortc, "h264").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_publishes_vp8_to_every_viewer() {
    matrix_row(PeerKind::Aiortc, "vp8").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gstreamer_publishes_h264_to_every_viewer() {
    matrix_row(PeerKind::Gstreamer, "h264").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gstreamer_publishes_vp8_to_every_viewer() {
    matrix_row(PeerKind::Gstreamer, "vp8").await;
}

/// webrtcbin with its default bundle policy offers one video track without a BUNDLE group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gstreamer_publishes_video_only_without_bundle_group_to_every_viewer() {
    matrix_row_with(PeerKind::Gstreamer, "h264", true).await;
}

/// A publisher of `kind` sending `codec` to `stream`, once it says it publishes.
fn start_publisher(kind: PeerKind, base: &str, stream: &str, codec: &str) -> (Driver, Value) {
    let mut d = Driver::spawn(
        kind,
        format!("{} publishing {codec}", kind.name()),
        &[
            "publish".into(),
            "--url".into(),
            format!("{base}/whip/{stream}"),
            "--codec".into(),
            codec.into(),
            "--token".into(),
            PUBLISH_TOKEN.into(),
        ],
    );
    let published = d.expect("publishing", Duration::from_secs(60));
    (d, published)
}

/// A viewer of `kind` watching `stream` for `WATCH_SECS`, with `extra` arguments; Chromium
/// saves a screenshot of its player.
fn start_viewer(kind: PeerKind, base: &str, stream: &str, extra: &[&str]) -> Driver {
    start_viewer_for(kind, base, stream, WATCH_SECS, extra)
}

/// As [`start_viewer`], watching for `secs`.
fn start_viewer_for(kind: PeerKind, base: &str, stream: &str, secs: u64, extra: &[&str]) -> Driver {
    let mut args: Vec<String> = vec![
        "play".into(),
        "--url".into(),
        format!("{base}/whep/{stream}"),
        "--seconds".into(),
        secs.to_string(),
        "--token".into(),
        PLAY_TOKEN.into(),
    ];
    if kind == PeerKind::Chromium {
        args.push("--screenshot".into());
        args.push(
            output_dir()
                .join(format!("player-{stream}.png"))
                .display()
                .to_string(),
        );
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    Driver::spawn(kind, format!("{} watching {stream}", kind.name()), &args)
}

/// The viewer decoded pictures of the publisher's size, its page (a browser's) reported media
/// path `path`, and its DELETE got 200. Returns its summary and its first frame's ms.
fn played(view: &mut Driver, published: &Value, path: Option<&str>) -> (Value, u64) {
    let summary = view.expect("summary", Duration::from_secs(WATCH_SECS + 60));
    view.wait_exit(Duration::from_secs(10));
    let what = view.what.clone();
    let first = view.seen.iter().find(|v| v["event"] == "first_frame");
    let first_ms = first.and_then(|v| v["ms"].as_u64()).unwrap_or(0);
    assert!(
        summary["frames"].as_u64().unwrap_or(0) > 0,
        "{what}: no frame decoded: {summary}"
    );
    assert_eq!(
        (&summary["width"], &summary["height"]),
        (&published["width"], &published["height"]),
        "{what}: decoded size: {summary}"
    );
    if let Some(path) = path {
        assert_eq!(summary["path"], path, "{what}: the page's path: {summary}");
        assert_eq!(summary["nonuniform"], true, "{what}: a picture: {summary}");
    }
    assert_eq!(summary["delete_status"], 200, "{what}: {summary}");
    (summary, first_ms)
}

/// Stops a publisher driver: its page or peer DELETEs its session, which must get 200.
fn stop_publisher(mut publisher: Driver) {
    publisher.terminate();
    let deleted = publisher.expect("deleted", Duration::from_secs(10));
    assert_eq!(deleted["status"], 200, "publisher's DELETE: {deleted}");
    publisher.wait_exit(Duration::from_secs(10));
}

/// ICE-TCP with a real browser: every UDP datagram to or from the gateway's media ports is
/// dropped (an iptables chain the test installs and removes), as a firewall that blocks UDP
/// would. Chromium's bundled pages then reach the gateway only through their active TCP
/// candidates and its passive one: the publisher sends and the player decodes a picture of the
/// publisher's size, and both pages' statistics name the path "tcp".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_publishes_and_watches_over_ice_tcp_with_udp_blocked() {
    use wishcast::client::impair::{ImpairError, IptablesLoss};
    if !peers_installed("chromium over ICE-TCP") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let gw = gateway().await;
    let ports: Vec<u16> = gw.media_addrs().iter().map(|a| a.port()).collect();
    let required = std::env::var("WISHCAST_NETADMIN").is_ok_and(|v| v == "require");
    let _blocked = match IptablesLoss::block_udp_ports("wishcast-icetcp", &ports) {
        Ok(b) => b,
        Err(e @ (ImpairError::NotRoot(_) | ImpairError::NoIptables(_))) if !required => {
            eprintln!("skipped: {e} (run as root with iptables installed)");
            return;
        }
        Err(e) => panic!("iptables rule: {e}"),
    };
    let base = format!("http://{}", gw.http_addr());
    let stream = "chromium-ice-tcp";
    let (publisher, published) = start_publisher(PeerKind::Chromium, &base, stream, "h264");
    assert_eq!(published["path"], "tcp", "publisher's path: {published}");
    let mut view = start_viewer(PeerKind::Chromium, &base, stream, &[]);
    let (summary, first_ms) = played(&mut view, &published, Some("tcp"));
    stop_publisher(publisher);
    println!(
        "interop cell: chromium -> chromium over ICE-TCP, first frame {first_ms} ms, {} frames",
        summary["frames"]
    );
    gw.shutdown().await;
}

/// coturn's shared secret (TURN REST API) in the relay cells, and the API's admin token there.
const TURN_SECRET: &str = "interop-turn-secret-5d1c";
const ADMIN_TOKEN: &str = "interop-admin-0c4f";

/// A gateway as [`gateway`] makes one, whose `[[ice_servers]]` names `turn` with its secret
/// (each answer carries fresh credentials), and with an admin token for the API.
async fn gateway_with_turn(turn: &Coturn) -> (Gateway, wishcast::config::IceServer) {
    let mut c = common::test_config(2);
    c.auth = toml::from_str(&format!(
        "enabled = true\nadmin_tokens = [\"{ADMIN_TOKEN}\"]\n[[streams]]\npattern = \"*\"\n\
         publish_tokens = [\"{PUBLISH_TOKEN}\"]\nplay_tokens = [\"{PLAY_TOKEN}\"]\n"
    ))
    .expect("[auth] parses");
    let server: wishcast::config::IceServer = toml::from_str(&format!(
        "url = \"turn:127.0.0.1:{}?transport=udp\"\nsecret = \"{TURN_SECRET}\"\nttl_secs = 3600\n",
        turn.port
    ))
    .expect("[[ice_servers]] parses");
    c.ice_servers = vec![server.clone()];
    (common::start(c).await, server)
}

/// The stream's one viewer reaches the gateway from a relayed candidate, over UDP.
async fn the_viewer_is_relayed(base: &str, stream: &str) {
    let r = wishcast::client::http::request(
        "GET",
        &format!("{base}/api/streams/{stream}"),
        &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
        Vec::new(),
    )
    .await
    .expect("API answers");
    let figures: Value = serde_json::from_slice(&r.body).unwrap_or_default();
    let viewers = figures["viewers"].as_array().cloned().unwrap_or_default();
    assert_eq!(viewers.len(), 1, "{figures}");
    assert_eq!(viewers[0]["candidate"], "relay", "{figures}");
    assert_eq!(viewers[0]["transport"], "udp", "{figures}");
}

/// coturn, started for one test on loopback with the TURN REST API (`use-auth-secret`), and
/// killed when dropped.
struct Coturn {
    child: Child,
    port: u16,
}

impl Coturn {
    fn start(secret: &str) -> Coturn {
        // A free port: bound, then let go for coturn to take.
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("a free UDP port")
            .port();
        let log = std::fs::File::create(output_dir().join("coturn.log")).expect("coturn log");
        let child = Command::new(&tools().turnserver)
            .args([
                "-n",
                "--listening-ip=127.0.0.1",
                &format!("--listening-port={port}"),
                "--relay-ip=127.0.0.1",
                "--min-port=49152",
                "--max-port=65535",
                "--use-auth-secret",
                &format!("--static-auth-secret={secret}"),
                "--realm=wishcast.test",
                // The gateway is on loopback too; coturn refuses loopback peers otherwise.
                "--allow-loopback-peers",
                "--no-tls",
                "--no-dtls",
                "--no-cli",
                "--no-stun",
                "--log-file=stdout",
                "--simple-log",
                "--verbose",
                // Its own database file, not the system's (unused with a shared secret).
                &format!("--db={}", output_dir().join("turndb").display()),
            ])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("turnserver starts");
        // Until it holds its port (binding it ourselves then fails), 10 s at most.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            assert!(Instant::now() < deadline, "coturn did not take port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Coturn { child, port }
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// TURN through coturn: an aiortc viewer that may offer relayed candidates only (its
/// `iceTransportPolicy` is relay, as a client whose only way out is its TURN server) plays an
/// aiortc publisher's stream. It uses the credentials the gateway hands out in its `Link`
/// headers (`[[ice_servers]]` with coturn's shared secret), and the gateway's API names that
/// viewer's candidate `relay`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_watches_through_a_turn_relay_only() {
    if !peers_installed("aiortc through TURN") {
        return;
    }
    watch_through_turn(PeerKind::Aiortc, "aiortc-turn", None).await;
}

/// TURN with a real browser: Chromium's player, asked to offer relayed candidates only
/// (`#relay=1`, `iceTransportPolicy: 'relay'`), gets coturn's credentials from the gateway's
/// 201, offers again with them at once, and plays an aiortc publisher through coturn. Its
/// statistics say `relay/udp`, and the gateway's API names its candidate `relay`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_watches_through_a_turn_relay_only() {
    if !peers_installed("chromium through TURN") {
        return;
    }
    watch_through_turn(PeerKind::Chromium, "chromium-turn", Some("relay/udp")).await;
}

/// One TURN cell: coturn, a gateway naming it, an aiortc publisher, and a `viewer` that offers
/// relayed candidates only. aiortc takes coturn's credentials on its command line (the same
/// ones the gateway's `Link` headers carry); Chromium reads them from the gateway's 201. The
/// gateway's API must name the viewer's candidate `relay` while it plays, and its player's
/// statistics `path` when given.
async fn watch_through_turn(viewer: PeerKind, stream: &str, path: Option<&str>) {
    let _serial = SERIAL.lock().await;
    let turn = Coturn::start(TURN_SECRET);
    let (gw, server) = gateway_with_turn(&turn).await;
    let base = format!("http://{}", gw.http_addr());
    let (publisher, published) = start_publisher(PeerKind::Aiortc, &base, stream, "vp8");
    let mut args: Vec<String> = Vec::new();
    if viewer == PeerKind::Aiortc {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let (user, credential) = server.credentials(now);
        args = vec![
            "--ice-server".into(),
            server.url.clone(),
            "--ice-username".into(),
            user.expect("user"),
            "--ice-credential".into(),
            credential.expect("credential"),
        ];
    }
    args.push("--relay-only".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut view = start_viewer(viewer, &base, stream, &args);
    view.expect("first_frame", Duration::from_secs(30));
    // While it plays: the gateway sees the viewer at coturn's relayed address.
    the_viewer_is_relayed(&base, stream).await;
    let (summary, first_ms) = played(&mut view, &published, path);
    stop_publisher(publisher);
    println!(
        "interop cell: aiortc -> {} through TURN (relay only), first frame {first_ms} ms, {} frames",
        viewer.name(),
        summary["frames"]
    );
    gw.shutdown().await;
    drop(turn);
}

/// How long the layer-switching player watches: time for the layers to appear, the automatic
/// choice to reach the largest, and both switches.
const SWITCH_WATCH_SECS: u64 = 30;

/// What the test kit viewer of the simulcast stream received.
#[derive(Debug, Default)]
struct KitLog {
    video_frames: u64,
    keyframes: u64,
    /// The longest wait between two video frames, after the first.
    longest_gap: Duration,
    /// Each picture size a VP8 keyframe announced, in the order they changed (none for H264).
    sizes: Vec<(u32, u32)>,
}

/// The picture size a VP8 key frame announces (RFC 6386 §9.1), from its depacketized frame.
fn vp8_key_size(frame: &[u8]) -> Option<(u32, u32)> {
    let key = frame.first()? & 1 == 0;
    if !key || frame.get(3..6)? != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u16::from_le_bytes([frame[6], *frame.get(7)?]) & 0x3fff;
    let h = u16::from_le_bytes([*frame.get(8)?, *frame.get(9)?]) & 0x3fff;
    Some((u32::from(w), u32::from(h)))
}

/// Simulcast from a real browser, in VP8.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_publishes_vp8_simulcast_and_its_player_switches_layers() {
    simulcast_switch("vp8").await;
}

/// Simulcast from a real browser, in H264 (OpenH264, one encoder per layer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_publishes_h264_simulcast_and_its_player_switches_layers() {
    simulcast_switch("h264").await;
}

/// Chromium's publisher page sending `codec` as simulcast to `stream`, once it says it is
/// publishing, with what it says it sends.
fn chromium_simulcast_publisher(codec: &str, base: &str, stream: &str) -> (Driver, Value) {
    let mut publisher = Driver::spawn(
        PeerKind::Chromium,
        format!("chromium publishing {codec} simulcast"),
        &[
            "publish".into(),
            "--url".into(),
            format!("{base}/whip/{stream}"),
            "--codec".into(),
            codec.into(),
            "--token".into(),
            PUBLISH_TOKEN.into(),
            "--simulcast".into(),
        ],
    );
    let published = publisher.expect("publishing", Duration::from_secs(90));
    (publisher, published)
}

/// Chromium's publisher page sends `codec` as three layers (`#simulcast=1`: full, half and
/// quarter size of a 720p fake camera); the gateway keeps all three. Its player page follows
/// the `layers` event and lists the three, plays the largest on its own, and through the layer
/// selection extension pins the smallest (the decoded height drops to that layer's) and
/// returns to automatic choice (back to the largest); the time from each POST to the new size
/// decoded is printed. Meanwhile a test kit viewer, on automatic choice, receives one
/// continuous stream.
async fn simulcast_switch(codec: &'static str) {
    use wishcast::client::{ClientOptions, Peer, PeerOptions, VideoCodec};
    if !peers_installed(&format!("chromium publishing {codec} simulcast")) {
        return;
    }
    let _serial = SERIAL.lock().await;
    let gw = gateway().await;
    let base = format!("http://{}", gw.http_addr());
    let stream = format!("chromium-{codec}-simulcast");
    let stream = stream.as_str();
    let video = match codec {
        "vp8" => VideoCodec::Vp8,
        _ => VideoCodec::H264,
    };

    let (publisher, published) = chromium_simulcast_publisher(codec, &base, stream);
    println!("interop simulcast: publisher sends {published}");
    let sent = published["layers"].as_array().cloned().unwrap_or_default();
    let mut heights: Vec<u64> = sent
        .iter()
        .filter(|l| l["frames"].as_u64().unwrap_or(0) > 0)
        .map(|l| l["height"].as_u64().unwrap_or(0))
        .collect();
    heights.sort_unstable();
    heights.dedup();
    assert_eq!(
        heights.len(),
        3,
        "three layers of three sizes encoded: {published}"
    );
    assert_eq!(published["height"], 720, "the full-size layer: {published}");
    assert_eq!(published["codec"], codec, "{published}");

    // The test kit viewer, on the gateway's automatic choice throughout.
    let mut opts = ClientOptions::from(PeerOptions::with_video(video));
    opts.bearer = Some(PLAY_TOKEN.into());
    let mut kit = Peer::play(&format!("{base}/whep/{stream}"), opts)
        .await
        .expect("the test kit viewer's offer is accepted");
    kit.wait_connected(Duration::from_secs(10))
        .await
        .expect("the test kit viewer connects");
    let (stop_kit, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let kit_task = tokio::spawn(async move {
        let mut log = KitLog::default();
        let mut last: Option<Instant> = None;
        loop {
            let frame = tokio::select! {
                _ = &mut stopped => break,
                f = kit.next_frame(Duration::from_secs(10)) => f,
            };
            let Some(f) = frame else { break };
            if f.kind != str0m::media::MediaKind::Video {
                continue;
            }
            log.video_frames += 1;
            if let Some(prev) = last {
                log.longest_gap = log.longest_gap.max(f.at.duration_since(prev));
            }
            last = Some(f.at);
            if f.keyframe {
                log.keyframes += 1;
            }
            if let Some(size) = vp8_key_size(&f.data) {
                if log.sizes.last() != Some(&size) {
                    log.sizes.push(size);
                }
            }
        }
        (kit, log)
    });
    let kit_from = Instant::now();

    let mut view = start_viewer_for(
        PeerKind::Chromium,
        &base,
        stream,
        SWITCH_WATCH_SECS,
        &["--switch-layers"],
    );
    let layers = view.expect("layers", Duration::from_secs(SWITCH_WATCH_SECS + 30));
    println!("interop simulcast: the player's layers {layers}");
    let listed = layers["layers"].as_array().cloned().unwrap_or_default();
    assert_eq!(listed.len(), 3, "the layers event lists three: {layers}");
    let mut listed_heights: Vec<u64> = listed.iter().filter_map(|l| l["height"].as_u64()).collect();
    listed_heights.sort_unstable();
    assert_eq!(
        listed_heights, heights,
        "each layer's size, from VP8 key frames or H264's SPS: {layers}"
    );
    let down = view.expect("switch", Duration::from_secs(SWITCH_WATCH_SECS + 30));
    println!("interop simulcast: switch down {down}");
    assert_eq!(down["status"], 200, "pinning the smallest layer: {down}");
    assert!(
        down["ms"].is_u64(),
        "the picture drops to the smallest layer's height: {down}"
    );
    assert_eq!(
        down["height"], heights[0],
        "the height of the smallest layer sent: {down}"
    );
    let up = view.expect("switch", Duration::from_secs(SWITCH_WATCH_SECS + 30));
    println!("interop simulcast: switch up {up}");
    assert_eq!(up["to"], "auto", "{up}");
    assert_eq!(up["status"], 200, "returning to automatic choice: {up}");
    assert!(
        up["ms"].is_u64(),
        "automatic choice brings the largest layer back: {up}"
    );
    assert_eq!(up["height"], 720, "the full-size layer again: {up}");
    let (summary, first_ms) = played(&mut view, &published, Some("udp"));
    assert_eq!(summary["codec"], codec, "{summary}");

    let _ = stop_kit.send(());
    let (kit, log) = kit_task.await.expect("the test kit viewer's task");
    let watched = kit_from.elapsed();
    let stats = kit.stats();
    let kit_status = kit.delete().await.expect("the test kit viewer's DELETE");
    stop_publisher(publisher);
    gw.shutdown().await;

    println!(
        "interop cell: chromium {codec} simulcast -> chromium, first frame {first_ms} ms, {} frames {}x{}",
        summary["frames"], summary["width"], summary["height"]
    );
    println!(
        "interop cell: chromium {codec} simulcast -> test kit, {} video frames in {:.1} s, {} keyframes, \
         {} discontinuities, longest gap {} ms, sizes {:?}",
        log.video_frames,
        watched.as_secs_f64(),
        log.keyframes,
        stats.discontinuities,
        log.longest_gap.as_millis(),
        log.sizes
    );
    println!(
        "interop simulcast: {codec} switch down: {} ms, up: {} ms (selection POST to the new size decoded)",
        down["ms"], up["ms"]
    );
    assert_eq!(kit_status, 200, "the test kit viewer's DELETE");
    // A fake camera at 30 fps, slowed by a busy machine: at least 10 frames a second.
    let fps = log.video_frames as f64 / watched.as_secs_f64();
    assert!(
        fps >= 10.0,
        "the test kit viewer's frames keep coming: {log:?}"
    );
    assert!(
        log.longest_gap < Duration::from_secs(1),
        "no pause of a second or more: {log:?}"
    );
    assert!(
        stats.discontinuities <= 3,
        "few discontinuities: {} ({log:?})",
        stats.discontinuities
    );
}

/// Milliseconds since the Unix epoch: the clock the traced player stamps its events with.
fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What a player run with `--trace` reported: each change of the size on screen and of the
/// decoder's output, and its counters every half second.
#[derive(Debug, Default)]
struct Trace {
    /// (wall-clock ms, width, height) of the presented frames, as it changed.
    rendered: Vec<(u64, u64, u64)>,
    /// The same from the decoder's statistics.
    decoded: Vec<(u64, u64, u64)>,
    ticks: Vec<Value>,
}

impl Trace {
    fn take(&mut self, v: &Value) {
        let size = || {
            let n = |k: &str| v[k].as_u64().unwrap_or(0);
            (n("t"), n("width"), n("height"))
        };
        match v["event"].as_str() {
            Some("rendered") => self.rendered.push(size()),
            Some("decoded") => self.decoded.push(size()),
            Some("tick") => self.ticks.push(v.clone()),
            _ => {}
        }
    }

    /// The changes of size on screen: the presented frames', or where the page's video
    /// element reports no presented frames, the decoder's.
    fn screen(&self) -> &[(u64, u64, u64)] {
        if self.rendered.is_empty() {
            &self.decoded
        } else {
            &self.rendered
        }
    }

    /// The height on screen and since when (wall-clock ms).
    fn on_screen(&self) -> Option<(u64, u64)> {
        self.screen().last().map(|&(t, _, h)| (h, t))
    }

    /// The first time at or after `from` that the screen changed to `height`.
    fn shown_after(&self, from: u64, height: u64) -> Option<u64> {
        self.screen()
            .iter()
            .find(|&&(t, _, h)| t >= from && h == height)
            .map(|&(t, _, _)| t)
    }

    /// The last tick's layers, listed by the page from the gateway's `layers` events.
    fn layers(&self) -> Vec<Value> {
        self.ticks
            .last()
            .and_then(|t| t["layers"].as_array().cloned())
            .unwrap_or_default()
    }

    /// The last tick's layers as (height, bits per second, rid), smallest first: the rates
    /// the gateway measured (payload only).
    fn rates(&self) -> Vec<(u64, u64, String)> {
        let mut layers: Vec<(u64, u64, String)> = self
            .layers()
            .iter()
            .map(|l| {
                (
                    l["height"].as_u64().unwrap_or(0),
                    l["bitrate"].as_u64().unwrap_or(0),
                    l["rid"].as_str().unwrap_or("?").to_string(),
                )
            })
            .collect();
        layers.sort_unstable();
        layers
    }

    fn last_tick(&self, key: &str) -> u64 {
        self.ticks.last().and_then(|t| t[key].as_u64()).unwrap_or(0)
    }

    /// The tick at or just before `t`.
    fn tick_at(&self, t: u64) -> Option<&Value> {
        self.ticks
            .iter()
            .take_while(|v| v["t"].as_u64().unwrap_or(0) <= t)
            .last()
    }

    /// The longest time from `from` on during which the count of decoded frames did not grow,
    /// in ms, as the ticks saw it.
    fn longest_stall(&self, from: u64) -> u64 {
        let mut longest = 0;
        let mut grew: Option<(u64, u64)> = None;
        for v in &self.ticks {
            let (t, frames) = (
                v["t"].as_u64().unwrap_or(0),
                v["frames"].as_u64().unwrap_or(0),
            );
            if t < from {
                continue;
            }
            match grew {
                Some((since, n)) if frames <= n => longest = longest.max(t - since),
                _ => grew = Some((t, frames)),
            }
        }
        longest
    }

    /// The longest wait between two presented frames from `from` on, in ms.
    fn longest_gap(&self, from: u64) -> u64 {
        self.ticks
            .iter()
            .filter(|v| v["t"].as_u64().unwrap_or(0) >= from)
            .filter_map(|v| v["gap_ms"].as_u64())
            .max()
            .unwrap_or(0)
    }

    /// The sizes on screen, each with its time relative to `zero`, for failure messages.
    fn timeline(&self, zero: u64) -> String {
        let at = |t: u64| (t as f64 - zero as f64) / 1000.0;
        let mut lines: Vec<(u64, String)> = self
            .screen()
            .iter()
            .map(|&(t, w, h)| (t, format!("  {:>6.2} s: {w}x{h} on screen", at(t))))
            .collect();
        let mut prev: Option<&Value> = None;
        for v in &self.ticks {
            let t = v["t"].as_u64().unwrap_or(0);
            if t >= zero {
                let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
                // The jitter buffer's mean delay over this tick's frames.
                let buffer = prev
                    .and_then(|p| {
                        let frames = n(v, "buffered").saturating_sub(n(p, "buffered"));
                        let ms = n(v, "buffer_ms").saturating_sub(n(p, "buffer_ms"));
                        ms.checked_div(frames)
                    })
                    .map_or_else(|| "-".into(), |ms| format!("{ms} ms"));
                lines.push((
                    t,
                    format!(
                        "  {:>6.2} s: {} frames decoded of {} received ({} packets), {} lost, \
                         {} nacks, {} plis, {} freezes, gap {} ms, buffer {buffer}",
                        at(t),
                        v["frames"],
                        v["received"],
                        v["packets"],
                        v["lost"],
                        v["nacks"],
                        v["plis"],
                        v["freezes"],
                        v["gap_ms"]
                    ),
                ));
            }
            prev = Some(v);
        }
        lines.sort_by_key(|(t, _)| *t);
        let lines: Vec<String> = lines.into_iter().map(|(_, l)| l).collect();
        lines.join("\n")
    }
}

/// Reads `view`'s events into `trace` until `done` says so (true) or `within` passed (false).
fn follow(
    view: &mut Driver,
    trace: &mut Trace,
    within: Duration,
    done: impl Fn(&Trace) -> bool,
) -> bool {
    let deadline = Instant::now() + within;
    tokio::task::block_in_place(|| loop {
        if done(trace) {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        if let Some(v) = view.next(left.min(Duration::from_millis(100))) {
            trace.take(&v);
        }
    })
}

/// The address the gateway's API gives for the stream's one viewer, and that it plays over UDP.
async fn viewer_address(base: &str, stream: &str) -> std::net::SocketAddr {
    let r = wishcast::client::http::request(
        "GET",
        &format!("{base}/api/streams/{stream}"),
        &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
        Vec::new(),
    )
    .await
    .expect("API answers");
    let figures: Value = serde_json::from_slice(&r.body).unwrap_or_default();
    let viewers = figures["viewers"].as_array().cloned().unwrap_or_default();
    assert_eq!(viewers.len(), 1, "{figures}");
    assert_eq!(viewers[0]["transport"], "udp", "{figures}");
    viewers[0]["remote"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("the viewer's address: {figures}"))
}

/// How long the capped-link player may run in all; the test stops it once done.
const ABR_WATCH_SECS: u64 = 150;
/// Time for the gateway's automatic choice to put the largest layer on the player's screen,
/// once the publisher sends all three, and for it to stay there `ABR_STEADY`.
const ABR_TOP_WITHIN: Duration = Duration::from_secs(40);
/// How long the largest layer plays before the cap: the publisher's bandwidth estimate, and
/// with it its layers' rates, ramps up for seconds after the start, and a viewer that just
/// moved up is still on probation (a loss within 3 s of a move up holds it back for 4 s).
const ABR_STEADY: Duration = Duration::from_secs(5);
/// From the cap to the smallest layer on screen, at most.
const ABR_DOWN_WITHIN: Duration = Duration::from_secs(20);
/// How long the smallest layer stays on screen under the cap before the cap lifts.
const ABR_HOLD_LOW: Duration = Duration::from_millis(1500);
/// From the cap's end to the largest layer on screen, at most.
const ABR_UP_WITHIN: Duration = Duration::from_secs(20);
/// Room in the cap for the audio and RTCP on the capped flow (Chromium's Opus, about 32 kbit/s
/// of payload, with its headers).
const ABR_AUDIO_BPS: u64 = 60_000;
/// How long the player goes on once the largest layer is back on screen.
const ABR_AFTER_UP: Duration = Duration::from_secs(3);
/// The longest the picture may stand still, from the cap on: the move down waits for a
/// keyframe of the smallest layer after the loss began.
const ABR_LONGEST_STALL_MS: u64 = 2500;

/// "180p 97, 360p 260, 720p 700": each layer's height and rate in kbit/s.
fn kbits(layers: &[(u64, u64, String)]) -> String {
    layers
        .iter()
        .map(|(h, bps, _)| format!("{h}p {}", bps / 1000))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Adaptive bitrate with a real browser on the viewing end, in H264: see [`capped_link`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_viewer_on_a_capped_link_drops_to_the_smallest_layer_and_returns() {
    capped_link("h264").await;
}

/// The same in VP8, where a move to another layer must also keep the payload descriptor's
/// picture ID and TL0PICIDX continuous (`wishcast::vp8`): with each layer's own numbering
/// forwarded, Chromium's receiver held complete frames back for 2-8 s after moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_viewer_on_a_capped_link_drops_to_the_smallest_layer_and_returns_vp8() {
    capped_link("vp8").await;
}

/// Adaptive bitrate with a real browser on the viewing end. Chromium publishes `codec` as
/// simulcast (three layers of 720p, 360p and 180p) and Chromium's player watches on the
/// gateway's automatic choice. Once it has shown the largest layer for a while, the gateway's
/// datagrams to it are capped by the kernel (an iptables `hashlimit` rule on the flow from the
/// gateway's media ports to the address the API gives for the viewer) at a rate between the
/// smallest layer's and the middle one's: the loss in the player's receiver reports brings it
/// down to the smallest layer. Once that is on screen the cap lifts, and the estimate's growth
/// brings it back up to the largest. The times from the cap to the smallest layer on screen
/// and from the lift to the largest on screen are printed; frames keep being decoded
/// throughout, without a long freeze, in one session.
///
/// The publisher is a browser rather than the test kit's synthetic layers, whose frames no
/// decoder could show: only real pictures have sizes the player can report on screen.
async fn capped_link(codec: &'static str) {
    use wishcast::client::impair::{self, ImpairError, IptablesRateCap};
    if !peers_installed(&format!("chromium {codec} on a capped link")) {
        return;
    }
    let required = std::env::var("WISHCAST_NETADMIN").is_ok_and(|v| v == "require");
    match impair::available() {
        Ok(()) => {}
        Err(e @ (ImpairError::NotRoot(_) | ImpairError::NoIptables(_))) if !required => {
            eprintln!("skipped: {e} (run as root with iptables installed)");
            return;
        }
        Err(e) => panic!("iptables: {e}"),
    }
    let _serial = SERIAL.lock().await;
    // UDP only: the cap is on UDP, and Chromium's player sometimes settles on a TCP pair.
    let mut config = gateway_config();
    config.media.ice_tcp = false;
    let gw = common::start(config).await;
    let base = format!("http://{}", gw.http_addr());
    let stream = format!("chromium-{codec}-abr");
    let stream = stream.as_str();

    let (publisher, published) = chromium_simulcast_publisher(codec, &base, stream);
    println!("interop abr: publisher sends {published}");
    assert_eq!(published["codec"], codec, "{published}");

    let mut view = start_viewer_for(
        PeerKind::Chromium,
        &base,
        stream,
        ABR_WATCH_SECS,
        &["--trace"],
    );
    view.expect("first_frame", Duration::from_secs(30));
    let mut trace = Trace::default();
    let top_on_screen = |t: &Trace| {
        let layers = t.layers();
        let top = layers.iter().filter_map(|l| l["height"].as_u64()).max();
        let steady = ABR_STEADY.as_millis() as u64;
        layers.len() == 3
            && layers
                .iter()
                .all(|l| l["bitrate"].as_u64().unwrap_or(0) > 0)
            && top.is_some()
            && t.on_screen().is_some_and(|(h, since)| {
                Some(h) == top && wall_ms().saturating_sub(since) >= steady
            })
    };
    let start = wall_ms();
    if !follow(&mut view, &mut trace, ABR_TOP_WITHIN, top_on_screen) {
        view.fail(&format!(
            "three layers listed and the largest on screen for {ABR_STEADY:?} within \
             {ABR_TOP_WITHIN:?}: layers {:?}, screen:\n{}",
            trace.layers(),
            trace.timeline(start)
        ));
    }
    let layers = trace.rates();
    let (low, mid, top) = (&layers[0], &layers[1], &layers[2]);
    // The cap goes between the two smaller layers; the gateway ranks layers by rate, so the
    // largest picture must also be the largest rate.
    assert!(
        mid.1 * 2 >= low.1 * 3 && top.1 > mid.1,
        "layers of clearly different rates: {layers:?}"
    );
    // Half way between the smallest layer's rate and the middle one's, plus the audio the
    // same flow carries: what reaches the player of the middle layer's video is then less
    // than its rate, and the smallest layer passes with its headers and keyframes.
    let cap_bps = (low.1 + mid.1) / 2 + ABR_AUDIO_BPS;

    let remote = viewer_address(&base, stream).await;
    let session = trace.ticks.last().map(|t| t["session"].clone());
    let cap = IptablesRateCap::flow("wishcast-crabr", gw.media_addrs(), remote, cap_bps / 8)
        .unwrap_or_else(|e| panic!("iptables rule: {e}"));
    let capped = wall_ms();
    let held = |t: &Trace| {
        t.on_screen().is_some_and(|(h, since)| {
            h == low.0 && wall_ms().saturating_sub(since) >= ABR_HOLD_LOW.as_millis() as u64
        })
    };
    if !follow(&mut view, &mut trace, ABR_DOWN_WITHIN + ABR_HOLD_LOW, held) {
        view.fail(&format!(
            "the smallest layer ({}p) on screen for {ABR_HOLD_LOW:?} within {ABR_DOWN_WITHIN:?} of \
             the cap ({cap_bps} bit/s, {} datagrams dropped):\n{}",
            low.0,
            cap.dropped(),
            trace.timeline(capped)
        ));
    }
    let dropped = cap.dropped();
    drop(cap);
    let lifted = wall_ms();
    let rates_lifted = trace.rates();
    let down_at = trace
        .shown_after(capped, low.0)
        .expect("the smallest layer was on screen");
    let up = |t: &Trace| t.shown_after(lifted, top.0).is_some();
    if !follow(&mut view, &mut trace, ABR_UP_WITHIN, up) {
        view.fail(&format!(
            "the largest layer ({}p) on screen within {ABR_UP_WITHIN:?} of the cap's end:\n{}",
            top.0,
            trace.timeline(capped)
        ));
    }
    let up_at = trace
        .shown_after(lifted, top.0)
        .expect("the largest layer is on screen");
    let rates_up = trace.rates();
    // The middle layer on the way up, if it showed.
    let mid_ms = trace
        .shown_after(lifted, mid.0)
        .filter(|&t| t <= up_at)
        .map(|t| format!("{} ms", t - lifted))
        .unwrap_or_else(|| "not shown".into());
    // A while more of the largest layer, then the player stops.
    let until = up_at + ABR_AFTER_UP.as_millis() as u64;
    follow(&mut view, &mut trace, ABR_AFTER_UP * 2, |t| {
        t.ticks
            .last()
            .and_then(|v| v["t"].as_u64())
            .is_some_and(|t| t >= until)
    });
    view.terminate();
    let summary = view.expect("summary", Duration::from_secs(30));
    view.wait_exit(Duration::from_secs(10));
    stop_publisher(publisher);
    gw.shutdown().await;

    let down_ms = down_at - capped;
    let up_ms = up_at - lifted;
    let frames_at = |t: u64| {
        trace
            .tick_at(t)
            .and_then(|v| v["frames"].as_u64())
            .unwrap_or(0)
    };
    let (frames_capped, frames_lifted) = (frames_at(capped), frames_at(lifted));
    let frames_end = trace.last_tick("frames");
    let freezes = trace.last_tick("freezes")
        - trace
            .tick_at(capped)
            .and_then(|v| v["freezes"].as_u64())
            .unwrap_or(0);
    let freeze_ms = trace.last_tick("freeze_ms")
        - trace
            .tick_at(capped)
            .and_then(|v| v["freeze_ms"].as_u64())
            .unwrap_or(0);
    let stall = trace.longest_stall(capped);
    let gap = trace.longest_gap(capped);
    let (under, after) = (frames_lifted - frames_capped, frames_end - frames_lifted);
    // Moves after the first of the largest layer: automatic choice should stay there.
    let moves_after = trace.screen().iter().filter(|(t, _, _)| *t > up_at).count();
    let (_, _, final_height) = *trace.screen().last().expect("a size on screen");
    println!("interop abr: from the cap on:\n{}", trace.timeline(capped));
    println!(
        "interop abr: layer rates (kbit/s) at the cap {}, at the lift {}, with the largest back \
         on screen {}",
        kbits(&layers),
        kbits(&rates_lifted),
        kbits(&rates_up)
    );
    println!(
        "interop cell: chromium {codec} abr: cap applied -> low layer {down_ms} ms, cap lifted \
         -> top layer {up_ms} ms (middle layer {mid_ms}), then {moves_after} size changes in \
         {} s ({final_height}p at the end), cap {} kbit/s, {dropped} datagrams dropped, frames \
         decoded {under} under the cap and {after} after, longest gap {gap} ms, {freezes} \
         freezes ({freeze_ms} ms)",
        ABR_AFTER_UP.as_secs(),
        cap_bps / 1000,
    );
    assert!(dropped > 0, "the cap dropped datagrams");
    assert!(
        trace
            .ticks
            .iter()
            .filter(|v| v["t"].as_u64().unwrap_or(0) >= start)
            .all(|v| Some(v["session"].clone()) == session),
        "one session throughout: the player did not reconnect"
    );
    assert!(
        under > 0 && after > 0,
        "frames decoded under the cap ({under}) and after it ({after})"
    );
    assert!(
        stall < ABR_LONGEST_STALL_MS && gap < ABR_LONGEST_STALL_MS,
        "no freeze of {ABR_LONGEST_STALL_MS} ms: decoded frames stalled {stall} ms at most, \
         presented ones {gap} ms"
    );
    assert_eq!(summary["delete_status"], 200, "{summary}");
}
