//! A deterministic in-memory network around the sans-IO shard [`Engine`], for tests and benches.
//!
//! The model is quinn-proto's test `Pair`: every party is a state machine, time is a fake clock
//! moved by hand, and a packet switch moves datagrams between them, with knobs to drop or delay
//! chosen packets. Nothing touches a socket or the real clock, so loss, NACK, keyframe and
//! timeout behaviour replays the same way on every run and thousands of peers fit in one thread.
//!
//! - **Gateway:** one [`Engine`] per shard, each with its own host candidate (`127.0.0.{k+1}:5000`),
//!   sharing one [`Hub`] and one [`Config`]. The engines' [`HubUpdate`](crate::shard::HubUpdate)s
//!   are applied to the hub as the IO layer does, and messages between shards ([`PeerMsg`]) are
//!   handed over at once, in order, unless [`Sim::set_message_rule`] drops or delays them
//!   ([`Fate`]); a delayed media message waits in a queue of [`Sim::message_capacity`] per
//!   shard, and overflows it as the real bounded media channel does; control messages, as on
//!   the real control channel, are never dropped for want of room.
//! - **Peers:** str0m `Rtc`s in frame mode, each on its own address (`127.1.x.y:40000`). A publisher
//!   writes whole frames with `Writer::write` (optionally from a [`Feed`]); a viewer records the
//!   `Event::MediaData` frames it receives ([`Peer::frames`](crate::peer::PeerCore::frames)).
//! - **Sessions** are created by the same steps as the HTTP handlers take
//!   ([`crate::signalling::admit`]: offer checks, hub registration, viewer codec checks), the
//!   [`Command::Create`] goes to the chosen shard, and the answer is applied to the peer.
//! - **Clock:** [`Sim::step`] jumps to the next thing due (a datagram's arrival, an engine or peer
//!   timeout, a feed's next frame) and does everything due at that instant; [`Sim::run_for`] and
//!   [`Sim::run_until`] repeat that. Every datagram takes [`Sim::latency`] plus whatever the delay
//!   rule adds; [`Sim::set_drop`] and [`Sim::set_delay`] see each datagram as a [`Datagram`]
//!   (direction, peer, RTP header, how many came before it) before it is sent.
//! - **Replay:** [`Sim::with_seed`] draws every random choice from one seed, and
//!   [`Sim::record_log`] keeps a log of what crossed the wire and the shard channels, so a run
//!   can be shown to replay.
//! - **Cost:** the real time spent inside `Engine` calls is summed per shard ([`Sim::engine_busy`]),
//!   so a bench can report the gateway's cost without the peers' decryption.
//!
//! Every `Rtc` mutation here is followed by draining `poll_output` until `Output::Timeout`, as
//! str0m requires.
//!
//! ```no_run
//! use std::time::Duration;
//! use wishcast::peer::VideoCodec;
//! use wishcast::sim::{Feed, PeerOptions, Sim};
//!
//! let mut sim = Sim::new(wishcast::Config::default(), 2);
//! let publisher = sim.add_publisher("live", PeerOptions::default()).expect("publisher");
//! let viewer = sim.add_viewer("live", PeerOptions::default()).expect("viewer");
//! assert!(sim.run_until_true(Duration::from_secs(5), |s| s.connected_count() == 2));
//! sim.start_feed(publisher, Feed::new(Some(VideoCodec::H264), true));
//! sim.run_for(Duration::from_secs(1));
//! assert!(sim.peer(viewer).stats().video_frames > 0);
//! ```

mod log;
mod net;
mod peer;
mod shardnet;

pub use crate::peer::media::is_keyframe;
pub use crate::peer::Feed;
pub use net::{Class, Datagram, LinkStats, Node, PeerId, RtpInfo, Way};
pub use peer::{Peer, PeerOptions, ReceivedFrame, RtcpLog, SimError};
pub use shardnet::{Fate, MessageKind, MessageStats, ShardMessage};
use shardnet::{HeldMessage, MessageRule};

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::media::MediaKind;
use str0m::RtcConfig;
use tokio::sync::oneshot;

use crate::config::Config;
use crate::hub::{ClaimError, Hub};
use crate::peer::{PeerCore, PeerError};
use crate::sdp::{Fragment, OfferError};
use crate::session::{Role, SessionId};
use crate::shard::engine::Engine;
use crate::shard::{Command, Patched, PeerMsg, SessionError};
use crate::signalling::{self, AdmitError};

