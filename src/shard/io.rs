//! The thread that owns one shard's UDP socket and drives its [`Engine`].
//!
//! A current-thread tokio runtime waits on everything at once: the socket, the command, control
//! and media channels, the shard's ICE-TCP connections ([`super::tcp`]) and the engine's next
//! timeout. Each wake-up drains everything ready, then sends all transmits, so a burst of
//! packets costs one pass.

use std::io::IoSliceMut;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quinn_udp::{RecvMeta, UdpSockRef, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, error, warn};

use super::counters::{Counters, COUNT};
use super::engine::Engine;
use super::tcp::{TcpConn, TcpEvent, TcpPeers};
use super::{Command, PeerMsg};
use crate::hub::Hub;

/// Datagrams read per receive call (recvmmsg where available).
const BATCH: usize = 32;
/// Bytes per receive buffer: one datagram, or with UDP GRO (which quinn-udp turns on where the
/// kernel has it) one read of up to 64 KiB of equal-size datagrams from one sender, split by
/// their stride. A smaller buffer truncates that read and loses all but its first datagrams.
fn buffer_size(state: &UdpSocketState) -> usize {
    if state.gro_segments() > 1 {
        u16::MAX as usize
    } else {
        2048
    }
}
/// Receive calls per wake-up at most. The shard then sends what the datagrams caused and
/// looks at its commands before reading again. Reading for as long as the socket had data
/// never ended under overload: the outbox grew without bound (every publisher packet is a
/// transmit per viewer) and commands, DELETE among them, went unanswered. What the shard
/// cannot read waits in the kernel's socket buffer, which drops when full.
const MAX_BATCHES_PER_WAKE: usize = 8;
/// Transmits waiting in the outbox after which reading stops for this wake-up.
const MAX_QUEUED_TRANSMITS: usize = 16_384;
/// Signalling commands waiting for a shard at most; more get 503 (shard unavailable).
const COMMAND_QUEUE: usize = 1024;
/// How often the shard measures its load (busy fraction) for admission control and shedding.
const LOAD_WINDOW: Duration = Duration::from_millis(500);
/// Requested socket buffer sizes, bytes.
const SOCKET_BUFFER: usize = 4 << 20;
/// ICE-TCP connections waiting to be taken over by the shard.
const TCP_HANDOVER_QUEUE: usize = 256;

/// How to reach a shard from outside its thread.
#[derive(Clone)]
pub struct ShardLink {
    /// Requests from signalling; bounded, so a stuck shard makes HTTP answer 503 at once
    /// instead of queueing requests (and their memory) behind it.
    pub commands: mpsc::Sender<Command>,
    /// Shard-to-shard control (subscriptions, GOP hand-over, publisher left, keyframe
    /// requests): never dropped, because a lost one leaves a shard's viewers black with nothing
    /// to repair it. It stays small: one message per subscription change or publisher change,
    /// and keyframe requests coalesced per stream by the sending shard.
    pub control: mpsc::UnboundedSender<PeerMsg>,
    /// Media packets for the shard's viewers; bounded, so a stalled shard drops (and counts)
    /// packets instead of growing without limit. A viewer repairs a gap with a NACK or waits
    /// for a keyframe.
    pub media: mpsc::Sender<PeerMsg>,
    /// ICE-TCP connections for the shard's sessions; bounded, a full queue refuses them.
    pub tcp: mpsc::Sender<TcpConn>,
}

pub struct ShardChannels {
    pub commands: mpsc::Receiver<Command>,
    pub control: mpsc::UnboundedReceiver<PeerMsg>,
    pub media: mpsc::Receiver<PeerMsg>,
    pub tcp: mpsc::Receiver<TcpConn>,
}

