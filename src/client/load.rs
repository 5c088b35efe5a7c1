//! Fan-out load over real sockets: one publisher whose video frames carry a counter and whose
//! send times are kept, many WHEP viewers that cost this process almost nothing per packet, and
//! a few that check every frame. The load tool (`examples/load.rs`) and the overload test run
//! on it.
//!
//! - [`Publisher`]: a synthetic [`Feed`] (H264 + Opus by default) on its own thread, so a busy
//!   runtime never delays a frame. [`SentFrames`] keeps when each video frame was written.
//! - [`SampledViewer`]: its own thread too, so arrival times are true. It decrypts every packet
//!   and checks every video frame byte for byte: loss by frame counter, latency by send time,
//!   time to first frame from just before its POST.
//! - [`CheapViewer`]: a task on the caller's runtime. It completes ICE and DTLS and answers
//!   consent checks, so the server holds a real SRTP session and sends it the whole stream,
//!   but the media is dropped before it costs user-space work, as its [`Sink`] says.
//!
//! [`run`] ramps viewers up at a chosen rate, holds a steady phase, and reads the server's CPU
//! time and memory from `/proc` by pid: a [`LoadReport`].

use std::collections::{BTreeMap, HashSet};
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use str0m::media::MediaKind;
use tokio::sync::{oneshot, watch};

use super::{
    bind_socket, h3, negotiate, signal, ClientError, ClientOptions, LinkState, Negotiated,
    PeerOptions, VideoCodec, MAX_WAIT, RECV_BUF,
};
use crate::peer::{media, Feed, PeerCore};
use crate::session::Role;

/// The address cheap viewers bind for an nftables [`MediaDrop`] on a loopback server: the
/// sampled viewers keep 127.0.0.1, whose media must pass.
pub const CHEAP_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// RTP or RTCP by its first byte (RFC 7983: 128 to 191); STUN is 0 to 3, DTLS 20 to 63.
fn is_media(data: &[u8]) -> bool {
    data.first().is_some_and(|b| b & 0xc0 == 0x80)
}

/// RTP rather than RTCP: RTCP packet types take 192 to 223 in the second byte (RFC 5761).
fn is_rtp(data: &[u8]) -> bool {
    is_media(data) && data.get(1).is_some_and(|b| !(192..=223).contains(b))
}

/// How cheap viewers keep the server's media out of user space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sink {
    /// An nftables rule drops RTP and RTCP (first two bits 0b10) to the cheap viewers' address
    /// at the input hook, before any socket lookup ([`MediaDrop`]); needs root and `nft`.
    Nft,
    /// A classic BPF filter on each cheap viewer's socket drops them there: no root needed,
    /// but every datagram first takes the UDP receive path up to the socket.
    Bpf,
    /// No filter: each socket has the smallest receive buffer the kernel allows and, once
    /// connected, is read only this often. The kernel drops what does not fit; the media that
    /// is read is dropped before str0m. STUN that finds the buffer full is lost too.
    Unread(Duration),
}

impl Sink {
    /// `nft`, `bpf`, `unread` (read every 20 ms) or `unread:MS`.
    pub fn parse(s: &str) -> Result<Sink, String> {
        match s.split_once(':') {
            None if s == "nft" => Ok(Sink::Nft),
            None if s == "bpf" => Ok(Sink::Bpf),
            None if s == "unread" => Ok(Sink::Unread(Duration::from_millis(20))),
            Some(("unread", ms)) => ms
                .parse::<u64>()
                .ok()
                .filter(|ms| *ms > 0)
                .map(|ms| Sink::Unread(Duration::from_millis(ms)))
                .ok_or_else(|| format!("bad read interval in {s}: milliseconds, above 0")),
            _ => Err(format!("unknown sink {s}: nft, bpf, unread or unread:MS")),
        }
    }

    /// The name [`Sink::parse`] reads.
    pub fn name(&self) -> String {
        match self {
            Sink::Nft => "nft".into(),
            Sink::Bpf => "bpf".into(),
            Sink::Unread(every) => format!("unread:{}", every.as_millis()),
        }
    }
}

/// An nftables table that drops RTP and RTCP to one address and counts them; removed on drop.
pub struct MediaDrop {
    table: String,
}

impl MediaDrop {
    /// Installs the rule for datagrams to `ip`. Fails without root or `nft`.
    pub fn install(ip: IpAddr) -> Result<MediaDrop, String> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let table = format!(
            "wishcast_media_drop_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let family = if ip.is_ipv4() { "ip" } else { "ip6" };
        let rules = format!(
            "table inet {table} {{\n  chain input {{\n    type filter hook input priority raw; policy accept;\n    \
             {family} daddr {ip} meta l4proto udp @th,64,2 2 counter drop\n  }}\n}}\n"
        );
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("nft: {e}"))?;
        use std::io::Write;
        child
            .stdin
            .take()
            .ok_or("nft stdin")?
            .write_all(rules.as_bytes())
            .map_err(|e| format!("nft: {e}"))?;
        let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "nft refused the rule: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(MediaDrop { table })
    }

    /// Datagrams the rule has dropped, from its counter; `None` if `nft` does not say.
    pub fn dropped(&self) -> Option<u64> {
        let out = Command::new("nft")
            .args(["list", "table", "inet", &self.table])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut words = text.split_whitespace();
        words.find(|w| *w == "packets")?;
        words.next()?.parse().ok()
    }
}

impl Drop for MediaDrop {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &self.table])
            .status();
    }
}

