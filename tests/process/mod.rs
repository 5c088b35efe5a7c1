//! The `wishcast` binary as its own process, started on a configuration file the test writes:
//! its memory, file descriptors and threads are its own, read from `/proc`, and it can be sent
//! signals.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Output lines kept for a failing test's message.
const KEPT_LINES: usize = 4000;
/// How long the binary may take to announce its listener.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What a configuration for a test gateway starts with: loopback only, free ports, no rate
/// limit on POSTs (the tests make many from one address). Sections may follow it.
pub fn base_config(shards: usize, consent_secs: f64) -> String {
    format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n\n\
         [media]\nbind_ip = \"127.0.0.1\"\nudp_base_port = 0\nshards = {shards}\n\n\
         [timeouts]\nconsent_secs = {consent_secs:?}\nconnect_secs = 5.0\n"
    )
}

/// The gateway's resources, from `/proc/PID`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Resident set size, kB (`VmRSS`).
    pub rss_kb: u64,
    /// Its anonymous part (heap, stacks), kB (`RssAnon`): the rest is the mapped binary and
    /// libraries.
    pub anon_kb: u64,
    /// Open file descriptors.
    pub fds: usize,
    pub threads: usize,
}

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RSS {:.1} MB ({:.1} MB anonymous), {} fds, {} threads",
            self.rss_kb as f64 / 1024.0,
            self.anon_kb as f64 / 1024.0,
            self.fds,
            self.threads
        )
    }
}

#[derive(Default)]
struct Output {
    lines: VecDeque<String>,
    /// Lines seen, including those no longer kept.
    count: u64,
    ended: bool,
}

/// A running `wishcast` process; killed when dropped.
pub struct Gateway {
    child: Child,
    pub config_path: PathBuf,
    pub http: SocketAddr,
    output: Arc<(Mutex<Output>, Condvar)>,
}

impl Gateway {
    /// Writes `config` to a fresh file and starts the binary on it, logging at `log` (a
    /// `RUST_LOG` filter). Returns once it printed its WHIP URL.
    pub fn start(config: &str, log: &str) -> Gateway {
        let bin = std::env::var("WISHCAST_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_wishcast").to_string());
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let config_path = dir.join(format!("wishcast-{}.toml", rand::random::<u64>()));
        std::fs::write(&config_path, config).expect("write the configuration");
        let mut child = Command::new(&bin)
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", log)
            .env_remove("WISHCAST_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {bin}: {e}"));
        let output = Arc::new((Mutex::new(Output::default()), Condvar::new()));
        // Both pipes are drained all the time, so the gateway never blocks on a full pipe.
        let stdout = child.stdout.take().expect("stdout piped");
        let stderr = child.stderr.take().expect("stderr piped");
        for (pipe, ends) in [
            (Box::new(stdout) as Box<dyn std::io::Read + Send>, true),
            (Box::new(stderr), false),
        ] {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    let (lock, cv) = &*output;
                    let mut o = lock.lock().expect("output lock");
                    if o.lines.len() >= KEPT_LINES {
                        o.lines.pop_front();
                    }
                    o.lines.push_back(line);
                    o.count += 1;
                    cv.notify_all();
                }
                if ends {
                    let (lock, cv) = &*output;
                    lock.lock().expect("output lock").ended = true;
                    cv.notify_all();
                }
            });
        }
        let mut gw = Gateway {
            child,
            config_path,
            http: "0.0.0.0:0".parse().expect("addr"),
            output,
        };
        let line = gw
            .wait_line(|l| l.starts_with("wishcast: WHIP"), START_TIMEOUT)
            .unwrap_or_else(|| panic!("the gateway did not start:\n{}", gw.output_text()));
        // "wishcast: WHIP  http://127.0.0.1:PORT/whip/{stream}  (OBS: …)"
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        gw.http = addr;
        gw
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// The first output line (of the last ones kept) for which `pred` holds, waiting for it.
    pub fn wait_line(&self, pred: impl FnMut(&str) -> bool, timeout: Duration) -> Option<String> {
        self.wait_line_after(0, pred, timeout)
    }

    /// Output lines seen so far, as a position for [`Gateway::wait_line_after`].
    pub fn output_count(&self) -> u64 {
        self.output.0.lock().expect("output lock").count
    }

    /// The first line from position `from` on for which `pred` holds, waiting for it.
    pub fn wait_line_after(
        &self,
        mut from: u64,
        mut pred: impl FnMut(&str) -> bool,
        timeout: Duration,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.output;
        let mut o = lock.lock().expect("output lock");
        loop {
            let base = o.count - o.lines.len() as u64;
            for (i, l) in o.lines.iter().enumerate() {
                if base + i as u64 >= from && pred(l) {
                    return Some(l.clone());
                }
            }
            from = from.max(o.count);
            let now = Instant::now();
            if o.ended || now >= deadline {
                return None;
            }
            o = cv.wait_timeout(o, deadline - now).expect("output lock").0;
        }
    }

    pub fn output_text(&self) -> String {
        let o = self.output.0.lock().expect("output lock");
        o.lines.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Replaces the configuration file (the gateway reads it again on SIGHUP).
    pub fn rewrite_config(&self, config: &str) {
        let tmp = self.config_path.with_extension("toml.new");
        std::fs::write(&tmp, config).expect("write the configuration");
        std::fs::rename(&tmp, &self.config_path).expect("replace the configuration");
    }

    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.pid()).expect("pid");
        // SAFETY: kill(2) with our own child's pid and a valid signal number.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal})");
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn usage(&self) -> Usage {
        let proc = PathBuf::from(format!("/proc/{}", self.pid()));
        let status = std::fs::read_to_string(proc.join("status")).expect("/proc/PID/status");
        let kb = |field: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("{field} in /proc/PID/status"))
        };
        let count = |dir: &str| {
            std::fs::read_dir(proc.join(dir))
                .map(|d| d.count())
                .unwrap_or_else(|e| panic!("/proc/PID/{dir}: {e}"))
        };
        Usage {
            rss_kb: kb("VmRSS:"),
            anon_kb: kb("RssAnon:"),
            fds: count("fd"),
            threads: count("task"),
        }
    }

    /// `wishcast_sessions{kind=…}` from `/metrics`: (publishers, viewers).
    pub async fn sessions(&self) -> (u64, u64) {
        let r = wishcast::client::http::request("GET", &self.url("/metrics"), &[], Vec::new())
            .await
            .expect("GET /metrics");
        assert_eq!(r.status, 200, "/metrics");
        let text = String::from_utf8_lossy(&r.body).into_owned();
        let gauge = |kind: &str| {
            let name = format!("wishcast_sessions{{kind=\"{kind}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(name.as_str()))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .map_or(0, |v| v as u64)
        };
        (gauge("publish"), gauge("play"))
    }

    /// Waits until `/metrics` shows `want` (publishers, viewers); the last reading otherwise.
    pub async fn wait_sessions(&self, want: (u64, u64), timeout: Duration) -> (u64, u64) {
        let deadline = Instant::now() + timeout;
        loop {
            let now = self.sessions().await;
            if now == want || Instant::now() >= deadline {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if self.running() {
            self.signal(libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config_path);
    }
}