pub fn channels(queue: usize) -> (ShardLink, ShardChannels) {
    let (ctx, crx) = mpsc::channel(COMMAND_QUEUE);
    let (ktx, krx) = mpsc::unbounded_channel();
    let (mtx, mrx) = mpsc::channel(queue.max(1));
    let (ttx, trx) = mpsc::channel(TCP_HANDOVER_QUEUE);
    (
        ShardLink {
            commands: ctx,
            control: ktx,
            media: mtx,
            tcp: ttx,
        },
        ShardChannels {
            commands: crx,
            control: krx,
            media: mrx,
            tcp: trx,
        },
    )
}

/// What a shard thread runs on, kept across restarts.
pub struct ShardParts {
    pub socket: std::net::UdpSocket,
    pub chans: ShardChannels,
    pub peers: Vec<ShardLink>,
    pub hub: Arc<Hub>,
    pub counters: Arc<SharedCounters>,
    /// See [`Sender::set_source_ip`].
    pub set_source_ip: bool,
}

/// Runs a shard until it gets [`Command::Shutdown`] or every sender is gone, restarting it
/// with a fresh engine from `new_engine` (given a seed) when it panics. The panicking engine's
/// sessions are lost (their `Rtc` state went with it): the directory forgets them, the other
/// shards are told what that changes (a publisher gone, a shard no longer watching), and
/// their peers time out on consent and reconnect. The socket, the channels and the counters
/// carry on, so commands already queued are served and no other shard notices beyond that.
pub fn supervise(mut new_engine: impl FnMut(u64) -> Engine, mut parts: ShardParts) {
    let mut seed = rand::random::<u64>();
    loop {
        let mut engine = new_engine(seed);
        let index = engine.index();
        // Counting goes on from where the previous engine left it.
        engine.counters = parts.counters.load();
        let ran =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(engine, &mut parts)));
        let Err(panic) = ran else {
            return;
        };
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let lost = parts.hub.sessions_on(index);
        error!(
            shard = index,
            panic = %what,
            sessions_lost = lost.len(),
            "shard panicked; restarting it with no sessions"
        );
        let mut c = parts.counters.load();
        c.shard_restarts += 1;
        parts.counters.publish(&c);
        for (k, msg) in super::forget_shard(&parts.hub, index) {
            if let Some(peer) = parts.peers.get(k) {
                let _ = peer.control.send(msg);
            }
        }
        seed = seed.wrapping_add(1);
    }
}