/// Attaches a classic BPF program to `socket` that drops RTP and RTCP and keeps the rest.
#[cfg(target_os = "linux")]
fn drop_media_at_socket(socket: &UdpSocket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    /// `SO_ATTACH_FILTER` in asm-generic/socket.h (x86, Arm, RISC-V).
    const SO_ATTACH_FILTER: libc::c_int = 26;
    fn op(code: u32, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
        libc::sock_filter {
            code: code as u16,
            jt,
            jf,
            k,
        }
    }
    // A UDP socket's filter sees the datagram from its UDP header: the payload starts at 8.
    let mut program = [
        op(libc::BPF_LD | libc::BPF_B | libc::BPF_ABS, 0, 0, 8),
        op(libc::BPF_ALU | libc::BPF_AND | libc::BPF_K, 0, 0, 0xc0),
        op(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, 0, 1, 0x80),
        op(libc::BPF_RET | libc::BPF_K, 0, 0, 0),
        op(libc::BPF_RET | libc::BPF_K, 0, 0, u32::MAX),
    ];
    let prog = libc::sock_fprog {
        len: program.len() as libc::c_ushort,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: `prog` and the program it points to outlive the call, which copies them.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_FILTER,
            (&prog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn drop_media_at_socket(_: &UdpSocket) -> std::io::Result<()> {
    Err(std::io::Error::other("BPF socket filters need Linux"))
}

/// A receive buffer of several seconds of a stream, so a sampled viewer whose thread waits for
/// a CPU loses nothing: beyond `net.core.rmem_max` where the process may (root), else up to it.
#[cfg(unix)]
fn large_receive_buffer(socket: &UdpSocket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 4 << 20;
    let set = |option| {
        // SAFETY: `size` outlives the call, which copies it.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    };
    if set(libc::SO_RCVBUFFORCE) == 0 || set(libc::SO_RCVBUF) == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(unix))]
fn large_receive_buffer(_: &UdpSocket) -> std::io::Result<()> {
    Ok(())
}

/// Asks for a 1-byte receive buffer: the kernel raises it to its minimum, a few datagrams.
#[cfg(unix)]
fn smallest_receive_buffer(socket: &UdpSocket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 1;
    // SAFETY: `size` outlives the call, which copies it.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(unix))]
fn smallest_receive_buffer(_: &UdpSocket) -> std::io::Result<()> {
    Ok(())
}

/// Raises this process's open-file limit to its hard limit: each viewer holds a socket.
#[cfg(unix)]
pub fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a plain struct the calls read and write.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

#[cfg(not(unix))]
pub fn raise_fd_limit() {}

/// CPU time and resident memory of a process, from `/proc/PID/stat` and `/proc/PID/status`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProcUsage {
    /// User plus system time of all its threads.
    pub cpu: Duration,
    /// `VmRSS`, KiB.
    pub rss_kib: u64,
    /// Time its threads were runnable but waiting for a CPU (`/proc/PID/task/*/schedstat`):
    /// on a shared machine, how much other work took its core.
    pub run_delay: Duration,
}

impl ProcUsage {
    pub fn read(pid: u32) -> std::io::Result<ProcUsage> {
        let bad = |what: &str| std::io::Error::new(ErrorKind::InvalidData, what.to_string());
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // The command name is in parentheses and may hold spaces: count fields after it.
        let (_, rest) = stat.rsplit_once(')').ok_or_else(|| bad("stat"))?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
        let tick = |i: usize| -> std::io::Result<u64> {
            fields
                .get(i)
                .and_then(|f| f.parse().ok())
                .ok_or_else(|| bad("stat times"))
        };
        let ticks = tick(11)? + tick(12)?;
        let cpu = Duration::from_secs_f64(ticks as f64 / clock_ticks_per_sec() as f64);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| bad("VmRSS"))?;
        Ok(ProcUsage {
            cpu,
            rss_kib,
            run_delay: run_delay(pid),
        })
    }
}

/// The summed run-queue wait of a process's threads; zero where the kernel keeps none.
fn run_delay(pid: u32) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(ns)
}

/// Datagrams the kernel dropped at the local UDP socket `local` because its buffer was full
/// (the `drops` column of `/proc/net/udp`); `None` if it is not listed.
fn udp_socket_drops(local: SocketAddr) -> Option<u64> {
    let (table, address) = match local.ip() {
        IpAddr::V4(ip) => (
            "/proc/net/udp",
            format!(
                "{:08X}:{:04X}",
                u32::from_ne_bytes(ip.octets()),
                local.port()
            ),
        ),
        IpAddr::V6(ip) => {
            let words: String = ip
                .octets()
                .chunks(4)
                .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
                .collect();
            ("/proc/net/udp6", format!("{words}:{:04X}", local.port()))
        }
    };
    let text = std::fs::read_to_string(table).ok()?;
    text.lines().skip(1).find_map(|l| {
        let fields: Vec<&str> = l.split_whitespace().collect();
        if fields.get(1) != Some(&address.as_str()) {
            return None;
        }
        fields.last()?.parse().ok()
    })
}

/// `USER_HZ`, the unit of the times in `/proc/PID/stat`.
#[cfg(unix)]
fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as u64
    } else {
        100
    }
}

#[cfg(not(unix))]
fn clock_ticks_per_sec() -> u64 {
    100
}

/// UDP datagrams the kernel dropped at a socket in this network namespace (full buffer,
/// socket filter): `InErrors` of `/proc/net/snmp`.
fn udp_in_errors() -> Option<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let names = udp.next()?.split_whitespace();
    let values = udp.next()?.split_whitespace();
    names
        .zip(values)
        .find(|(n, _)| *n == "InErrors")
        .and_then(|(_, v)| v.parse().ok())
}

/// What a load peer's handle sees of it.
#[derive(Clone, Debug)]
struct Status {
    state: LinkState,
    connected_at: Option<Instant>,
}

fn status_channel() -> (watch::Sender<Status>, watch::Receiver<Status>) {
    watch::channel(Status {
        state: LinkState::Connecting,
        connected_at: None,
    })
}

/// Shows the handle a change of the core's state.
fn publish_status(tx: &watch::Sender<Status>, core: &PeerCore) {
    if tx.borrow().state != *core.state() {
        tx.send_replace(Status {
            state: core.state().clone(),
            connected_at: core.connected_at(),
        });
    }
}

/// Waits until ICE and DTLS are up; a close or the timeout is an error.
async fn wait_connected(
    rx: &watch::Receiver<Status>,
    timeout: Duration,
) -> Result<Instant, ClientError> {
    let mut rx = rx.clone();
    let reached = tokio::time::timeout(
        timeout,
        rx.wait_for(|s| matches!(s.state, LinkState::Connected | LinkState::Closed(_))),
    )
    .await
    .map_err(|_| ClientError::Timeout("ICE/DTLS connection"))?
    .map(|s| s.clone())
    .map_err(|_| ClientError::Closed("IO loop gone".into()))?;
    match (reached.state, reached.connected_at) {
        (LinkState::Closed(reason), _) => Err(ClientError::Closed(reason)),
        (_, at) => Ok(at.unwrap_or_else(Instant::now)),
    }
}

/// Where a session lives and how to end it.
#[derive(Clone)]
struct SessionUrl {
    location: String,
    bearer: Option<String>,
    h3: Option<Arc<h3::H3Client>>,
}

impl SessionUrl {
    fn new(location: String, opts: &ClientOptions) -> SessionUrl {
        SessionUrl {
            location,
            bearer: opts.bearer.clone(),
            h3: opts.h3.clone(),
        }
    }

    async fn delete(&self) -> Result<u16, ClientError> {
        let auth = self.bearer.as_ref().map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("authorization", a)])
            .unwrap_or_default();
        let r = signal(
            self.h3.as_deref(),
            "DELETE",
            &self.location,
            &headers,
            Vec::new(),
        )
        .await?;
        Ok(r.status)
    }
}

/// What a blocking peer's handle asks of its thread.
const RUN: u8 = 0;
/// End with RTCP BYE and DTLS close_notify.
const CLOSE: u8 = 1;
/// End without a word.
const KILL: u8 = 2;

/// A core on a blocking socket, on its own thread.
struct Blocking {
    core: PeerCore,
    socket: UdpSocket,
    local: SocketAddr,
    buf: Vec<u8>,
}

impl Blocking {
    fn flush(&mut self) {
        for t in self.core.transmits() {
            let _ = self.socket.send_to(&t.contents, t.destination);
        }
    }

    /// Waits for one datagram until `wake`, the core's timeout or [`MAX_WAIT`], whichever
    /// comes first, and hands it or the timeout to the core. Returns whether it was RTP.
    fn turn(&mut self, wake: Option<Instant>) -> bool {
        let now = Instant::now();
        let mut deadline = self.core.timeout().unwrap_or(now + MAX_WAIT);
        if let Some(w) = wake {
            deadline = deadline.min(w);
        }
        if deadline <= now {
            self.core.handle_timeout(now);
            return false;
        }
        if self
            .socket
            .set_read_timeout(Some((deadline - now).min(MAX_WAIT)))
            .is_err()
        {
            self.core.end("socket read timeout refused".into());
            return false;
        }
        match self.socket.recv_from(&mut self.buf) {
            Ok((n, source)) => {
                let data = &self.buf[..n];
                let rtp = is_rtp(data);
                self.core
                    .handle_datagram(Instant::now(), source, self.local, data);
                rtp
            }
            Err(_) => {
                self.core.handle_timeout(Instant::now());
                false
            }
        }
    }