/// Port of every engine's host candidate; engine `k` is on `127.0.0.{k+1}`.
const ENGINE_PORT: u16 = 5000;
/// Port of every peer; peer `i` is on `127.1.{i / 250}.{i % 250 + 1}`.
const PEER_PORT: u16 = 40000;
/// Passes through one instant before the simulation is declared stuck (a timeout that never
/// moves forward).
const SETTLE_LIMIT: u64 = 10_000_000;

/// A datagram leaving a party, before routing.
struct Outgoing {
    source: SocketAddr,
    destination: SocketAddr,
    contents: Vec<u8>,
}

/// Something due at `at` on the simulated clock: a datagram on the wire or a delayed shard
/// message. Ties go in the order they were scheduled, so a seed replays the same run.
pub(super) struct Due<T> {
    pub(super) at: Instant,
    pub(super) order: u64,
    pub(super) item: T,
}

impl<T> PartialEq for Due<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl<T> Eq for Due<T> {}
impl<T> PartialOrd for Due<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Due<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.order).cmp(&(other.at, other.order))
    }
}

/// A datagram on the wire.
struct InFlight {
    to: Node,
    source: SocketAddr,
    destination: SocketAddr,
    contents: Vec<u8>,
}

type DropRule = Box<dyn FnMut(&Datagram<'_>) -> bool>;
type DelayRule = Box<dyn FnMut(&Datagram<'_>) -> Duration>;

/// The simulated gateway (shards), peers, wire and clock.
pub struct Sim {
    now: Instant,
    start: Instant,
    pub config: Arc<Config>,
    pub hub: Arc<Hub>,
    engines: Vec<Engine>,
    engine_busy: Vec<Duration>,
    engine_calls: u64,
    peers: Vec<Peer>,
    /// Peers with a running feed.
    feeds: Vec<usize>,
    addrs: HashMap<SocketAddr, Node>,
    in_flight: BinaryHeap<Reverse<Due<InFlight>>>,
    peer_timers: BinaryHeap<Reverse<(Instant, usize)>>,
    /// Messages between shards not yet handed over: (from, to, message).
    messages: VecDeque<(usize, usize, PeerMsg)>,
    message_rule: Option<MessageRule>,
    /// Messages sent so far per (from, to) pair, for [`ShardMessage::nth`].
    message_counts: Vec<u64>,
    held: BinaryHeap<Reverse<Due<HeldMessage>>>,
    held_per_shard: Vec<usize>,
    message_stats: MessageStats,
    /// `Create` commands held back by [`Sim::add_peer_held`], by peer index.
    held_creates: Vec<(usize, signalling::Admitted)>,
    /// Delayed media messages each shard's queue holds at most (default: the configured
    /// `media.shard_queue_packets`, as the real media channel is bounded).
    pub message_capacity: usize,
    /// Everything that went over the wire and between shards, when [`Sim::record_log`] is on.
    log: Option<Vec<u8>>,
    scratch: Vec<Outgoing>,
    order: u64,
    next_session: u128,
    connected: usize,
    drop_rule: Option<DropRule>,
    delay_rule: Option<DelayRule>,
    dtls_cert: Option<str0m::config::DtlsCert>,
    /// str0m's crypto for new peers and sessions (see [`Sim::set_crypto_provider`]).
    crypto: Arc<str0m::crypto::CryptoProvider>,
    /// One-way delay of every datagram (before the delay rule's extra).
    pub latency: Duration,
    /// Datagrams addressed to nobody on the network.
    pub undeliverable: u64,
}

impl Sim {
    /// A gateway of `shards` engines (at least one) with `config`, and no peers yet, on seed 0.
    pub fn new(config: Config, shards: usize) -> Sim {
        Sim::with_seed(config, shards, 0)
    }

    /// [`Sim::new`] with every random choice drawn from `seed`: the engines' own generators,
    /// and the thread's `fastrand` generator, from which str0m draws its ICE credentials,
    /// transaction ids and SSRCs. The same seed replays the same run; only what the DTLS
    /// handshake's cryptographic randomness decides (keys, and so ciphertext) differs.
    pub fn with_seed(config: Config, shards: usize, seed: u64) -> Sim {
        fastrand::seed(seed);
        let shards = shards.clamp(1, 64);
        let now = Instant::now();
        let capacity = config.media.shard_queue_packets;
        let config = Arc::new(config);
        let hub = Arc::new(Hub::new(shards));
        let mut addrs = HashMap::new();
        let engines = (0..shards)
            .map(|k| {
                let addr = engine_addr(k);
                addrs.insert(addr, Node::Engine(k));
                let mut engine = Engine::new(
                    k,
                    config.clone(),
                    vec![addr],
                    now,
                    seed.wrapping_add(k as u64),
                );
                // OpenSSL's DTLS, the gateway's, times its flights on the system clock.
                engine.set_crypto_provider(crate::dtls::simulation_crypto_provider());
                engine
            })
            .collect();
        let dtls_cert = str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate();
        Sim {
            now,
            start: now,
            config,
            hub,
            engines,
            engine_busy: vec![Duration::ZERO; shards],
            engine_calls: 0,
            peers: Vec::new(),
            feeds: Vec::new(),
            addrs,
            in_flight: BinaryHeap::new(),
            peer_timers: BinaryHeap::new(),
            messages: VecDeque::new(),
            message_rule: None,
            held_creates: Vec::new(),
            message_counts: vec![0; shards * shards],
            held: BinaryHeap::new(),
            held_per_shard: vec![0; shards],
            message_stats: MessageStats::default(),
            message_capacity: capacity,
            log: None,
            scratch: Vec::new(),
            order: 0,
            next_session: 1,
            connected: 0,
            drop_rule: None,
            delay_rule: None,
            dtls_cert,
            crypto: crate::dtls::simulation_crypto_provider(),
            latency: Duration::from_millis(1),
            undeliverable: 0,
        }
    }

    // ---- inspection ---------------------------------------------------------------------------

    /// The simulated time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Simulated time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    pub fn engines(&self) -> &[Engine] {
        &self.engines
    }

    pub fn engine(&self, shard: usize) -> &Engine {
        &self.engines[shard]
    }

    /// The stream directory the engines share.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Reports shard `shard` busy `load` (0 to 1) now, as its IO layer does after each
    /// measurement window: the hub's admission control sees it, and the engine may shed.
    pub fn set_load(&mut self, shard: usize, load: f64) {
        self.hub.set_load(shard, load);
        let now = self.now;
        self.engines[shard].handle_load(now, load);
        self.collect_engine(shard);
        self.pump_messages();
    }

    /// str0m's crypto for the peers and sessions set up from now on; by default dimpl's DTLS
    /// on the simulated clock. The gateway's own, [`crate::dtls::crypto_provider`], times its
    /// flights on the system clock: it suits runs that drop no handshake datagram, where a
    /// flight sent again (if the system clock says so) is only a duplicate.
    pub fn set_crypto_provider(&mut self, crypto: Arc<str0m::crypto::CryptoProvider>) {
        for engine in &mut self.engines {
            engine.set_crypto_provider(crypto.clone());
        }
        self.crypto = crypto;
    }

    /// Engine `shard`, for what a test changes in it (such as [`Engine::faults`]).
    pub fn engine_mut(&mut self, shard: usize) -> &mut Engine {
        &mut self.engines[shard]
    }

    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }

    pub fn peer(&self, id: PeerId) -> &Peer {
        &self.peers[id.0]
    }

    pub fn peer_mut(&mut self, id: PeerId) -> &mut Peer {
        &mut self.peers[id.0]
    }

    /// The publisher's feed, if one was started.
    pub fn feed(&self, id: PeerId) -> Option<&Feed> {
        self.peers[id.0].feed.as_ref()
    }

    /// Peers that have connected (ICE + DTLS) and not failed since.
    pub fn connected_count(&self) -> usize {
        self.connected
    }

    /// Datagrams on the wire.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Real time spent inside shard `shard`'s `Engine` calls (commands, datagrams, messages,
    /// timeouts) since the start or the last [`Sim::reset_engine_busy`].
    pub fn engine_busy(&self, shard: usize) -> Duration {
        self.engine_busy[shard]
    }

    /// [`Sim::engine_busy`] summed over the shards.
    pub fn engine_busy_total(&self) -> Duration {
        self.engine_busy.iter().sum()
    }

    /// `Engine` calls made.
    pub fn engine_calls(&self) -> u64 {
        self.engine_calls
    }

    pub fn reset_engine_busy(&mut self) {
        self.engine_busy
            .iter_mut()
            .for_each(|d| *d = Duration::ZERO);
        self.engine_calls = 0;
    }

    // ---- knobs --------------------------------------------------------------------------------

    /// Drops every datagram for which `rule` returns true (decided when it is sent).
    pub fn set_drop(&mut self, rule: impl FnMut(&Datagram<'_>) -> bool + 'static) {
        self.drop_rule = Some(Box::new(rule));
    }

    /// Delays every datagram by what `rule` returns, on top of [`Sim::latency`]; datagrams may
    /// overtake each other.
    pub fn set_delay(&mut self, rule: impl FnMut(&Datagram<'_>) -> Duration + 'static) {
        self.delay_rule = Some(Box::new(rule));
    }

    /// Removes the drop and delay rules.
    pub fn clear_rules(&mut self) {
        self.drop_rule = None;
        self.delay_rule = None;
    }

    // ---- sessions -----------------------------------------------------------------------------

    /// A WHIP publisher of `stream`, connected over the simulated network.
    pub fn add_publisher(&mut self, stream: &str, opts: PeerOptions) -> Result<PeerId, SimError> {
        self.add_peer(Role::Publish, stream, opts)
    }

    /// A WHEP viewer of `stream` (which needs a publisher, as over HTTP).
    pub fn add_viewer(&mut self, stream: &str, opts: PeerOptions) -> Result<PeerId, SimError> {
        self.add_peer(Role::Play, stream, opts)
    }

    /// Builds a peer's offer, has the gateway answer it as the HTTP layer would (check, hub
    /// registration, `Command::Create` on the chosen shard) and applies the answer. ICE and DTLS
    /// then run as the clock moves. A failed peer stays in [`Sim::peers`] with its error set.
    pub fn add_peer(
        &mut self,
        role: Role,
        stream: &str,
        opts: PeerOptions,
    ) -> Result<PeerId, SimError> {
        self.add_peer_with(role, stream, opts, false)
    }

    /// [`Sim::add_peer`] with the shard's `Create` command held back until [`Sim::release`]:
    /// the session is registered in the hub, as the HTTP handler has it while its command is on
    /// the way to the shard, so a test can put other events in between.
    pub fn add_peer_held(
        &mut self,
        role: Role,
        stream: &str,
        opts: PeerOptions,
    ) -> Result<PeerId, SimError> {
        self.add_peer_with(role, stream, opts, true)
    }

    /// Delivers the held `Create` command of `id` ([`Sim::add_peer_held`]) to its shard.
    pub fn release(&mut self, id: PeerId) -> Result<(), SimError> {
        let at = self
            .held_creates
            .iter()
            .position(|(i, _)| *i == id.0)
            .ok_or(SimError::NoReply)?;
        let (index, admitted) = self.held_creates.swap_remove(at);
        let created = self.create(index, admitted);
        if let Err(e) = &created {
            self.peers[index].core.end(e.to_string());
            let addr = self.peers[index].addr;
            self.addrs.remove(&addr);
        }
        created
    }

    fn add_peer_with(
        &mut self,
        role: Role,
        stream: &str,
        opts: PeerOptions,
        hold: bool,
    ) -> Result<PeerId, SimError> {
        let index = self.peers.len();
        let id = PeerId(index);
        let addr = peer_addr(index);
        let session = SessionId(self.next_session);
        self.next_session += 1;
        let config = self.peer_config(&opts);
        let core = PeerCore::new(role, opts, config, self.now);
        self.peers.push(Peer::new(id, stream, session, addr, core));
        self.addrs.insert(addr, Node::Peer(id));
        match self.set_up(index, role, stream, hold) {
            Ok(()) => {
                self.flush_peer(index);
                Ok(id)
            }
            Err(e) => {
                self.peers[index].core.end(e.to_string());
                self.addrs.remove(&addr);
                Err(e)
            }
        }
    }

    fn peer_config(&self, opts: &PeerOptions) -> RtcConfig {
        let cfg = PeerCore::rtc_config(opts).set_crypto_provider(self.crypto.clone());
        // Every peer shares the simulation's certificate instead of generating its own.
        match &self.dtls_cert {
            Some(cert) => cfg.set_dtls_cert(cert.clone()),
            None => cfg,
        }
    }

    fn set_up(
        &mut self,
        index: usize,
        role: Role,
        stream: &str,
        hold: bool,
    ) -> Result<(), SimError> {
        let offer_sdp = self.make_offer(index)?;
        let id = self.peers[index].session;
        // The same steps as a POST to the endpoint (crate::signalling).
        let admitted = signalling::admit(&self.hub, &self.config, id, role, stream, &offer_sdp)
            .map_err(|e| match e {
                AdmitError::Offer(e) => SimError::Offer(e),
                AdmitError::Claim(e) => SimError::Claim(e),
            })?;
        self.peers[index].shard = admitted.shard;
        self.peers[index].stream = admitted.stream.clone();
        if hold {
            self.held_creates.push((index, admitted));
            return Ok(());
        }
        self.create(index, admitted)
    }

    /// The shard's half of [`Sim::set_up`]: `Create`, its answer applied to the peer.
    fn create(&mut self, index: usize, admitted: signalling::Admitted) -> Result<(), SimError> {
        let (id, shard) = (admitted.id, admitted.shard);
        let role = self.peers[index].core.role();
        let stream = admitted.stream.clone();
        let (cmd, mut rx) = (admitted.command, admitted.reply);
        self.engine_call(shard, |e, now| e.handle_command(now, cmd));
        let created = match rx.try_recv() {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                signalling::abandoned(&self.hub, id);
                return Err(e.into());
            }
            Err(_) => {
                signalling::abandoned(&self.hub, id);
                return Err(SimError::NoReply);
            }
        };
        signalling::created(&self.hub, role, &stream, id, &created);
        let now = self.now;
        let peer = &mut self.peers[index];
        peer.etag = created.etag;
        let accepted = peer.core.accept_answer(now, &created.answer);
        peer.pts = peer.core.payload_types();
        self.flush_peer(index);
        accepted.map_err(|e| SimError::Peer(PeerId(index), e))
    }

    /// The peer's host candidate, tracks and SDP offer.
    fn make_offer(&mut self, index: usize) -> Result<String, SimError> {
        let now = self.now;
        let peer = &mut self.peers[index];
        let offer = peer.core.offer(now, peer.addr);
        // Nothing is sent before the answer; put whatever was produced on the wire anyway.
        self.flush_peer(index);
        offer.map_err(|e| SimError::Peer(PeerId(index), e))
    }

    /// Ends a session the way `DELETE` on its resource does, and takes the peer off the network.
    pub fn delete(&mut self, id: PeerId) -> Result<(), SimError> {
        let (shard, session) = {
            let p = &self.peers[id.0];
            (p.shard, p.session)
        };
        let (reply, mut rx) = oneshot::channel();
        self.engine_call(shard, |e, now| {
            e.handle_command(now, Command::Delete { id: session, reply })
        });
        let r = rx.try_recv().map_err(|_| SimError::NoReply)?;
        self.disconnect_peer(id.0, "deleted");
        r.map_err(SimError::Session)
    }

    /// Picks viewer `id`'s simulcast layer by rid, or hands it back to automatic choice
    /// (`None`), as a POST to its session's layer resource does.
    pub fn select_layer(&mut self, id: PeerId, rid: Option<&str>) -> Result<(), SimError> {
        let (shard, session) = {
            let p = &self.peers[id.0];
            (p.shard, p.session)
        };
        let (reply, mut rx) = oneshot::channel();
        let rid = rid.map(str::to_string);
        self.engine_call(shard, |e, now| {
            e.handle_command(
                now,
                Command::SelectLayer {
                    id: session,
                    media: None,
                    rid,
                    reply,
                },
            )
        });
        rx.try_recv()
            .map_err(|_| SimError::NoReply)?
            .map_err(SimError::Session)
    }

    /// PATCHes a peer's session with the sdpfrag `fragment` and `If-Match` value `if_match`,
    /// as `PATCH` on its resource does.
    pub fn patch(
        &mut self,
        id: PeerId,
        fragment: &str,
        if_match: Option<&str>,
    ) -> Result<Patched, SimError> {
        let (shard, session) = {
            let p = &self.peers[id.0];
            (p.shard, p.session)
        };
        let fragment = Fragment::parse(fragment)?;
        self.send_patch(shard, session, fragment, if_match)
    }

    fn send_patch(
        &mut self,
        shard: usize,
        session: SessionId,
        fragment: Fragment,
        if_match: Option<&str>,
    ) -> Result<Patched, SimError> {
        let (reply, mut rx) = oneshot::channel();
        let cmd = Command::Patch {
            id: session,
            fragment,
            if_match: if_match.map(str::to_string),
            reply,
        };
        self.engine_call(shard, |e, now| e.handle_command(now, cmd));
        let r = rx.try_recv().map_err(|_| SimError::NoReply)?;
        r.map_err(SimError::Session)
    }

    /// An ICE restart as a WHIP/WHEP client does it (RFC 9725 §4.3.3): the peer's new
    /// credentials PATCHed with `If-Match: "*"`, the gateway's fragment applied, the new ETag
    /// kept.
    pub fn restart_ice(&mut self, id: PeerId) -> Result<(), SimError> {
        let now = self.now;
        let (shard, session) = (self.peers[id.0].shard, self.peers[id.0].session);
        let local = self.peers[id.0]
            .core
            .begin_restart(now)
            .map_err(|e| SimError::Peer(id, e))?;
        self.flush_peer(id.0);
        let Patched::Restarted { fragment, etag } =
            self.send_patch(shard, session, local, Some("*"))?
        else {
            return Err(SimError::NotRestarted);
        };
        let remote = Fragment::parse(&fragment)?;
        let peer = &mut self.peers[id.0];
        peer.etag = etag;
        let finished = peer.core.finish_restart(now, &remote);
        self.flush_peer(id.0);
        finished.map_err(|e| SimError::Peer(id, e))
    }

    /// Hands `contents` to shard `shard` now, as if it had arrived from `source` (a peer's own
    /// address, say), and puts what the shard sends in reply on the wire: for crafted datagrams
    /// inside a live session.
    pub fn inject(&mut self, shard: usize, source: SocketAddr, contents: &[u8]) {
        let ip = engine_addr(shard).ip();
        self.engine_call(shard, |e, now| {
            e.handle_datagram(now, source, Some(ip), contents)
        });
    }

    /// A viewer asks for a keyframe with a PLI, as a decoder that lost its picture does.
    pub fn request_keyframe(&mut self, id: PeerId) -> Result<(), SimError> {
        let now = self.now;
        let asked = self.peers[id.0]
            .core
            .request_keyframe(now, str0m::media::KeyframeRequestKind::Pli);
        self.flush_peer(id.0);
        asked.map_err(|e| SimError::Peer(id, e))
    }

    /// A NAT in front of peer `id` maps it to `to` from now on (a new mapping, or a move to
    /// another network): its datagrams come from `to`, and only datagrams to `to` reach it.
    /// The peer itself does not know.
    pub fn rebind(&mut self, id: PeerId, to: SocketAddr) {
        let peer = &mut self.peers[id.0];
        let old = peer.mapped.unwrap_or(peer.addr);
        peer.mapped = Some(to);
        self.addrs.remove(&old);
        self.addrs.insert(to, Node::Peer(id));
    }

    /// Takes a peer off the network without telling the gateway (a vanished client).
    pub fn kill(&mut self, id: PeerId) {
        self.disconnect_peer(id.0, "killed");
    }

    fn disconnect_peer(&mut self, index: usize, why: &str) {
        let peer = &mut self.peers[index];
        peer.core.end(why.to_string());
        peer.next_timeout = None;
        if peer.recount() == Some(false) {
            self.connected -= 1;
        }
        let addr = peer.mapped.unwrap_or(peer.addr);
        self.addrs.remove(&addr);
        self.feeds.retain(|&p| p != index);
    }

    // ---- media --------------------------------------------------------------------------------

    /// Writes one frame from a connected publisher (drained and sent at once).
    pub fn write_frame(
        &mut self,
        id: PeerId,
        kind: MediaKind,
        rtp_time: u64,
        data: impl Into<Arc<[u8]>>,
    ) -> Result<(), SimError> {
        let now = self.now;
        let r = self.peers[id.0].core.write(now, kind, rtp_time, data);
        self.flush_peer(id.0);
        r.map_err(|e| SimError::Peer(id, e))
    }

    /// Starts `feed` on publisher `id` now: its frames are written as the clock reaches them.
    pub fn start_feed(&mut self, id: PeerId, mut feed: Feed) {
        feed.start(self.now);
        self.peers[id.0].feed = Some(feed);
        if !self.feeds.contains(&id.0) {
            self.feeds.push(id.0);
        }
    }

    /// Stops the publisher's feed (it stays readable with [`Sim::feed`]).
    pub fn stop_feed(&mut self, id: PeerId) {
        self.feeds.retain(|&p| p != id.0);
    }

    // ---- the clock ----------------------------------------------------------------------------

    /// Does everything due at the current instant, without moving the clock.
    pub fn drive(&mut self) {
        let mut passes = 0u64;
        loop {
            let mut progressed = self.deliver_held();
            while self
                .in_flight
                .peek()
                .is_some_and(|Reverse(f)| f.at <= self.now)
            {
                if let Some(Reverse(f)) = self.in_flight.pop() {
                    self.deliver(f.item);
                    progressed = true;
                }
            }
            for k in 0..self.engines.len() {
                if self.engines[k].poll_timeout() <= self.now {
                    self.engine_call(k, |e, now| e.handle_timeout(now));
                    progressed = true;
                }
            }
            while let Some(&Reverse((t, i))) = self.peer_timers.peek() {
                if t > self.now {
                    break;
                }
                self.peer_timers.pop();
                if self.peers[i].next_timeout != Some(t) {
                    continue; // superseded
                }
                self.peers[i].next_timeout = None;
                let now = self.now;
                self.peers[i].core.handle_timeout(now);
                self.flush_peer(i);
                progressed = true;
            }
            for n in 0..self.feeds.len() {
                let Some(&i) = self.feeds.get(n) else { break };
                while self.peers[i].write_due(self.now) {
                    self.flush_peer(i);
                    progressed = true;
                }
            }
            if !progressed {
                break;
            }
            passes += 1;
            assert!(
                passes < SETTLE_LIMIT,
                "the simulation does not settle at {:?}",
                self.elapsed()
            );
        }
    }

    /// When something is due next: a datagram, an engine or peer timeout, or a feed's frame.
    pub fn next_event(&mut self) -> Option<Instant> {
        while let Some(&Reverse((t, i))) = self.peer_timers.peek() {
            if self.peers[i].next_timeout == Some(t) {
                break;
            }
            self.peer_timers.pop();
        }
        let wire = self.in_flight.peek().map(|Reverse(f)| f.at);
        let engines = self.engines.iter().map(|e| e.poll_timeout()).min();
        let peers = self.peer_timers.peek().map(|Reverse((t, _))| *t);
        let feeds = self
            .feeds
            .iter()
            .filter_map(|&i| self.peers[i].feed.as_ref()?.next_due())
            .min();
        let held = self.next_held();
        [wire, engines, peers, feeds, held]
            .into_iter()
            .flatten()
            .min()
    }

    /// Moves the clock to the next event (if it is later) and does everything due then.
    pub fn step(&mut self) -> Instant {
        if let Some(t) = self.next_event() {
            if t > self.now {
                self.now = t;
            }
        }
        self.drive();
        self.now
    }

    /// Runs every event up to `deadline`, then leaves the clock at `deadline`.
    pub fn run_until(&mut self, deadline: Instant) {
        self.drive();
        while let Some(t) = self.next_event() {
            if t > deadline {
                break;
            }
            if t > self.now {
                self.now = t;
            }
            self.drive();
        }
        if deadline > self.now {
            self.now = deadline;
            self.drive();
        }
    }

    /// [`Sim::run_until`] `now + d`.
    pub fn run_for(&mut self, d: Duration) {
        let deadline = self.now + d;
        self.run_until(deadline);
    }

    /// Steps until `done` holds (checked after every instant) or `limit` of simulated time
    /// passed; returns whether `done` held.
    pub fn run_until_true(&mut self, limit: Duration, mut done: impl FnMut(&Sim) -> bool) -> bool {
        let deadline = self.now + limit;
        self.drive();
        loop {
            if done(self) {
                return true;
            }
            match self.next_event() {
                Some(t) if t <= deadline => {
                    if t > self.now {
                        self.now = t;
                    }
                    self.drive();
                }
                _ => {
                    self.now = self.now.max(deadline);
                    self.drive();
                    return done(self);
                }
            }
        }
    }

    // ---- plumbing -----------------------------------------------------------------------------

    /// One timed call into engine `k`, then its outbox: transmits to the wire, messages to the
    /// other engines (handed over at once unless the message rule says otherwise, timed as
    /// theirs).
    fn engine_call(&mut self, k: usize, f: impl FnOnce(&mut Engine, Instant)) {
        let now = self.now;
        let t0 = Instant::now();
        f(&mut self.engines[k], now);
        self.engine_busy[k] += t0.elapsed();
        self.engine_calls += 1;
        self.collect_engine(k);
        self.pump_messages();
    }

    fn collect_engine(&mut self, k: usize) {
        let mut transmits = std::mem::take(&mut self.engines[k].outbox.transmits);
        for t in transmits.drain(..) {
            self.send(
                Node::Engine(k),
                Outgoing {
                    source: t.source,
                    destination: t.destination,
                    contents: t.contents,
                },
            );
        }
        // Hand the (empty) buffer back so the engine keeps its capacity, as the IO loop does.
        self.engines[k].outbox.transmits = transmits;
        // The simulated network is UDP only: no session here has an ICE-TCP connection.
        self.engines[k].outbox.tcp.clear();
        let outbox = &mut self.engines[k].outbox;
        for update in outbox.hub.drain(..) {
            outbox.messages.extend(update.apply(&self.hub));
        }
        for reply in outbox.replies.drain(..) {
            reply();
        }
        self.messages
            .extend(outbox.messages.drain(..).map(|(to, m)| (k, to, m)));
    }

    /// Puts peer `index`'s transmits on the wire and its timeout on the timer heap.
    fn flush_peer(&mut self, index: usize) {
        let mut out = std::mem::take(&mut self.scratch);
        let peer = &mut self.peers[index];
        let mapped = peer.mapped;
        out.extend(peer.core.transmits().map(|t| Outgoing {
            source: mapped.unwrap_or(t.source),
            destination: t.destination,
            contents: t.contents.into(),
        }));
        match peer.recount() {
            Some(true) => self.connected += 1,
            Some(false) => self.connected -= 1,
            None => {}
        }
        let timeout = self.peers[index].core.timeout();
        self.set_peer_timeout(index, timeout);
        for o in out.drain(..) {
            self.send(Node::Peer(PeerId(index)), o);
        }
        self.scratch = out;
    }

    fn set_peer_timeout(&mut self, index: usize, t: Option<Instant>) {
        let peer = &mut self.peers[index];
        if peer.next_timeout != t {
            peer.next_timeout = t;
            if let Some(t) = t {
                self.peer_timers.push(Reverse((t, index)));
            }
        }
    }

    /// Puts a datagram on the wire, unless the drop rule takes it.
    fn send(&mut self, from: Node, o: Outgoing) {
        let Some(&to) = self.addrs.get(&o.destination) else {
            self.undeliverable += 1;
            return;
        };
        let (way, peer, shard) = match (from, to) {
            (Node::Engine(k), Node::Peer(p)) => (Way::FromGateway, p, k),
            (Node::Peer(p), Node::Engine(k)) => (Way::ToGateway, p, k),
            _ => {
                self.undeliverable += 1;
                return;
            }
        };
        let now = self.now;
        let p = &mut self.peers[peer.0];
        let class = p.classify(way, &o.contents);
        let link = match way {
            Way::ToGateway => &mut p.up,
            Way::FromGateway => &mut p.down,
        };
        let nth = link.datagrams;
        link.datagrams += 1;
        link.bytes += o.contents.len() as u64;
        match &class {
            Class::Stun => link.stun += 1,
            Class::Dtls => link.dtls += 1,
            Class::Rtp(r) => {
                link.rtp += 1;
                if r.rtx {
                    link.rtx += 1;
                }
            }
            Class::Rtcp => link.rtcp += 1,
            Class::Other => {}
        }
        self.log_datagram(from, to, &class, &o.contents);
        let mut extra = Duration::ZERO;
        if self.drop_rule.is_some() || self.delay_rule.is_some() {
            let d = Datagram {
                at: now,
                way,
                peer,
                shard,
                nth,
                class,
                contents: &o.contents,
            };
            if self.drop_rule.as_mut().is_some_and(|rule| rule(&d)) {
                let link = match way {
                    Way::ToGateway => &mut self.peers[peer.0].up,
                    Way::FromGateway => &mut self.peers[peer.0].down,
                };
                link.dropped += 1;
                return;
            }
            if let Some(rule) = self.delay_rule.as_mut() {
                extra = rule(&d);
            }
        }
        self.order += 1;
        self.in_flight.push(Reverse(Due {
            at: now + self.latency + extra,
            order: self.order,
            item: InFlight {
                to,
                source: o.source,
                destination: o.destination,
                contents: o.contents,
            },
        }));
    }

    fn deliver(&mut self, f: InFlight) {
        // The receiver may have left the network while the datagram was on its way.
        if self.addrs.get(&f.destination) != Some(&f.to) {
            self.undeliverable += 1;
            return;
        }
        match f.to {
            Node::Engine(k) => {
                let (source, ip, contents) = (f.source, f.destination.ip(), f.contents);
                self.engine_call(k, |e, now| {
                    e.handle_datagram(now, source, Some(ip), &contents)
                });
            }
            Node::Peer(p) => {
                let now = self.now;
                let peer = &mut self.peers[p.0];
                // Through the peer's NAT, if it has one: to the address the peer knows.
                let to = if peer.mapped.is_some() {
                    peer.addr
                } else {
                    f.destination
                };
                if !peer.core.handle_datagram(now, f.source, to, &f.contents) {
                    self.undeliverable += 1;
                    return;
                }
                self.flush_peer(p.0);
            }
        }
    }
}

/// Engine `k`'s host candidate.
pub fn engine_addr(k: usize) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, k as u8 + 1)),
        ENGINE_PORT,
    )
}

/// Peer `i`'s address.
pub fn peer_addr(i: usize) -> SocketAddr {
    let hi = (i / 250) as u8;
    let lo = (i % 250) as u8 + 1;
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 1, hi, lo)), PEER_PORT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_addresses_are_distinct() {
        let a: std::collections::HashSet<_> = (0..2000).map(peer_addr).collect();
        assert_eq!(a.len(), 2000);
        assert!(!a.contains(&engine_addr(0)));
    }
}