/// Runs one engine on `parts` until shutdown (or a panic, which unwinds to [`supervise`]).
/// The engine's [`HubUpdate`](super::HubUpdate)s are applied to the hub here, outside it.
fn run(mut engine: Engine, parts: &mut ShardParts) {
    let ShardParts {
        socket,
        chans,
        peers,
        hub,
        counters,
        set_source_ip,
    } = parts;
    let (peers, counters, set_source_ip) = (&peers[..], &**counters, *set_source_ip);
    let socket = match socket.try_clone() {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "shard socket");
            return;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "shard runtime failed to start");
            return;
        }
    };
    rt.block_on(async move {
        if let Err(e) = socket.set_nonblocking(true) {
            error!(error = %e, "shard socket");
            return;
        }
        let socket = match UdpSocket::from_std(socket) {
            Ok(s) => s,
            Err(e) => {
                error!(error = %e, "shard socket");
                return;
            }
        };
        let state = match UdpSocketState::new(UdpSockRef::from(&socket)) {
            Ok(s) => s,
            Err(e) => {
                error!(error = %e, "shard socket state");
                return;
            }
        };
        // Room for a GOP-cache burst to many viewers, and for a burst of arrivals while the
        // shard is busy; the kernel caps these at net.core.{w,r}mem_max.
        for (what, r) in [
            (
                "send",
                state.set_send_buffer_size(UdpSockRef::from(&socket), SOCKET_BUFFER),
            ),
            (
                "receive",
                state.set_recv_buffer_size(UdpSockRef::from(&socket), SOCKET_BUFFER),
            ),
        ] {
            if let Err(e) = r {
                debug!(error = %e, "cannot set the {what} buffer size");
            }
        }
        tracing::info!(
            local = ?socket.local_addr().ok(),
            gso_segments = state.max_gso_segments(),
            gro_segments = state.gro_segments(),
            "shard socket ready"
        );
        let mut bufs = vec![vec![0u8; buffer_size(&state)]; BATCH];
        let mut metas = vec![RecvMeta::default(); BATCH];
        let mut out = Sender {
            hub: hub.clone(),
            set_source_ip,
            v6_socket: socket.local_addr().is_ok_and(|a| a.is_ipv6()),
            gso_buf: Vec::new(),
            tcp: TcpPeers::default(),
        };
        let mut woke = Instant::now();
        let mut window = (woke, 0u64);
        loop {
            out.flush(&mut engine, &socket, &state, peers).await;
            counters.publish(&engine.counters);
            counters.take_first_frames(&mut engine.first_frames);
            let now = Instant::now();
            let worked = now.saturating_duration_since(woke).as_nanos() as u64;
            let busy = counters.busy_ns.fetch_add(worked, Ordering::Relaxed) + worked;
            let span = now.saturating_duration_since(window.0);
            if span >= LOAD_WINDOW {
                let load = (busy - window.1) as f64 / span.as_nanos() as f64;
                let load = load.clamp(0.0, 1.0);
                out.hub.set_load(engine.index(), load);
                window = (now, busy);
                engine.handle_load(now, load);
                if engine.outbox.has_output() {
                    // Sessions were shed: their goodbyes and hub updates leave now.
                    woke = now;
                    continue;
                }
            }
            let deadline = tokio::time::Instant::from_std(engine.poll_timeout());
            tokio::select! {
                biased;
                cmd = chans.commands.recv() => {
                    woke = Instant::now();
                    let Some(cmd) = cmd else { break };
                    let stop = matches!(cmd, Command::Shutdown);
                    engine.handle_command(Instant::now(), cmd);
                    if stop {
                        out.flush(&mut engine, &socket, &state, peers).await;
                        break;
                    }
                }
                msg = chans.control.recv() => {
                    woke = Instant::now();
                    let Some(msg) = msg else { break };
                    let now = Instant::now();
                    engine.handle_message(now, msg);
                    while let Ok(m) = chans.control.try_recv() {
                        engine.handle_message(now, m);
                    }
                }
                ready = socket.readable() => {
                    woke = Instant::now();
                    if ready.is_err() {
                        continue;
                    }
                    receive(&mut engine, &socket, &state, &mut bufs, &mut metas, MAX_BATCHES_PER_WAKE);
                }
                msg = chans.media.recv() => {
                    woke = Instant::now();
                    let Some(msg) = msg else { break };
                    let now = Instant::now();
                    engine.handle_message(now, msg);
                    // Take what else is queued in the same pass, a bounded amount.
                    for _ in 0..256 {
                        match chans.media.try_recv() {
                            Ok(m) => engine.handle_message(now, m),
                            Err(_) => break,
                        }
                    }
                }
                conn = chans.tcp.recv() => {
                    woke = Instant::now();
                    let Some(conn) = conn else { break };
                    if let Some((remote, local, first)) = out.tcp.open(conn) {
                        engine.handle_tcp(Instant::now(), remote, local, &first);
                    }
                }
                event = out.tcp.events.recv() => {
                    woke = Instant::now();
                    let now = Instant::now();
                    let mut next = event;
                    // What else the connections have ready, a bounded amount.
                    for _ in 0..256 {
                        match next {
                            Some(TcpEvent::Frame { remote, local, data }) => {
                                engine.handle_tcp(now, remote, local, &data);
                            }
                            Some(TcpEvent::Closed { remote, conn }) => out.tcp.closed(remote, conn),
                            None => break,
                        }
                        next = out.tcp.events.try_recv().ok();
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    woke = Instant::now();
                    engine.handle_timeout(Instant::now());
                }
            }
        }
        debug!("shard stopped");
    });
}