    /// Ends the core as `control` asks; true if it did.
    fn stop(&mut self, control: &AtomicU8) -> bool {
        match control.load(Ordering::SeqCst) {
            RUN => false,
            CLOSE => {
                self.core.close(Instant::now());
                self.flush();
                true
            }
            _ => {
                self.core.end("stopped".into());
                true
            }
        }
    }
}

/// Starts a blocking peer: POST, then `body` on a thread of its own until it stops.
async fn start_blocking(
    role: Role,
    url: &str,
    opts: &ClientOptions,
    name: &str,
    prepare: impl FnOnce(&UdpSocket) -> std::io::Result<()>,
    body: impl FnOnce(Blocking, Arc<AtomicU8>, watch::Sender<Status>) + Send + 'static,
) -> Result<BlockingHandle, ClientError> {
    let socket = bind_socket(url, opts.bind_ip)?;
    prepare(&socket)?;
    let local = socket.local_addr()?;
    let Negotiated { core, location, .. } = negotiate(role, url, opts, local).await?;
    let (tx, rx) = status_channel();
    let control = Arc::new(AtomicU8::new(RUN));
    let peer = Blocking {
        core,
        socket,
        local,
        buf: vec![0; RECV_BUF],
    };
    let c = control.clone();
    let thread = std::thread::Builder::new()
        .name(format!("{name}-{}", local.port()))
        .spawn(move || body(peer, c, tx))?;
    Ok(BlockingHandle {
        url: SessionUrl::new(location, opts),
        local,
        control,
        status: rx,
        thread,
    })
}

/// What the handle of a blocking peer keeps.
struct BlockingHandle {
    url: SessionUrl,
    local: SocketAddr,
    control: Arc<AtomicU8>,
    status: watch::Receiver<Status>,
    thread: JoinHandle<()>,
}

/// A blocking peer's session and thread: DELETE then close, or killed when dropped.
struct PeerThread {
    url: SessionUrl,
    control: Arc<AtomicU8>,
    thread: Option<JoinHandle<()>>,
}

impl PeerThread {
    fn new(url: SessionUrl, control: Arc<AtomicU8>, thread: JoinHandle<()>) -> PeerThread {
        PeerThread {
            url,
            control,
            thread: Some(thread),
        }
    }

    async fn delete(mut self) -> Result<u16, ClientError> {
        let status = self.url.delete().await;
        self.control.store(CLOSE, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        status
    }
}

impl Drop for PeerThread {
    fn drop(&mut self) {
        let _ = self
            .control
            .compare_exchange(RUN, KILL, Ordering::SeqCst, Ordering::SeqCst);
    }
}

/// When the publisher wrote each video frame, by frame index.
#[derive(Debug, Default)]
pub struct SentFrames {
    /// Index of the first frame.
    first: AtomicU64,
    times: Mutex<Vec<Instant>>,
}

impl SentFrames {
    fn times(&self) -> MutexGuard<'_, Vec<Instant>> {
        // Plain pushes: a panic elsewhere cannot leave the list half-written.
        self.times.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, index: u64, at: Instant) {
        let mut t = self.times();
        if t.is_empty() {
            self.first.store(index, Ordering::SeqCst);
        }
        t.push(at);
    }

    /// When frame `index` was written, if it was.
    pub fn at(&self, index: u64) -> Option<Instant> {
        let first = self.first.load(Ordering::SeqCst);
        let i = usize::try_from(index.checked_sub(first)?).ok()?;
        self.times().get(i).copied()
    }

    /// Indices of the frames written at or after `from` and before `to`.
    pub fn between(&self, from: Instant, to: Instant) -> std::ops::Range<u64> {
        let t = self.times();
        let first = self.first.load(Ordering::SeqCst);
        let a = t.partition_point(|x| *x < from) as u64;
        let b = t.partition_point(|x| *x < to) as u64;
        first + a..first + b.max(a)
    }

    /// Video frames written so far.
    pub fn count(&self) -> u64 {
        self.times().len() as u64
    }
}

/// A WHIP publisher sending a [`Feed`] on its own thread from the moment it connects, and
/// keeping when it wrote each video frame.
pub struct Publisher {
    peer: PeerThread,
    sent: Arc<SentFrames>,
    status: watch::Receiver<Status>,
}

impl Publisher {
    /// POSTs the offer; the feed starts once ICE and DTLS are up.
    pub async fn start(
        url: &str,
        opts: ClientOptions,
        feed: Feed,
    ) -> Result<Publisher, ClientError> {
        let sent = Arc::new(SentFrames::default());
        let s = sent.clone();
        let h = start_blocking(
            Role::Publish,
            url,
            &opts,
            "publisher",
            |_| Ok(()),
            move |p, c, tx| publish(p, feed, &s, &c, &tx),
        )
        .await?;
        Ok(Publisher {
            peer: PeerThread::new(h.url, h.control, h.thread),
            sent,
            status: h.status,
        })
    }

    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), ClientError> {
        wait_connected(&self.status, timeout).await.map(|_| ())
    }

    /// The send times of its video frames.
    pub fn sent(&self) -> Arc<SentFrames> {
        self.sent.clone()
    }

    pub fn location(&self) -> &str {
        &self.peer.url.location
    }

    /// DELETEs the session, then closes it; returns the DELETE's status.
    pub async fn delete(self) -> Result<u16, ClientError> {
        self.peer.delete().await
    }
}

fn publish(
    mut p: Blocking,
    mut feed: Feed,
    sent: &SentFrames,
    control: &AtomicU8,
    status: &watch::Sender<Status>,
) {
    let mut started = false;
    loop {
        if p.stop(control) {
            break;
        }
        if !started && p.core.is_connected() {
            feed.start(Instant::now());
            started = true;
        }
        let now = Instant::now();
        while let Some(f) = feed.take_due(now, p.core.stats().keyframe_requests) {
            let at = Instant::now();
            // A frame's simulcast copies share its index: its first layer's write counts.
            let first_copy = f.rid.as_deref().is_none_or(|r| r == SIMULCAST[0].0);
            if f.kind == MediaKind::Video && first_copy {
                sent.push(f.index, at);
            }
            // Refused writes are counted in the core's statistics.
            let _ = p
                .core
                .write_layer(at, f.kind, f.rid.as_deref(), f.rtp_time, f.data);
        }
        p.flush();
        publish_status(status, &p.core);
        if p.core.is_closed() {
            break;
        }
        p.turn(feed.next_due());
    }
    publish_status(status, &p.core);
}

/// What a sampled viewer received.
#[derive(Clone, Debug, Default)]
pub struct SampledLog {
    /// Intact video frames as they completed: index and arrival.
    pub frames: Vec<(u64, Instant)>,
    /// Video frames whose bytes differ from what the publisher generated.
    pub corrupt: u64,
    pub audio_frames: u64,
    /// RTP datagrams received, retransmissions included.
    pub rtp_packets: u64,
}

/// A WHEP viewer on its own thread that decrypts everything and checks every video frame
/// against what the load publisher (a [`Feed`] of `frame_bytes` frames) generated.
pub struct SampledViewer {
    peer: PeerThread,
    local: SocketAddr,
    /// Just before the POST.
    started: Instant,
    log: Arc<Mutex<SampledLog>>,
    status: watch::Receiver<Status>,
}

impl SampledViewer {
    /// POSTs the offer; ICE and DTLS follow on the viewer's thread.
    pub async fn start(
        url: &str,
        mut opts: ClientOptions,
        frame_bytes: usize,
    ) -> Result<SampledViewer, ClientError> {
        let started = Instant::now();
        let codec = opts
            .peer
            .video
            .ok_or_else(|| ClientError::Rtc("a sampled viewer checks video".into()))?;
        opts.peer.record_frames = true;
        opts.peer.raw_packets = false;
        let log = Arc::new(Mutex::new(SampledLog::default()));
        let l = log.clone();
        let h = start_blocking(
            Role::Play,
            url,
            &opts,
            "sampled",
            large_receive_buffer,
            move |p, c, tx| sample(p, codec, frame_bytes, &l, &c, &tx),
        )
        .await?;
        Ok(SampledViewer {
            peer: PeerThread::new(h.url, h.control, h.thread),
            local: h.local,
            started,
            log,
            status: h.status,
        })
    }

    /// Waits for ICE and DTLS; returns when they were up.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<Instant, ClientError> {
        wait_connected(&self.status, timeout).await
    }

    /// What it received so far.
    pub fn log(&self) -> SampledLog {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Intact video frames that arrived at or after `t`.
    pub fn frames_since(&self, t: Instant) -> Vec<(u64, Instant)> {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.frames
            .iter()
            .filter(|(_, at)| *at >= t)
            .copied()
            .collect()
    }

    /// From just before the POST to the first intact video frame.
    pub fn time_to_first_frame(&self) -> Option<Duration> {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.frames.first().map(|(_, at)| *at - self.started)
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn connected_at(&self) -> Option<Instant> {
        self.status.borrow().connected_at
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.status.borrow().state, LinkState::Closed(_))
    }

    /// Datagrams its socket dropped because this process did not read them in time: loss on
    /// the load side, not the server's.
    pub fn socket_drops(&self) -> Option<u64> {
        udp_socket_drops(self.local)
    }

    /// DELETEs the session, then closes it; returns the DELETE's status.
    pub async fn delete(self) -> Result<u16, ClientError> {
        self.peer.delete().await
    }
}

fn sample(
    mut p: Blocking,
    codec: VideoCodec,
    frame_bytes: usize,
    log: &Mutex<SampledLog>,
    control: &AtomicU8,
    status: &watch::Sender<Status>,
) {
    loop {
        if p.stop(control) {
            break;
        }
        let rtp = p.turn(None);
        let frames: Vec<_> = p.core.take_frames().collect();
        if rtp || !frames.is_empty() {
            let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
            log.rtp_packets += u64::from(rtp);
            for f in frames {
                if f.kind != MediaKind::Video {
                    log.audio_frames += 1;
                    continue;
                }
                let intact = media::frame_index(f.codec, &f.data).filter(|i| {
                    let key = media::is_keyframe(f.codec, &f.data);
                    f.data[..] == media::video_frame(codec, *i, key, frame_bytes)[..]
                });
                match intact {
                    Some(i) => log.frames.push((i, f.at)),
                    None => log.corrupt += 1,
                }
            }
        }
        p.flush();
        publish_status(status, &p.core);
        if p.core.is_closed() {
            break;
        }
    }
    publish_status(status, &p.core);
}