/// Reads and handles at most `max_batches` batches of datagrams (fewer once the outbox holds
/// [`MAX_QUEUED_TRANSMITS`]), so one wake-up is bounded work and bounded memory.
fn receive(
    engine: &mut Engine,
    socket: &UdpSocket,
    state: &UdpSocketState,
    bufs: &mut [Vec<u8>],
    metas: &mut [RecvMeta],
    max_batches: usize,
) {
    for _ in 0..max_batches {
        if engine.outbox.transmits.len() >= MAX_QUEUED_TRANSMITS {
            return;
        }
        let mut slices: Vec<IoSliceMut<'_>> = bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        let got = socket.try_io(Interest::READABLE, || {
            state.recv(UdpSockRef::from(socket), &mut slices, metas)
        });
        let n = match got {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) => {
                // ICMP errors from gone peers surface here; they concern one peer only.
                debug!(error = %e, "receive error");
                return;
            }
        };
        let now = Instant::now();
        for (meta, buf) in metas.iter().zip(slices.iter()).take(n) {
            let data = &buf[..meta.len];
            let stride = meta.stride.max(1);
            for chunk in data.chunks(stride) {
                engine.handle_datagram(now, meta.addr, meta.dst_ip, chunk);
            }
        }
    }
}

/// Sends what the engine left in its outbox.
struct Sender {
    hub: Arc<Hub>,
    /// Send from the candidate's IP (wildcard bind, several local IPs): ICE only accepts a
    /// reply from the address the request went to. Off behind 1:1 NAT, where that IP is not
    /// local.
    set_source_ip: bool,
    /// The socket is of the IPv6 family: IPv4 destinations go out as IPv4-mapped addresses.
    v6_socket: bool,
    gso_buf: Vec<u8>,
    /// The shard's ICE-TCP connections, where the outbox's `tcp` datagrams go.
    tcp: TcpPeers,
}

impl Sender {
    async fn flush(
        &mut self,
        engine: &mut Engine,
        socket: &UdpSocket,
        state: &UdpSocketState,
        peers: &[ShardLink],
    ) {
        let outbox = &mut engine.outbox;
        for update in outbox.hub.drain(..) {
            outbox.messages.extend(update.apply(&self.hub));
        }
        for reply in outbox.replies.drain(..) {
            reply();
        }
        for (shard, msg) in engine.outbox.messages.drain(..) {
            let Some(peer) = peers.get(shard) else {
                continue;
            };
            if !matches!(msg, PeerMsg::Media { .. }) {
                // Fails only when the receiving shard has stopped.
                let _ = peer.control.send(msg);
            } else if peer.media.try_send(msg).is_err() {
                engine.counters.shard_media_dropped += 1;
                let dropped = engine.counters.shard_media_dropped;
                if dropped.is_power_of_two() {
                    warn!(shard, dropped, "shard queue full: media dropped");
                }
            }
        }
        for t in engine.outbox.tcp.drain(..) {
            if !self.tcp.send(t.destination, t.contents) {
                engine.counters.tcp_send_dropped += 1;
            }
        }
        let mut transmits = std::mem::take(&mut engine.outbox.transmits);
        let max_segments = state.max_gso_segments().min(64);
        if max_segments > 1 && transmits.len() > 1 {
            // Group each viewer's datagrams (stable: their order is kept) so runs of equal size
            // leave in one GSO send.
            transmits.sort_by_key(|t| (t.destination, t.source));
        }
        let mut i = 0;
        while i < transmits.len() {
            let first = &transmits[i];
            let size = first.contents.len();
            let mut j = i + 1;
            // All segments but the last must be exactly `size`; the last may be shorter.
            while j < transmits.len()
                && j - i < max_segments
                && transmits[j].destination == first.destination
                && transmits[j].source == first.source
                && transmits[j - 1].contents.len() == size
                && transmits[j].contents.len() <= size
            {
                j += 1;
            }
            let src_ip = self.set_source_ip.then(|| first.source.ip());
            let destination = on_socket(first.destination, self.v6_socket);
            if j - i == 1 {
                let tx = quinn_udp::Transmit {
                    destination,
                    ecn: None,
                    contents: &first.contents,
                    segment_size: None,
                    src_ip,
                };
                if !send_one(socket, state, &tx).await {
                    engine.counters.udp_send_dropped += 1;
                }
            } else {
                self.gso_buf.clear();
                for t in &transmits[i..j] {
                    self.gso_buf.extend_from_slice(&t.contents);
                }
                let tx = quinn_udp::Transmit {
                    destination,
                    ecn: None,
                    contents: &self.gso_buf,
                    segment_size: Some(size),
                    src_ip,
                };
                if !send_one(socket, state, &tx).await {
                    engine.counters.udp_send_dropped += (j - i) as u64;
                }
            }
            i = j;
        }
        for t in transmits.drain(..) {
            engine.outbox.recycle(t.contents);
        }
        engine.outbox.transmits = transmits;
    }
}