/// A WHEP viewer whose media never costs this process user-space work ([`Sink`]): a task
/// on the caller's tokio runtime, so thousands share a core.
pub struct CheapViewer {
    url: SessionUrl,
    started: Instant,
    status: watch::Receiver<Status>,
    /// Send true to close gracefully; dropped, the task ends without a word.
    stop: Option<oneshot::Sender<bool>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl CheapViewer {
    /// POSTs the offer from a socket prepared for `sink`; ICE and DTLS follow on the task.
    /// `media_read` counts the RTP and RTCP datagrams that still reached this process.
    pub async fn start(
        url: &str,
        opts: ClientOptions,
        sink: Sink,
        media_read: Arc<AtomicU64>,
    ) -> Result<CheapViewer, ClientError> {
        let started = Instant::now();
        let socket = bind_socket(url, opts.bind_ip)?;
        match sink {
            Sink::Nft => {}
            Sink::Bpf => drop_media_at_socket(&socket)?,
            Sink::Unread(_) => smallest_receive_buffer(&socket)?,
        }
        socket.set_nonblocking(true)?;
        let local = socket.local_addr()?;
        // For reads the runtime does not wait for (unread sockets).
        let raw = socket.try_clone()?;
        let socket = tokio::net::UdpSocket::from_std(socket)?;
        let Negotiated { core, location, .. } = negotiate(Role::Play, url, &opts, local).await?;
        let (tx, status) = status_channel();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(cheap(
            CheapIo {
                core,
                socket,
                raw,
                local,
                sink,
                status: tx,
                media_read,
            },
            stopped,
        ));
        Ok(CheapViewer {
            url: SessionUrl::new(location, &opts),
            started,
            status,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Waits for ICE and DTLS; returns when they were up.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<Instant, ClientError> {
        wait_connected(&self.status, timeout).await
    }

    /// Just before the POST.
    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn connected_at(&self) -> Option<Instant> {
        self.status.borrow().connected_at
    }

    pub fn state(&self) -> LinkState {
        self.status.borrow().state.clone()
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.status.borrow().state, LinkState::Closed(_))
    }

    /// DELETEs the session, then closes it; returns the DELETE's status.
    pub async fn delete(mut self) -> Result<u16, ClientError> {
        let status = self.url.delete().await;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
        }
        status
    }
}

struct CheapIo {
    core: PeerCore,
    socket: tokio::net::UdpSocket,
    raw: UdpSocket,
    local: SocketAddr,
    sink: Sink,
    status: watch::Sender<Status>,
    media_read: Arc<AtomicU64>,
}

impl CheapIo {
    fn take(&mut self, n: usize, source: SocketAddr, buf: &[u8]) {
        let data = &buf[..n];
        if is_media(data) {
            self.media_read.fetch_add(1, Ordering::Relaxed);
        } else {
            self.core
                .handle_datagram(Instant::now(), source, self.local, data);
        }
    }

    fn flush(&mut self) {
        for t in self.core.transmits() {
            // A full send buffer loses the datagram, as on a real network.
            let _ = self.socket.try_send_to(&t.contents, t.destination);
        }
    }
}

async fn cheap(mut io: CheapIo, mut stop: oneshot::Receiver<bool>) {
    let mut buf = vec![0u8; RECV_BUF];
    let mut next_read = Instant::now();
    loop {
        io.flush();
        publish_status(&io.status, &io.core);
        if io.core.is_closed() {
            return;
        }
        let now = Instant::now();
        let deadline = io.core.timeout().unwrap_or(now + MAX_WAIT);
        // Unread sockets are read on a slow timer once the handshakes are done.
        let slow = match io.sink {
            Sink::Unread(every) if io.core.is_connected() => Some(every),
            _ => None,
        };
        tokio::select! {
            graceful = &mut stop => {
                if graceful == Ok(true) {
                    io.core.close(Instant::now());
                    io.flush();
                } else {
                    io.core.end("stopped".into());
                }
            }
            r = io.socket.recv_from(&mut buf), if slow.is_none() => {
                if let Ok((n, source)) = r {
                    io.take(n, source, &buf);
                }
            }
            _ = tokio::time::sleep_until(next_read.into()), if slow.is_some() => {
                while let Ok((n, source)) = io.raw.recv_from(&mut buf) {
                    io.take(n, source, &buf);
                }
                next_read = Instant::now() + slow.unwrap_or(MAX_WAIT);
            }
            _ = tokio::time::sleep_until(deadline.into()) => io.core.handle_timeout(Instant::now()),
        }
    }
}

/// One viewer of a load run.
enum Viewer {
    Sampled(SampledViewer),
    Cheap(CheapViewer),
}

impl Viewer {
    fn is_closed(&self) -> bool {
        match self {
            Viewer::Sampled(v) => v.is_closed(),
            Viewer::Cheap(v) => v.is_closed(),
        }
    }

    fn started(&self) -> Instant {
        match self {
            Viewer::Sampled(v) => v.started(),
            Viewer::Cheap(v) => v.started(),
        }
    }

    fn connected_at(&self) -> Option<Instant> {
        match self {
            Viewer::Sampled(v) => v.connected_at(),
            Viewer::Cheap(v) => v.connected_at(),
        }
    }

    async fn wait_connected(&self, timeout: Duration) -> Result<Instant, ClientError> {
        match self {
            Viewer::Sampled(v) => v.wait_connected(timeout).await,
            Viewer::Cheap(v) => v.wait_connected(timeout).await,
        }
    }

    async fn delete(self) -> Result<u16, ClientError> {
        match self {
            Viewer::Sampled(v) => v.delete().await,
            Viewer::Cheap(v) => v.delete().await,
        }
    }
}

/// A load run: the endpoints, the stream and the viewers.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    pub whip: String,
    pub whep: String,
    pub viewers: usize,
    /// Joins started per second.
    pub rate: f64,
    /// Length of the steady phase, in which loss, latency and CPU are measured.
    pub steady: Duration,
    /// Viewers that check every frame, spread over the ramp; the rest are cheap.
    pub samples: usize,
    /// The server's process, for CPU and memory from `/proc`.
    pub pid: Option<u32>,
    pub codec: VideoCodec,
    /// Video bits per second (Opus comes on top).
    pub bitrate: u64,
    pub fps: u32,
    pub sink: Sink,
    /// Address the cheap viewers bind; the address routing to the server if `None`.
    pub cheap_ip: Option<IpAddr>,
    pub bearer: Option<String>,
    /// Wait after the last join before the steady phase: GOP replays and handshakes end.
    pub settle: Duration,
    /// Wait after every viewer left before the last memory reading.
    pub after: Duration,
    /// Longest a viewer may take from its POST to ICE and DTLS up.
    pub connect_timeout: Duration,
    /// Publish the video as [`SIMULCAST`] layers; viewers get the largest unless their path
    /// says otherwise, so the sampled checks stay those of one stream.
    pub simulcast: bool,
}

/// The load tool's simulcast layers: rid and how many times smaller than the set bitrate.
pub const SIMULCAST: [(&str, usize); 3] = [("h", 1), ("m", 4), ("l", 16)];

pub const USAGE: &str = "usage: load BASE_URL [--stream NAME] [--viewers N] [--rate PER_SEC] \
[--seconds STEADY] [--samples N] [--pid PID] [--bitrate BPS] [--fps N] \
[--codec h264|vp8|vp9|av1] [--sink nft|bpf|unread[:MS]] [--cheap-ip IP] [--token TOKEN] \
[--whip URL] [--whep URL] [--settle SECS] [--after SECS] [--simulcast]

BASE_URL/whip/NAME and BASE_URL/whep/NAME unless --whip/--whep are given. Defaults: stream
load, 100 viewers at 50/s, 20 s steady, 8 sampled viewers, 2500000 bit/s H264 at 30 fps plus
Opus, sink bpf, settle 3 s, after 6 s (the gateway trims its heap every 5 s). --simulcast
adds layers of a quarter and a sixteenth of the bitrate. --sink nft needs root; its cheap viewers bind 127.0.0.2
when the server is on loopback.";

impl LoadConfig {
    /// Reads the command line of the load tool (without the program name).
    pub fn from_args(args: impl IntoIterator<Item = String>) -> Result<LoadConfig, String> {
        let mut base = None;
        let (mut whip, mut whep) = (None, None);
        let mut stream = "load".to_string();
        let mut c = LoadConfig {
            whip: String::new(),
            whep: String::new(),
            viewers: 100,
            rate: 50.0,
            steady: Duration::from_secs(20),
            samples: 8,
            pid: None,
            codec: VideoCodec::H264,
            bitrate: 2_500_000,
            fps: 30,
            sink: Sink::Bpf,
            cheap_ip: None,
            bearer: None,
            settle: Duration::from_secs(3),
            after: Duration::from_secs(6),
            connect_timeout: Duration::from_secs(20),
            simulcast: false,
        };
        let mut it = args.into_iter();
        while let Some(arg) = it.next() {
            let mut value = || it.next().ok_or(format!("{arg} needs a value"));
            match arg.as_str() {
                "--stream" => stream = value()?,
                "--viewers" => c.viewers = number(&value()?)?,
                "--rate" => c.rate = number(&value()?)?,
                "--seconds" => c.steady = seconds(&value()?)?,
                "--samples" => c.samples = number(&value()?)?,
                "--pid" => c.pid = Some(number(&value()?)?),
                "--bitrate" => c.bitrate = number(&value()?)?,
                "--fps" => c.fps = number(&value()?)?,
                "--codec" => {
                    let v = value()?;
                    c.codec = VideoCodec::from_name(&v).ok_or(format!("unknown codec {v}"))?;
                }
                "--sink" => c.sink = Sink::parse(&value()?)?,
                "--cheap-ip" => c.cheap_ip = Some(number(&value()?)?),
                "--token" => c.bearer = Some(value()?),
                "--whip" => whip = Some(value()?),
                "--whep" => whep = Some(value()?),
                "--settle" => c.settle = seconds(&value()?)?,
                "--after" => c.after = seconds(&value()?)?,
                "--simulcast" => c.simulcast = true,
                s if s.starts_with("--") => return Err(format!("unknown option {s}")),
                s if base.is_none() => base = Some(s.trim_end_matches('/').to_string()),
                s => return Err(format!("unexpected argument {s}")),
            }
        }
        let endpoint = |kind: &str| base.as_ref().map(|b| format!("{b}/{kind}/{stream}"));
        c.whip = whip
            .or_else(|| endpoint("whip"))
            .ok_or("missing BASE_URL")?;
        c.whep = whep
            .or_else(|| endpoint("whep"))
            .ok_or("missing BASE_URL")?;
        if !c.rate.is_finite() || c.rate <= 0.0 || c.fps == 0 || c.bitrate < 8 * u64::from(c.fps) {
            return Err("--rate, --fps and --bitrate must be positive".into());
        }
        if c.sink == Sink::Nft && c.cheap_ip.is_none() {
            c.cheap_ip = loopback_server(&c.whep).then_some(IpAddr::V4(CHEAP_IP));
            if c.cheap_ip.is_none() {
                return Err(
                    "--sink nft needs --cheap-ip: a local address only the cheap \
                            viewers use"
                        .into(),
                );
            }
        }
        Ok(c)
    }