/// Sends one message, waiting for room in a full socket buffer a few times. False if it was
/// dropped: the buffer stayed full, or the kernel refused it (a gone peer's address, say).
async fn send_one(
    socket: &UdpSocket,
    state: &UdpSocketState,
    tx: &quinn_udp::Transmit<'_>,
) -> bool {
    for _ in 0..3 {
        match socket.try_io(Interest::WRITABLE, || {
            state.try_send(UdpSockRef::from(socket), tx)
        }) {
            Ok(()) => return true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if socket.writable().await.is_err() {
                    return false;
                }
            }
            Err(e) => {
                debug!(error = %e, to = %tx.destination, "send failed");
                return false;
            }
        }
    }
    false
}

/// A shard's counters as other threads read them: the shard thread stores its [`Counters`]
/// here after each pass, so the hot path only increments plain integers.
#[derive(Debug, Default)]
pub struct SharedCounters {
    values: [AtomicU64; COUNT],
    /// Nanoseconds the shard thread spent working rather than waiting.
    pub busy_ns: AtomicU64,
    /// Time-to-first-frame samples not yet taken by a scrape (bounded).
    pub first_frames: Mutex<Vec<f64>>,
}

impl SharedCounters {
    pub fn publish(&self, c: &Counters) {
        for (slot, v) in self.values.iter().zip(c.to_array()) {
            slot.store(v, Ordering::Relaxed);
        }
    }

    /// The counters as last published.
    pub fn load(&self) -> Counters {
        Counters::from_array(std::array::from_fn(|i| {
            self.values[i].load(Ordering::Relaxed)
        }))
    }

    /// Moves the engine's time-to-first-frame samples here, keeping at most 4096 unscraped.
    pub fn take_first_frames(&self, samples: &mut Vec<f64>) {
        if samples.is_empty() {
            return;
        }
        let mut v = self.first_frames.lock().unwrap_or_else(|p| p.into_inner());
        if v.len() < 4096 {
            v.append(samples);
        }
        samples.clear();
    }

    /// Takes the samples published since the last call.
    pub fn drain_first_frames(&self) -> Vec<f64> {
        std::mem::take(&mut *self.first_frames.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Binds a shard's socket; on the IPv6 wildcard `::` it takes IPv4 too (dual-stack), whatever
/// the system's default for new sockets says. IPv4 peers then appear as `::ffff:a.b.c.d`.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) {
        socket.set_only_v6(false)?;
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Where to send `to` from a socket of the IPv6 family: an IPv4 peer as its IPv4-mapped
/// address, as a dual-stack socket knows it. The engine speaks plain IPv4 addresses; Linux
/// also takes those on an IPv6 socket, the BSDs and macOS only the mapped form.
fn on_socket(to: SocketAddr, v6_socket: bool) -> SocketAddr {
    match to {
        SocketAddr::V4(v4) if v6_socket => {
            SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
        }
        _ => to,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shard's socket on loopback with its state and an engine announcing it, and a
    /// plain socket to send to it from.
    async fn shard_socket() -> (UdpSocket, UdpSocketState, Engine, std::net::UdpSocket) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let addr = socket.local_addr().expect("addr");
        let state = UdpSocketState::new(UdpSockRef::from(&socket)).expect("state");
        let config = Arc::new(crate::Config::default());
        let engine = Engine::new(0, config, vec![addr], Instant::now(), 1);
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind sender");
        (socket, state, engine, sender)
    }

    /// One wake-up reads a bounded number of batches, however much is waiting: the rest
    /// stays in the socket for the next one.
    #[tokio::test]
    async fn a_wake_up_reads_a_bounded_number_of_batches() {
        let (socket, state, mut engine, sender) = shard_socket().await;
        let addr = socket.local_addr().expect("addr");
        const SENT: u64 = 200;
        for i in 0..SENT {
            // Alternating sizes, so the kernel does not coalesce them (GRO).
            let junk = vec![0x80u8; 20 + (i % 2) as usize];
            sender.send_to(&junk, addr).expect("send");
        }
        socket.readable().await.expect("readable");
        let mut bufs = vec![vec![0u8; buffer_size(&state)]; BATCH];
        let mut metas = vec![RecvMeta::default(); BATCH];
        receive(&mut engine, &socket, &state, &mut bufs, &mut metas, 2);
        let first = engine.counters.datagrams_in;
        assert!(
            first > 0 && first <= 2 * BATCH as u64 && first < SENT,
            "one bounded wake-up read {first} of {SENT}"
        );
        while engine.counters.datagrams_in < SENT {
            socket.readable().await.expect("readable");
            receive(&mut engine, &socket, &state, &mut bufs, &mut metas, 2);
        }
        assert_eq!(
            engine.counters.datagrams_in, SENT,
            "the rest waited in the socket"
        );
    }

    /// A burst of equal-size datagrams that the kernel hands over as one coalesced read (a
    /// GSO send on loopback, GRO on a NIC) arrives whole: every datagram reaches the engine.
    #[tokio::test]
    async fn a_coalesced_read_reaches_the_engine_as_every_datagram() {
        let (socket, state, mut engine, sender) = shard_socket().await;
        let addr = socket.local_addr().expect("addr");
        let sender_state = UdpSocketState::new(UdpSockRef::from(&sender)).expect("state");
        const SEGMENTS: usize = 16;
        const SIZE: usize = 1200;
        let segments = SEGMENTS.min(sender_state.max_gso_segments());
        // RTP-looking junk from an unknown address: counted in, then dropped.
        let contents = vec![0x80u8; segments * SIZE];
        let transmit = quinn_udp::Transmit {
            destination: addr,
            ecn: None,
            contents: &contents,
            segment_size: (segments > 1).then_some(SIZE),
            src_ip: None,
        };
        sender_state
            .send(UdpSockRef::from(&sender), &transmit)
            .expect("send");
        let mut bufs = vec![vec![0u8; buffer_size(&state)]; BATCH];
        let mut metas = vec![RecvMeta::default(); BATCH];
        // Until nothing more comes (a truncated read would never bring the rest).
        let wait = Duration::from_millis(500);
        while let Ok(ready) = tokio::time::timeout(wait, socket.readable()).await {
            ready.expect("readable");
            receive(&mut engine, &socket, &state, &mut bufs, &mut metas, 1);
        }
        assert_eq!(engine.counters.datagrams_in, segments as u64);
        assert_eq!(
            engine.counters.datagrams_unknown_source + engine.counters.datagrams_invalid,
            segments as u64,
            "each a whole datagram"
        );
    }

    fn media(seq: u64) -> PeerMsg {
        let codecs = str0m::format::CodecConfig::new_with_defaults();
        let params = *codecs
            .find(|p| p.spec().codec == str0m::format::Codec::Vp8)
            .expect("VP8 in str0m's defaults");
        PeerMsg::Media {
            stream: Arc::from("s"),
            pkt: crate::fanout::MediaPacket {
                publisher: crate::session::SessionId(1),
                kind: crate::sdp::Kind::Video,
                layer: 0,
                rid: None,
                params,
                seq,
                time: 0,
                marker: false,
                keyframe: false,
                payload: Arc::from(&[0u8; 4][..]),
                received: Instant::now(),
                capture: None,
            },
        }
    }

    /// With the receiving shard's media queue full, further media is dropped and counted, and
    /// control messages behind it still arrive, in order.
    #[tokio::test]
    async fn a_full_media_queue_drops_media_but_never_control() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let state = UdpSocketState::new(UdpSockRef::from(&socket)).expect("state");
        let config = Arc::new(crate::Config::default());
        let addr = socket.local_addr().expect("addr");
        let mut engine = Engine::new(0, config, vec![addr], Instant::now(), 1);
        let (link, mut chans) = channels(2);
        let stream: Arc<str> = Arc::from("s");
        let mut out = test_sender(2);
        for seq in 0..5 {
            engine.outbox.messages.push((1, media(seq)));
        }
        engine.outbox.messages.push((
            1,
            PeerMsg::Subscribe {
                stream: stream.clone(),
                shard: 0,
            },
        ));
        engine.outbox.messages.push((
            1,
            PeerMsg::KeyframeRequest {
                stream,
                layer: None,
            },
        ));
        let peers = vec![link.clone(), link];
        out.flush(&mut engine, &socket, &state, &peers).await;
        assert_eq!(engine.counters.shard_media_dropped, 3, "room for 2 of 5");
        let mut got = Vec::new();
        while let Ok(m) = chans.media.try_recv() {
            got.push(m);
        }
        assert!(
            matches!(got[..], [PeerMsg::Media { .. }, PeerMsg::Media { .. }]),
            "{got:?}"
        );
        assert!(matches!(
            chans.control.try_recv(),
            Ok(PeerMsg::Subscribe { shard: 0, .. })
        ));
        assert!(matches!(
            chans.control.try_recv(),
            Ok(PeerMsg::KeyframeRequest { .. })
        ));
    }

    /// A sender for an IPv4 socket, as the shard makes it, for a gateway of `shards` shards.
    fn test_sender(shards: usize) -> Sender {
        Sender {
            hub: Arc::new(Hub::new(shards)),
            set_source_ip: false,
            v6_socket: false,
            gso_buf: Vec::new(),
            tcp: TcpPeers::default(),
        }
    }

    /// A datagram the kernel refuses (here an IPv6 destination for an IPv4 socket) is counted
    /// as dropped; the one after it still leaves.
    #[tokio::test]
    async fn a_refused_send_is_counted_and_the_next_still_goes() {
        let (socket, state, mut engine, receiver) = shard_socket().await;
        let from = socket.local_addr().expect("addr");
        let to = receiver.local_addr().expect("addr");
        let mut out = test_sender(1);
        for destination in ["[::1]:9".parse().expect("addr"), to] {
            engine.outbox.transmits.push(super::super::Transmit {
                source: from,
                destination,
                contents: vec![0x80; 100],
            });
        }
        out.flush(&mut engine, &socket, &state, &[]).await;
        assert_eq!(engine.counters.udp_send_dropped, 1);
        receiver
            .set_read_timeout(Some(Duration::from_secs(1)))
            .expect("timeout");
        let mut buf = [0u8; 200];
        assert_eq!(receiver.recv(&mut buf).expect("the second datagram"), 100);
    }
}