    /// Bytes of each video frame at the configured bit rate.
    pub fn frame_bytes(&self) -> usize {
        (self.bitrate / 8 / u64::from(self.fps.max(1))) as usize
    }

    fn feed(&self) -> Feed {
        let mut feed = Feed::at_bitrate(self.codec, self.bitrate, self.fps);
        // An encoder with a fixed keyframe interval, as OBS and x264 run: joins do not change
        // the stream.
        feed.honor_keyframe_requests = false;
        if self.simulcast {
            feed = feed.with_layers(&SIMULCAST);
        }
        feed
    }
}

fn number<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("bad value {s}"))
}

fn seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = number(s)?;
    Duration::try_from_secs_f64(v).map_err(|_| format!("bad number of seconds {s}"))
}

/// Whether the URL's host is on loopback.
fn loopback_server(url: &str) -> bool {
    match super::http::host_port(url) {
        Ok((host, _)) => {
            host == "localhost"
                || host
                    .trim_matches(['[', ']'])
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        Err(_) => false,
    }
}

/// What a load run measured. Figures that need the server's pid or sampled viewers are
/// `None` without them.
#[derive(Clone, Debug, Serialize)]
pub struct LoadReport {
    /// Viewers asked for.
    pub viewers: usize,
    /// Viewers connected (ICE and DTLS up) and not closed at the end of the steady phase.
    pub connected: usize,
    /// Joins refused, by HTTP status.
    pub refused: BTreeMap<u16, usize>,
    /// Joins that failed otherwise (no connection in time, transport errors).
    pub failed: usize,
    /// Viewers that connected and were closed before the end of the steady phase.
    pub closed: usize,
    pub sink: String,
    pub steady_secs: f64,
    /// Viewers connected per second, from the first POST to the last connection.
    pub joins_per_s: f64,
    /// Sampled viewers measured.
    pub sampled: usize,
    /// RTP packets per second at a sampled viewer.
    pub packets_per_viewer_s: Option<f64>,
    /// Video frames the publisher sent in the steady phase, times the sampled viewers.
    pub frames_expected: u64,
    /// Of those, frames a sampled viewer never got intact.
    pub frames_lost: u64,
    pub lost_pct: Option<f64>,
    /// Video frames whose bytes were wrong.
    pub frames_corrupt: u64,
    /// Publisher write to sampled viewer's complete frame, in the steady phase.
    pub latency_ms_p50: Option<f64>,
    pub latency_ms_p99: Option<f64>,
    /// Sampled viewers: POST to the first intact video frame.
    pub ttff_ms_p50: Option<f64>,
    pub ttff_ms_p99: Option<f64>,
    /// Every viewer: POST to ICE and DTLS up.
    pub connect_ms_p50: Option<f64>,
    pub connect_ms_p99: Option<f64>,
    /// The server's CPU time over the steady phase, per second.
    pub cpu_cores: Option<f64>,
    /// Time the server's threads waited for a CPU in the steady phase, per second: above a
    /// few hundredths, other work on its core skews the run.
    pub cpu_wait_cores: Option<f64>,
    /// Server CPU time per packet per viewer: CPU / (packets per viewer per s × viewers × s).
    pub us_per_packet_viewer: Option<f64>,
    /// Server memory with the publisher and no viewer, at the end of the steady phase, at
    /// its peak, and after every viewer left.
    pub rss_base_mib: Option<f64>,
    pub rss_mib: Option<f64>,
    pub rss_peak_mib: Option<f64>,
    pub rss_after_mib: Option<f64>,
    /// (RSS at the end of the steady phase - RSS with no viewer) / connected viewers.
    pub kib_per_viewer: Option<f64>,
    /// This process's CPU over the steady phase, per second.
    pub load_cpu_cores: Option<f64>,
    /// Datagrams the sampled viewers' sockets dropped unread (the load side fell behind).
    pub sampled_socket_drops: Option<u64>,
    /// RTP and RTCP datagrams that reached a cheap viewer's user space, per viewer per second.
    pub media_read_per_viewer_s: f64,
    /// Datagrams the kernel dropped at sockets (filters, full buffers) in this network
    /// namespace, per cheap viewer per second; GSO sends are split into packets before that.
    pub socket_drops_per_viewer_s: Option<f64>,
    /// Datagrams the nftables rule dropped, per cheap viewer per second. On loopback the rule
    /// sees a GSO send (several packets to one viewer) as one datagram, unsegmented.
    pub nft_drops_per_viewer_s: Option<f64>,
}

/// Nearest-rank percentile `p` (0 to 100) of `v`, sorted here.
pub fn percentile(v: &mut [f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

impl LoadReport {
    /// A table for people: one header, one row, then a line of details. `wait` is the
    /// server's wait for a CPU ([`LoadReport::cpu_wait_cores`]).
    pub fn table(&self) -> String {
        fn f(v: Option<f64>, digits: usize) -> String {
            v.map_or("-".into(), |v| format!("{v:.digits$}"))
        }
        fn pair(a: Option<f64>, b: Option<f64>) -> String {
            format!("{} / {}", f(a, 0), f(b, 0))
        }
        let header = format!(
            "{:>7} {:>9} {:>7} {:>9} {:>5} {:>8} {:>8} {:>10} {:>11} {:>11} {:>8}",
            "viewers",
            "connected",
            "lost %",
            "CPU cores",
            "wait",
            "µs/pkt/v",
            "RSS MiB",
            "KiB/viewer",
            "TTFF ms",
            "latency ms",
            "joins/s"
        );
        let row = format!(
            "{:>7} {:>9} {:>7} {:>9} {:>5} {:>8} {:>8} {:>10} {:>11} {:>11} {:>8}",
            self.viewers,
            self.connected,
            f(self.lost_pct, 2),
            f(self.cpu_cores, 2),
            f(self.cpu_wait_cores, 2),
            f(self.us_per_packet_viewer, 2),
            f(self.rss_mib, 1),
            f(self.kib_per_viewer, 0),
            pair(self.ttff_ms_p50, self.ttff_ms_p99),
            pair(self.latency_ms_p50, self.latency_ms_p99),
            format!("{:.0}", self.joins_per_s),
        );
        let refused: Vec<String> = self
            .refused
            .iter()
            .map(|(s, n)| format!("{n}×{s}"))
            .collect();
        let details = format!(
            "sink {}; sampled {} ({} of {} frames lost, {} corrupt, {} packets/s each); \
             refused [{}], failed {}, closed {}; connect p50/p99 {} ms; RSS base {} MiB, peak \
             {} MiB, after {} MiB; load tool {} cores, its \
             sampled sockets dropped {}",
            self.sink,
            self.sampled,
            self.frames_lost,
            self.frames_expected,
            self.frames_corrupt,
            f(self.packets_per_viewer_s, 0),
            refused.join(", "),
            self.failed,
            self.closed,
            pair(self.connect_ms_p50, self.connect_ms_p99),
            f(self.rss_base_mib, 1),
            f(self.rss_peak_mib, 1),
            f(self.rss_after_mib, 1),
            f(self.load_cpu_cores, 2),
            self.sampled_socket_drops
                .map_or("-".to_string(), |d| d.to_string()),
        );
        format!("{header}\n{row}\n{details}")
    }

    /// The report as one line of JSON.
    pub fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// Frames a sampled viewer got of `expected`, and their latencies.
fn judge(log: &SampledLog, expected: &std::ops::Range<u64>, sent: &SentFrames) -> (u64, Vec<f64>) {
    let mut got = HashSet::new();
    let mut latencies = Vec::new();
    for (i, at) in &log.frames {
        if expected.contains(i) && got.insert(*i) {
            if let Some(t) = sent.at(*i) {
                latencies.push(ms(at.saturating_duration_since(t)));
            }
        }
    }
    (got.len() as u64, latencies)
}

/// Joins one viewer and waits for it to connect; one that does not is deleted again.
async fn join(
    url: String,
    opts: ClientOptions,
    kind: Option<usize>,
    sink: Sink,
    media_read: Arc<AtomicU64>,
    timeout: Duration,
) -> Result<Viewer, ClientError> {
    let viewer = match kind {
        Some(frame_bytes) => Viewer::Sampled(SampledViewer::start(&url, opts, frame_bytes).await?),
        None => Viewer::Cheap(CheapViewer::start(&url, opts, sink, media_read).await?),
    };
    match viewer.wait_connected(timeout).await {
        Ok(_) => Ok(viewer),
        Err(e) => {
            let _ = viewer.delete().await;
            Err(e)
        }
    }
}

/// Runs the load: publisher, ramp, steady phase, teardown. Errors end the run only when the
/// publisher cannot start or the sink cannot be set up; refused viewers are counted.
pub async fn run(c: &LoadConfig) -> Result<LoadReport, String> {
    raise_fd_limit();
    let rule = match c.sink {
        Sink::Nft => {
            let ip = c.cheap_ip.ok_or("--sink nft needs --cheap-ip")?;
            Some(MediaDrop::install(ip).map_err(|e| format!("{e} (--sink nft needs root)"))?)
        }
        _ => None,
    };
    let usage = |pid: Option<u32>| pid.and_then(|p| ProcUsage::read(p).ok());
    let me = Some(std::process::id());
    let client = |cheap: bool| {
        let mut o = ClientOptions::from(PeerOptions::sink(c.codec));
        o.bearer = c.bearer.clone();
        if cheap {
            if let Some(ip) = c.cheap_ip {
                o.bind_ip = ip;
            }
        }
        o
    };

    let mut publishing = client(false);
    if c.simulcast {
        publishing.peer.simulcast = SIMULCAST.iter().map(|(r, _)| r.to_string()).collect();
    }
    let publisher = Publisher::start(&c.whip, publishing, c.feed())
        .await
        .map_err(|e| format!("publisher: {e}"))?;
    publisher
        .wait_connected(Duration::from_secs(10))
        .await
        .map_err(|e| format!("publisher: {e}"))?;
    let sent = publisher.sent();
    // The stream is live and the server's first allocations are behind it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let base = usage(c.pid);

    // ---- ramp ---------------------------------------------------------------------------------
    let samples = c.samples.min(c.viewers);
    let sampled_at: HashSet<usize> = (0..samples).map(|k| k * c.viewers / samples).collect();
    let media_read = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut joins = tokio::task::JoinSet::new();
    for i in 0..c.viewers {
        tokio::time::sleep_until((start + Duration::from_secs_f64(i as f64 / c.rate)).into()).await;
        let kind = sampled_at.contains(&i).then_some(c.frame_bytes());
        let opts = client(kind.is_none());
        joins.spawn(join(
            c.whep.clone(),
            opts,
            kind,
            c.sink,
            media_read.clone(),
            c.connect_timeout,
        ));
    }
    let (mut viewers, mut refused, mut failed) = (Vec::new(), BTreeMap::new(), 0);
    while let Some(j) = joins.join_next().await {
        match j {
            Ok(Ok(v)) => viewers.push(v),
            Ok(Err(ClientError::Http { status, .. })) => *refused.entry(status).or_insert(0) += 1,
            _ => failed += 1,
        }
    }
    let mut connect: Vec<f64> = viewers
        .iter()
        .filter_map(|v| Some(ms(v.connected_at()? - v.started())))
        .collect();
    let last = viewers.iter().filter_map(Viewer::connected_at).max();
    let joins_per_s = match last {
        Some(l) if l > start => viewers.len() as f64 / (l - start).as_secs_f64(),
        _ => 0.0,
    };
    tokio::time::sleep(c.settle).await;

    // ---- steady phase -------------------------------------------------------------------------
    let sampled = || {
        viewers.iter().filter_map(|v| match v {
            Viewer::Sampled(s) => Some(s),
            Viewer::Cheap(_) => None,
        })
    };
    let rtp = |s: &SampledViewer| s.log().rtp_packets;
    let cheap_count = viewers.len() - sampled().count();
    let t0 = Instant::now();
    let (gw0, me0) = (usage(c.pid), usage(me));
    let rtp0: Vec<u64> = sampled().map(rtp).collect();
    let (read0, drops0, nft0) = (
        media_read.load(Ordering::Relaxed),
        udp_in_errors(),
        rule.as_ref().and_then(MediaDrop::dropped),
    );
    let end = t0 + c.steady;
    let mut peak = base.map(|b| b.rss_kib);
    while Instant::now() < end {
        let next = (Instant::now() + Duration::from_secs(1)).min(end);
        tokio::time::sleep_until(next.into()).await;
        if let Some(u) = usage(c.pid) {
            peak = peak.max(Some(u.rss_kib));
        }
    }
    let t1 = Instant::now();
    let (gw1, me1) = (usage(c.pid), usage(me));
    let rtp1: Vec<u64> = sampled().map(rtp).collect();
    let (read1, drops1, nft1) = (
        media_read.load(Ordering::Relaxed),
        udp_in_errors(),
        rule.as_ref().and_then(MediaDrop::dropped),
    );
    let secs = (t1 - t0).as_secs_f64();
    let alive = viewers.iter().filter(|v| !v.is_closed()).count();
    // Frames sent at the end are still on their way.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let expected = sent.between(t0, t1);
    let (mut frames_expected, mut frames_lost, mut corrupt) = (0, 0, 0);
    let (mut latency, mut ttff, mut pps) = (Vec::new(), Vec::new(), Vec::new());
    for (k, s) in sampled().enumerate() {
        let log = s.log();
        let (got, lat) = judge(&log, &expected, &sent);
        frames_expected += expected.end - expected.start;
        frames_lost += (expected.end - expected.start) - got;
        corrupt += log.corrupt;
        latency.extend(lat);
        ttff.extend(s.time_to_first_frame().map(ms));
        if !s.is_closed() {
            pps.push(rtp1[k].saturating_sub(rtp0[k]) as f64 / secs);
        }
    }
    let packets_per_viewer_s =
        (!pps.is_empty()).then(|| pps.iter().sum::<f64>() / pps.len() as f64);
    let cpu = match (gw0, gw1) {
        (Some(a), Some(b)) => Some((b.cpu.saturating_sub(a.cpu)).as_secs_f64()),
        _ => None,
    };
    let us_per_packet_viewer = match (cpu, packets_per_viewer_s) {
        (Some(cpu), Some(pps)) if pps > 0.0 && alive > 0 => {
            Some(cpu * 1e6 / (pps * alive as f64 * secs))
        }
        _ => None,
    };
    let per_cheap = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) if cheap_count > 0 => {
            Some(b.saturating_sub(a) as f64 / cheap_count as f64 / secs)
        }
        _ => None,
    };
    let closed = viewers.len() - alive;
    let mut report = LoadReport {
        viewers: c.viewers,
        connected: alive,
        refused,
        failed,
        closed,
        sink: c.sink.name(),
        steady_secs: secs,
        joins_per_s,
        sampled: sampled().count(),
        packets_per_viewer_s,
        frames_expected,
        frames_lost,
        lost_pct: (frames_expected > 0)
            .then(|| frames_lost as f64 * 100.0 / frames_expected as f64),
        frames_corrupt: corrupt,
        latency_ms_p50: percentile(&mut latency, 50.0),
        latency_ms_p99: percentile(&mut latency, 99.0),
        ttff_ms_p50: percentile(&mut ttff, 50.0),
        ttff_ms_p99: percentile(&mut ttff, 99.0),
        connect_ms_p50: percentile(&mut connect, 50.0),
        connect_ms_p99: percentile(&mut connect, 99.0),
        cpu_cores: cpu.map(|c| c / secs),
        us_per_packet_viewer,
        rss_base_mib: base.map(|b| mib(b.rss_kib)),
        rss_mib: gw1.map(|u| mib(u.rss_kib)),
        rss_peak_mib: peak.map(mib),
        rss_after_mib: None,
        kib_per_viewer: match (base, gw1) {
            (Some(b), Some(u)) if alive > 0 => {
                Some((u.rss_kib as f64 - b.rss_kib as f64) / alive as f64)
            }
            _ => None,
        },
        load_cpu_cores: match (me0, me1) {
            (Some(a), Some(b)) => Some(b.cpu.saturating_sub(a.cpu).as_secs_f64() / secs),
            _ => None,
        },
        cpu_wait_cores: match (gw0, gw1) {
            (Some(a), Some(b)) => {
                Some(b.run_delay.saturating_sub(a.run_delay).as_secs_f64() / secs)
            }
            _ => None,
        },
        sampled_socket_drops: sampled().map(SampledViewer::socket_drops).sum(),
        media_read_per_viewer_s: per_cheap(Some(read0), Some(read1)).unwrap_or(0.0),
        socket_drops_per_viewer_s: per_cheap(drops0, drops1),
        nft_drops_per_viewer_s: per_cheap(nft0, nft1),
    };

    // ---- teardown -----------------------------------------------------------------------------
    let gate = Arc::new(tokio::sync::Semaphore::new(16));
    let mut leaving = tokio::task::JoinSet::new();
    for v in viewers {
        let gate = gate.clone();
        leaving.spawn(async move {
            let _permit = gate.acquire_owned().await;
            let _ = v.delete().await;
        });
    }
    while leaving.join_next().await.is_some() {}
    let _ = publisher.delete().await;
    drop(rule);
    if let Some(pid) = c.pid.filter(|_| !c.after.is_zero()) {
        tokio::time::sleep(c.after).await;
        report.rss_after_mib = ProcUsage::read(pid).ok().map(|u| mib(u.rss_kib));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinks_parse_and_name_themselves() {
        for s in ["nft", "bpf", "unread:20", "unread:100"] {
            assert_eq!(Sink::parse(s).map(|k| k.name()), Ok(s.to_string()));
        }
        assert_eq!(
            Sink::parse("unread"),
            Ok(Sink::Unread(Duration::from_millis(20)))
        );
        assert!(Sink::parse("unread:0").is_err());
        assert!(Sink::parse("iptables").is_err());
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(percentile(&mut v, 50.0), Some(50.0));
        assert_eq!(percentile(&mut v, 99.0), Some(99.0));
        assert_eq!(percentile(&mut v, 100.0), Some(100.0));
        assert_eq!(percentile(&mut [7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&mut [], 50.0), None);
    }

    #[test]
    fn command_line() {
        let args = |s: &str| LoadConfig::from_args(s.split_whitespace().map(String::from));
        let c = args("http://127.0.0.1:8080/ --stream s --viewers 500 --sink nft --pid 7")
            .expect("valid");
        assert_eq!(c.whip, "http://127.0.0.1:8080/whip/s");
        assert_eq!(c.whep, "http://127.0.0.1:8080/whep/s");
        assert_eq!((c.viewers, c.samples, c.pid), (500, 8, Some(7)));
        assert_eq!(c.cheap_ip, Some(IpAddr::V4(CHEAP_IP)));
        assert_eq!(c.frame_bytes(), 10_416);
        assert!(args("http://203.0.113.7:8080 --sink nft").is_err());
        assert!(args("--viewers 5").is_err());
        assert!(args("http://x --rate 0").is_err());
        assert!(args("http://x --bogus 1").is_err());
    }

    #[test]
    fn sent_frames_by_time() {
        let s = SentFrames::default();
        let t = Instant::now();
        for i in 0..10u64 {
            s.push(5 + i, t + Duration::from_millis(10 * i));
        }
        assert_eq!(s.at(5), Some(t));
        assert_eq!(s.at(4), None);
        assert_eq!(s.at(15), None);
        let r = s.between(t + Duration::from_millis(15), t + Duration::from_millis(40));
        assert_eq!(r, 7..9);
        assert_eq!(s.count(), 10);
    }

    #[test]
    fn socket_drops_and_usage_are_read_from_proc() {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
        assert_eq!(udp_socket_drops(s.local_addr().expect("addr")), Some(0));
        let me = ProcUsage::read(std::process::id()).expect("own usage");
        assert!(me.rss_kib > 0);
    }

    /// The socket filter drops what looks like RTP or RTCP and keeps STUN and DTLS.
    #[cfg(target_os = "linux")]
    #[test]
    fn bpf_filter_drops_media_only() {
        let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        drop_media_at_socket(&rx).expect("filter attached");
        rx.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let to = rx.local_addr().expect("addr");
        let rtp = [0x80, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        let rtcp = [0x81, 200, 0, 6];
        let stun = [0x00, 0x01, 0, 0, 0x21, 0x12, 0xa4, 0x42];
        let dtls = [22, 0xfe, 0xfd, 0];
        for d in [&rtp[..], &stun, &rtcp, &dtls] {
            tx.send_to(d, to).expect("send");
        }
        let mut buf = [0u8; 64];
        let (n, _) = rx.recv_from(&mut buf).expect("STUN passes");
        assert_eq!(&buf[..n], &stun);
        let (n, _) = rx.recv_from(&mut buf).expect("DTLS passes");
        assert_eq!(&buf[..n], &dtls);
        rx.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        assert!(rx.recv_from(&mut buf).is_err(), "nothing else arrives");
    }
}
