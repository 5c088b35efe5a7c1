//! The sans-IO shard: every session of one shard, driven by datagrams, commands, messages from
//! other shards and time. No sockets, no threads, no clock: callers pass `now` and collect
//! [`Transmit`]s and [`PeerMsg`]s from [`Engine::outbox`].
//!
//! A publisher's packet goes: datagram → its `Rtc` → `Event::RtpPacket` → [`MediaPacket`] → the
//! shard's [`StreamCache`] and local viewers, and one copy per other shard with viewers.

mod deliver;
mod demux;
mod egress;
mod isolate;
mod keyframe;
mod layers;
mod negotiate;
mod replay;
mod session;
mod stats;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rustc_hash::FxHashMap;

use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{KeyframeRequestKind, Mid};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::rtp::{RtpWrite, Ssrc};
use str0m::{Candidate, CandidateKind, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};
use tracing::{debug, info, warn, Span};

use super::counters::Counters;
use super::{
    Command, CounterOfferSession, Countered, Created, HubUpdate, Patched, PeerMsg, SessionError,
    SessionStats, StreamTotals, Transmit,
};
use crate::config::Config;
use crate::fanout::{is_keyframe, History, MediaPacket, Pushed, StreamCache, TrackRewriter};
use crate::sdp::{restart_offer, strip_bundle_group, Fragment, Kind, Offer, OfferError};
use crate::session::{Role, SessionId};
use crate::simulcast::Layers;
use crate::stun::{self, CheckCopies};
use demux::Demux;
pub use isolate::{Faults, Site};
use negotiate::OfferedCodecs;
use session::{
    session_span, AwaitingAnswer, Incoming, NewRtcSession, NewSession, Session, TrackReport,
};

/// How often sessions are checked for connect and consent timeouts and held keyframe requests.
const HOUSEKEEPING: Duration = Duration::from_millis(100);
/// Sent datagrams' buffers kept for reuse per shard at most (about 5 MiB).
const SPARE_BUFFERS: usize = 4096;
/// Largest buffer kept for reuse: a datagram's.
const SPARE_CAPACITY: usize = 2048;
/// Each overloaded window sheds one in this many of the shard's viewers (at least one).
const SHED_PER_WINDOW_DIVISOR: usize = 32;
/// Removal reason for a session whose str0m call panicked: its Rtc is not touched again.
const PANIC: &str = "panic in WebRTC stack";
/// Removal reason for a session whose peer closed it (DTLS close_notify).
const CLOSED_BY_PEER: &str = "closed";
/// Removal reason for a viewer that did not answer the gateway's counter-offer in time.
const COUNTER_OFFER_EXPIRED: &str = "counter-offer not answered in time";
/// Removal reason for a viewer whose publisher did not come back within the grace period.
const STREAM_ENDED: &str = "stream ended: no publisher";

/// A command's answer, sent by the IO layer once the pass's [`HubUpdate`]s are applied: a
/// client that got its DELETE answered finds the directory without the session.
pub type Reply = Box<dyn FnOnce() + Send>;

/// What the IO layer takes out after each call, in this order: hub updates (apply them, and
/// deliver the messages they cause), messages to other shards, replies, transmits.
#[derive(Default)]
pub struct Outbox {
    pub transmits: Vec<Transmit>,
    /// Datagrams for ICE-TCP peers, each one RFC 4571 frame on the connection from its
    /// `destination`.
    pub tcp: Vec<Transmit>,
    pub messages: Vec<(usize, PeerMsg)>,
    pub hub: Vec<HubUpdate>,
    pub replies: Vec<Reply>,
    /// Sent datagrams' buffers, given back by the IO layer ([`Outbox::recycle`]) for the next
    /// ones: a buffer per packet per viewer from the allocator showed in the fan-out's cost.
    spare: Vec<Vec<u8>>,
    /// Whether anything takes spare buffers (the gateway's own egress is on): if not, keeping
    /// them would only hold memory.
    keep_spare: bool,
}

impl Outbox {
    /// Something is waiting to be taken out.
    pub fn has_output(&self) -> bool {
        !(self.transmits.is_empty()
            && self.tcp.is_empty()
            && self.messages.is_empty()
            && self.hub.is_empty()
            && self.replies.is_empty())
    }

    /// Queues `t` for UDP, or for its ICE-TCP connection when `tcp`.
    fn push(&mut self, tcp: bool, t: Transmit) {
        if tcp {
            self.tcp.push(t);
        } else {
            self.transmits.push(t);
        }
    }

    /// Queues `contents` on a session's media path: over TCP or not, from, to.
    fn send_on(&mut self, path: (bool, SocketAddr, SocketAddr), contents: Vec<u8>) {
        let (tcp, source, destination) = path;
        self.push(
            tcp,
            Transmit {
                source,
                destination,
                contents,
            },
        );
    }

    /// An empty buffer for a datagram: a sent one's, or a new one.
    fn buffer(&mut self) -> Vec<u8> {
        self.spare.pop().unwrap_or_default()
    }

    /// Takes back a sent datagram's buffer for reuse, up to [`SPARE_BUFFERS`] of ordinary
    /// size (a GSO-sized one would hold its memory for a small datagram).
    pub fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.keep_spare && self.spare.len() < SPARE_BUFFERS && buf.capacity() <= SPARE_CAPACITY {
            buf.clear();
            self.spare.push(buf);
        }
    }

    fn reply<T: Send + 'static>(&mut self, to: tokio::sync::oneshot::Sender<T>, value: T) {
        self.replies.push(Box::new(move || {
            let _ = to.send(value);
        }));
    }
}

/// Audio packets kept per stream for NACKs (Opus is rarely NACKed; a few for those who do).
const AUDIO_KEPT: usize = 64;

/// A stream as one shard sees it.
struct LocalStream {
    /// The video layers' GOP caches and bitrates (one layer without simulcast).
    layers: Layers,
    /// The layers as last reported to the hub (publisher's shard only).
    reported: Vec<crate::hub::LayerInfo>,
    /// The newest packets, for the NACKs of viewers on the own egress.
    history: History,
    viewers: Vec<SessionId>,
    /// On the publisher's shard: other shards that want the packets (bit per shard).
    subscribers: u64,
    /// This shard told the hub it wants the packets.
    subscribed: bool,
    /// The stream's publisher, when it is on this shard.
    publisher: Option<SessionId>,
    /// This shard's keyframe requests to another shard's publisher.
    remote_keyframe: keyframe::Limiter,
    /// The same for requests of one layer's keyframe, per layer number.
    remote_layer_keyframe: Vec<keyframe::Limiter>,
    /// The publisher that left and when: the viewers get the stream's end
    /// `timeouts.publisher_grace_secs` after, unless another publisher comes first.
    left: Option<(Instant, SessionId)>,
}

impl LocalStream {
    /// Media from `publisher` reached this shard, or it started on another: a publisher other
    /// than the one that left means the stream is back.
    fn publisher_sends(&mut self, publisher: SessionId) {
        if self.left.is_some_and(|(_, gone)| gone != publisher) {
            self.left = None;
        }
    }
}

pub struct Engine {
    index: usize,
    config: Arc<Config>,
    /// Every random choice the engine makes (ETags, the viewers' first sequence numbers and
    /// timestamps) comes from here, so a seed replays a run.
    rng: StdRng,
    /// Announced host candidates (what clients send to), all on this shard's port.
    candidates: Vec<SocketAddr>,
    /// Announced passive ICE-TCP candidates, on the node's one TCP port.
    tcp_candidates: Vec<SocketAddr>,
    dtls_cert: Option<str0m::config::DtlsCert>,
    /// str0m's crypto for new sessions: DTLS on OpenSSL (see `crate::dtls`).
    crypto: Arc<str0m::crypto::CryptoProvider>,
    /// Boxed: a `Session` (with its `Rtc`) is about 11 KiB, and a map of them inline kept that
    /// much per empty slot of its table and moved it all on every growth. Fx-hashed: ids are
    /// random (see `rustc-hash` in Cargo.toml).
    sessions: FxHashMap<SessionId, Box<Session>>,
    demux: Demux,
    timers: BinaryHeap<Reverse<(Instant, SessionId)>>,
    /// Copies of connecting sessions' ICE checks (see [`CheckCopies`]).
    check_copies: CheckCopies<SessionId>,
    streams: HashMap<Arc<str>, LocalStream>,
    next_housekeeping: Instant,
    /// Viewers with a backlog, and when to send their next share.
    replaying: Vec<SessionId>,
    next_replay: Option<Instant>,
    /// Reused by `deliver` for its copy of a stream's viewers.
    viewer_scratch: Vec<SessionId>,
    pub counters: Counters,
    /// Seconds from each viewer's 201 to its first video packet, until the IO layer takes them.
    pub first_frames: Vec<f64>,
    /// Panics to inject into str0m calls, for tests of their containment.
    pub faults: Faults,
    /// Since when the measured load has been at or above `limits.shed_shard_load`.
    overloaded_since: Option<Instant>,
    /// Shedding viewers until the load is below the admission threshold.
    shedding: bool,
    pub outbox: Outbox,
    events: Vec<Event>,
    /// An instant and the wallclock time then: sender reports give wallclock times, and the
    /// engine only gets instants.
    wallclock: (Instant, std::time::SystemTime),
}

impl Engine {
    /// Shard `index`, announcing `candidates` (all on its socket's port), with its random
    /// choices drawn from `seed`.
    pub fn new(
        index: usize,
        config: Arc<Config>,
        candidates: Vec<SocketAddr>,
        now: Instant,
        seed: u64,
    ) -> Engine {
        let dtls_cert = str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate();
        let keep_spare = config.media.direct_egress;
        Engine {
            index,
            config,
            rng: StdRng::seed_from_u64(seed),
            candidates,
            tcp_candidates: Vec::new(),
            dtls_cert,
            crypto: crate::dtls::crypto_provider(),
            sessions: FxHashMap::default(),
            demux: Demux::default(),
            faults: Faults::default(),
            overloaded_since: None,
            shedding: false,
            viewer_scratch: Vec::new(),
            first_frames: Vec::new(),
            timers: BinaryHeap::new(),
            check_copies: CheckCopies::default(),
            streams: HashMap::new(),
            next_housekeeping: now + HOUSEKEEPING,
            replaying: Vec::new(),
            next_replay: None,
            counters: Counters::default(),
            outbox: Outbox {
                keep_spare,
                ..Outbox::default()
            },
            events: Vec::new(),
            wallclock: (now, std::time::SystemTime::now()),
        }
    }

    /// str0m's crypto for the sessions created from now on. The simulation gives its own,
    /// whose DTLS runs on the simulated clock (`crate::dtls::simulation_crypto_provider`).
    pub fn set_crypto_provider(&mut self, crypto: Arc<str0m::crypto::CryptoProvider>) {
        self.crypto = crypto;
    }

    /// Announces passive ICE-TCP candidates at `addrs` (the node's TCP port) in the answers
    /// of sessions created from now on.
    pub fn set_tcp_candidates(&mut self, addrs: Vec<SocketAddr>) {
        self.tcp_candidates = addrs;
    }

    /// This shard's number.
    pub fn index(&self) -> usize {
        self.index
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The earliest time [`Engine::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Instant {
        let mut next = self.next_housekeeping;
        if let Some(Reverse((t, _))) = self.timers.peek() {
            next = next.min(*t);
        }
        if let Some(t) = self.next_replay {
            next = next.min(t);
        }
        if let Some(t) = self.check_copies.next() {
            next = next.min(t);
        }
        next
    }

    // ---- commands from the control plane ----------------------------------------------------

    pub fn handle_command(&mut self, now: Instant, cmd: Command) {
        match cmd {
            Command::Create(c) => {
                let reply = c.reply;
                let c = NewSession {
                    id: c.id,
                    stream: c.stream,
                    role: c.role,
                    offer_sdp: c.offer_sdp,
                };
                // On failure the control plane releases the hub entry it registered.
                let span = session_span(c.id, &c.stream, c.role);
                let _entered = span.enter();
                let result = self.create(now, c, span.clone());
                if let Err(e) = &result {
                    debug!(error = %e, "session not created");
                }
                self.outbox.reply(reply, result);
            }
            Command::CounterOffer(c) => {
                let span = session_span(c.id, &c.stream, Role::Play);
                let _entered = span.enter();
                let CounterOfferSession {
                    id,
                    stream,
                    video_codecs,
                    audio_codecs,
                    h264_mode1,
                    valid_for,
                    reply,
                } = *c;
                let codecs = OfferedCodecs {
                    video: &video_codecs,
                    audio: &audio_codecs,
                    h264_mode1,
                };
                let result = self.counter_offer(now, id, stream, codecs, valid_for, span.clone());
                if let Err(e) = &result {
                    debug!(error = %e, "no counter-offer made");
                }
                self.outbox.reply(reply, result);
            }
            Command::Answer {
                id,
                answer_sdp,
                reply,
            } => {
                let span = self.sessions.get(&id).map(|s| s.span.clone());
                let _entered = span.as_ref().map(Span::enter);
                let r = self.answer(now, id, &answer_sdp);
                if let Err(e) = &r {
                    debug!(error = %e, "answer not taken");
                }
                self.outbox.reply(reply, r);
            }
            Command::Delete { id, reply } => {
                let r = if self.sessions.contains_key(&id) {
                    self.remove(now, id, "deleted");
                    Ok(())
                } else {
                    Err(SessionError::NotFound)
                };
                self.outbox.reply(reply, r);
            }
            Command::Patch {
                id,
                fragment,
                if_match,
                reply,
            } => {
                let span = self.sessions.get(&id).map(|s| s.span.clone());
                let _entered = span.as_ref().map(Span::enter);
                let r = self.patch(now, id, fragment, if_match);
                self.outbox.reply(reply, r);
            }
            Command::SelectLayer {
                id,
                media,
                rid,
                reply,
            } => {
                let r = self.select_layer(now, id, media.as_deref(), rid.as_deref());
                self.outbox.reply(reply, r);
            }
            Command::Stats { stream, reply } => {
                let list = self
                    .sessions
                    .values()
                    .filter(|s| s.stream == stream)
                    .map(|s| self.session_stats(s, now))
                    .collect();
                self.outbox.reply(reply, list);
            }
            Command::StreamTotals { reply } => {
                let mut totals: HashMap<Arc<str>, StreamTotals> = HashMap::new();
                for s in self.sessions.values() {
                    totals
                        .entry(s.stream.clone())
                        .or_default()
                        .add_session(&self.session_stats(s, now));
                }
                let mut totals: Vec<_> = totals.into_iter().collect();
                totals.sort_by(|a, b| a.0.cmp(&b.0));
                self.outbox.reply(reply, totals);
            }
            #[cfg(feature = "testkit")]
            Command::Crash => panic!("shard crash requested by a test"),
            Command::Shutdown => {
                let mut ids: Vec<SessionId> = self.sessions.keys().copied().collect();
                ids.sort();
                for id in ids {
                    self.remove(now, id, "shutdown");
                }
            }
        }
    }

    fn local_stream(&mut self, stream: &Arc<str>) -> &mut LocalStream {
        let (keep, max) = (
            self.config.media.gop_cache,
            self.config.media.gop_cache_max_packets,
        );
        // Only the own egress answers NACKs from the history; str0m keeps its own copies.
        let history = if self.config.media.direct_egress {
            (self.config.media.resend_buffer_packets, AUDIO_KEPT)
        } else {
            (0, 0)
        };
        self.streams
            .entry(stream.clone())
            .or_insert_with(|| LocalStream {
                layers: Layers::new(keep, max),
                reported: Vec::new(),
                history: History::new(history.0, history.1),
                viewers: Vec::new(),
                subscribers: 0,
                subscribed: false,
                publisher: None,
                remote_keyframe: keyframe::Limiter::default(),
                remote_layer_keyframe: Vec::new(),
                left: None,
            })
    }

    // ---- datagrams ------------------------------------------------------------------------------

    // ---- time -----------------------------------------------------------------------------------

    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((t, id))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(session) = self.sessions.get_mut(&id) else {
                continue;
            };
            if session.next_timeout != Some(t) {
                continue; // superseded by a later timeout
            }
            session.next_timeout = None;
            let rtc = &mut session.rtc;
            let done = self.faults.isolate(Site::Timeout, Some(id), || {
                crate::dtls::keys_during(|| rtc.handle_input(Input::Timeout(now)))
            });
            let done = done.map(|(r, keys)| {
                if keys.is_some() {
                    session.srtp_keys = keys;
                }
                r
            });
            match done {
                Some(Ok(())) => {}
                Some(Err(e)) => session
                    .span
                    .in_scope(|| debug!(error = %e, "timeout handling failed")),
                None => {
                    self.remove(now, id, PANIC);
                    continue;
                }
            }
            self.drive(now, id);
        }
        while let Some(c) = self.check_copies.pop_due(now) {
            self.outbox.transmits.push(Transmit {
                source: c.source,
                destination: c.destination,
                contents: c.contents,
            });
        }
        if self.next_replay.is_some_and(|t| now >= t) {
            self.replay(now);
        }
        if now >= self.next_housekeeping {
            self.next_housekeeping = now + HOUSEKEEPING;
            self.housekeeping(now);
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        let connect = self.config.timeouts.connect();
        let consent = self.config.timeouts.consent();
        let mut expired = Vec::new();
        let mut plis = Vec::new();
        let mut layer_plis = Vec::new();
        let mut held = Vec::new();
        for s in self.sessions.values() {
            if !s.held_candidates.is_empty()
                && now.saturating_duration_since(s.created) >= negotiate::CANDIDATE_HOLD
            {
                held.push(s.id);
            }
            let reason = if !s.rtc.is_alive() {
                Some(CLOSED_BY_PEER)
            } else if let Some(w) = &s.awaiting {
                // No peer to hear from before the answer: only the offer's validity counts.
                (now >= w.until).then_some(COUNTER_OFFER_EXPIRED)
            } else if !s.connected && now.saturating_duration_since(s.created) > connect {
                Some("connect timeout")
            } else if now.saturating_duration_since(s.last_rx) > consent {
                Some("consent expired")
            } else {
                None
            };
            if let Some(r) = reason {
                expired.push((s.id, r));
            } else {
                if s.pli.pending {
                    plis.push(s.id);
                }
                for (layer, limiter) in s.layer_plis.iter().enumerate() {
                    if limiter.pending {
                        layer_plis.push((s.id, layer as u8));
                    }
                }
            }
        }
        // In id order, not the map's: a seed must replay the same run.
        expired.sort();
        plis.sort();
        held.sort();
        for id in held {
            self.release_candidates(now, id);
            self.drive(now, id);
        }
        for (id, reason) in expired {
            self.counters.sessions_expired += 1;
            self.remove(now, id, reason);
        }
        for id in plis {
            self.request_keyframe(now, id);
        }
        layer_plis.sort();
        for (id, layer) in layer_plis {
            self.request_layer_keyframe(now, id, layer);
        }
        self.choose_layers(now);
        self.report_layers();
        self.flush_remote_keyframe_requests(now);
        self.end_abandoned_streams(now);
        self.send_reports(now);
    }

    /// Sender reports of the viewers whose media the gateway sends itself, where due.
    fn send_reports(&mut self, now: Instant) {
        let (at, wallclock) = self.wallclock;
        let wallclock = wallclock + now.saturating_duration_since(at);
        for s in self.sessions.values_mut() {
            let (Some(sender), Some(path)) = (&mut s.sender, s.media_path) else {
                continue;
            };
            for contents in sender.reports(now, wallclock) {
                self.outbox.send_on(path, contents);
            }
        }
    }

    /// Ends the viewers of each stream whose publisher left longer than the grace period ago
    /// with no other publisher since: they get RTCP BYE and DTLS close_notify, rather than
    /// waiting on a silent session until they give up.
    fn end_abandoned_streams(&mut self, now: Instant) {
        let grace = self.config.timeouts.publisher_grace();
        let mut ended: Vec<SessionId> = Vec::new();
        for local in self.streams.values() {
            let expired = local
                .left
                .is_some_and(|(at, _)| now.saturating_duration_since(at) >= grace);
            if expired && local.publisher.is_none() {
                ended.extend_from_slice(&local.viewers);
            }
        }
        // In id order, not the map's: a seed must replay the same run.
        ended.sort();
        for id in ended {
            self.remove(now, id, STREAM_ENDED);
        }
    }

    // ---- load ----------------------------------------------------------------------------------

    /// The IO layer measured this shard busy `load` (0 to 1) over its last window. Staying at
    /// `limits.shed_shard_load` for `limits.shed_after_secs` starts shedding the newest
    /// viewers, a few per window, until the load is below `limits.max_shard_load` (the
    /// admission threshold, so shedding and admission do not fight) and 90 % of the shedding
    /// threshold. With more viewers than
    /// the core can serve, every viewer would otherwise lose packets (the socket drops what
    /// the shard cannot read); shedding some keeps the stream whole for the rest, and the
    /// shed ones get a clean close they can retry on, elsewhere or later.
    pub fn handle_load(&mut self, now: Instant, load: f64) {
        let limits = &self.config.limits;
        let shed_at = limits.shed_shard_load;
        let resume_below = limits.max_shard_load.min(0.9 * shed_at);
        if shed_at >= 1.0 || (load < shed_at && !(self.shedding && load >= resume_below)) {
            self.overloaded_since = None;
            self.shedding = false;
            return;
        }
        let since = *self.overloaded_since.get_or_insert(now);
        let after = Duration::from_secs_f64(limits.shed_after_secs.max(0.0));
        if !self.shedding && now.saturating_duration_since(since) < after {
            return;
        }
        self.shedding = true;
        let mut viewers: Vec<(Instant, SessionId)> = self
            .sessions
            .values()
            .filter(|s| s.role == Role::Play)
            .map(|s| (s.created, s.id))
            .collect();
        // Newest first; ids break ties, so a seed replays the same choice.
        viewers.sort_by(|a, b| b.cmp(a));
        let shed = viewers.len().div_ceil(SHED_PER_WINDOW_DIVISOR);
        for (_, id) in viewers.into_iter().take(shed) {
            self.counters.sessions_shed += 1;
            self.outbox.hub.push(HubUpdate::Reconnect { id });
            self.remove(now, id, "overload: shed");
        }
    }

    // ---- messages from other shards ---------------------------------------------------------

    pub fn handle_message(&mut self, now: Instant, msg: PeerMsg) {
        match msg {
            PeerMsg::Media { stream, pkt } => {
                if self.streams.contains_key(&stream) {
                    self.deliver(now, &stream, Arc::new(pkt));
                }
            }
            PeerMsg::Subscribe { stream, shard } => self.on_subscribe(stream, shard),
            PeerMsg::Gop { stream, packets } => self.on_gop(now, stream, packets),
            PeerMsg::Unsubscribe { stream, shard } => {
                if let Some(local) = self.streams.get_mut(&stream) {
                    local.subscribers &= !(1 << shard);
                }
                self.drop_stream_if_unused(&stream);
            }
            PeerMsg::KeyframeRequest { stream, layer } => {
                if let Some(id) = self.local_publisher(&stream) {
                    match layer {
                        Some(l) => self.request_layer_keyframe(now, id, l),
                        None => self.request_keyframe(now, id),
                    }
                }
            }
            PeerMsg::PublisherLeft { stream, publisher } => {
                self.publisher_left(now, &stream, publisher);
            }
            PeerMsg::PublisherStarted { stream, publisher } => {
                if let Some(local) = self.streams.get_mut(&stream) {
                    local.publisher_sends(publisher);
                }
            }
        }
    }

    fn local_publisher(&self, stream: &str) -> Option<SessionId> {
        self.streams.get(stream).and_then(|l| l.publisher)
    }

    fn publisher_left(&mut self, now: Instant, stream: &Arc<str>, publisher: SessionId) {
        let Some(local) = self.streams.get_mut(stream) else {
            return;
        };
        if local.layers.publisher().is_some_and(|p| p != publisher) {
            return; // a newer publisher already sends
        }
        local.left = Some((now, publisher));
        local.layers.reset();
        let viewers = local.viewers.clone();
        for v in viewers {
            if let Some(s) = self.sessions.get_mut(&v) {
                // A GOP replay still under way is the old publisher's: were the new one's
                // packets queued behind it, its first keyframe would start after its own
                // SPS/PPS had been dropped as coming before a keyframe.
                s.backlog.clear();
                s.lead_in = 0;
                s.layer.reset();
                for (_, t) in &mut s.tracks {
                    t.publisher_left();
                }
            }
        }
    }

    // ---- the session's outputs ------------------------------------------------------------------

    /// Drains `id`'s outputs until its next timeout (str0m's rule after every mutation), then acts
    /// on its events.
    fn drive(&mut self, now: Instant, id: SessionId) {
        let mut events = std::mem::take(&mut self.events);
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        loop {
            let rtc = &mut session.rtc;
            let Some((output, keys)) = self.faults.isolate(Site::Poll, Some(id), || {
                crate::dtls::keys_during(|| rtc.poll_output())
            }) else {
                // The Rtc is in an unknown state: drop the session, nobody else's.
                self.events = events;
                self.remove(now, id, PANIC);
                return;
            };
            if keys.is_some() {
                session.srtp_keys = keys;
            }
            match output {
                Ok(Output::Timeout(t)) => {
                    if session.next_timeout != Some(t) {
                        session.next_timeout = Some(t);
                        self.timers.push(Reverse((t, id)));
                    }
                    break;
                }
                Ok(Output::Transmit(t)) => {
                    let tcp = t.proto == Protocol::Tcp;
                    let t = Transmit {
                        source: t.source,
                        destination: t.destination,
                        contents: t.contents.into(),
                    };
                    if on_media_path(&t.contents) {
                        session.move_media((tcp, t.source, t.destination), now);
                    }
                    if !session.connected {
                        self.demux.checking(t.destination, id);
                        // Only towards an address the peer has sent from: checks of an
                        // unreachable candidate (or of a bogus offer's) go out once each.
                        // TCP delivers what it carries.
                        if !tcp && session.addrs.contains(&t.destination) {
                            let copies = &mut self.check_copies;
                            copies.schedule(now, id, t.source, t.destination, &t.contents);
                        }
                    }
                    self.outbox.push(tcp, t);
                }
                Ok(Output::Event(e)) => events.push(e),
                Err(e) => {
                    session
                        .span
                        .in_scope(|| warn!(error = %e, "session failed"));
                    session.rtc.disconnect();
                    break;
                }
            }
        }
        for e in events.drain(..) {
            self.on_event(now, id, e);
        }
        self.events = events;
    }

    fn on_event(&mut self, now: Instant, id: SessionId, event: Event) {
        match event {
            Event::Connected => self.on_connected(now, id),
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                if let Some(s) = self.sessions.get(&id) {
                    s.span
                        .in_scope(|| debug!("ICE disconnected; consent decides removal"));
                }
            }
            Event::IceConnectionStateChange(state) => {
                if let Some(s) = self.sessions.get(&id) {
                    let ms = now.saturating_duration_since(s.created).as_millis() as u64;
                    s.span.in_scope(|| debug!(?state, ms, "ICE state"));
                }
            }
            Event::RtpPacket(rtp) => self.on_rtp(now, id, rtp),
            e
            @ (Event::PeerStats(_) | Event::MediaIngressStats(_) | Event::MediaEgressStats(_)) => {
                self.on_stats(id, e)
            }
            Event::KeyframeRequest(_) => self.on_keyframe_request(now, id),
            _ => {}
        }
    }

    fn on_connected(&mut self, now: Instant, id: SessionId) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        session.connected = true;
        session.connected_at = Some(now);
        // Its peer's addresses are learned now.
        self.demux.connected(id);
        let stream = session.stream.clone();
        let ms = now.saturating_duration_since(session.created).as_millis() as u64;
        session.span.in_scope(|| info!(ms, "connected"));
        match session.role {
            // Encoders often lose their first keyframe to the handshake: ask at once.
            Role::Publish => self.request_keyframe(now, id),
            Role::Play => self.join(now, id, &stream),
        }
    }

    // ---- removal ----------------------------------------------------------------------------------

    fn remove(&mut self, now: Instant, id: SessionId, reason: &str) {
        let Some(mut session) = self.sessions.remove(&id) else {
            return;
        };
        session.span.in_scope(|| info!(reason, "session removed"));
        if reason == PANIC {
            self.counters.panics += 1;
            session.rtc.disconnect();
        } else {
            self.say_goodbye(now, &mut session.rtc);
        }
        self.demux.remove(id, &session.addrs, &session.ufrag);
        // Its copies of checks still due (a scan of the few copies of connecting sessions).
        self.check_copies.forget(id);
        self.outbox.hub.push(HubUpdate::Removed {
            id,
            shard: self.index,
            by_peer: reason == CLOSED_BY_PEER,
        });
        let stream = session.stream.clone();
        match session.role {
            Role::Publish => {
                // The hub tells the other shards with viewers (see `HubUpdate::Removed`).
                if let Some(local) = self.streams.get_mut(&stream) {
                    local.subscribers = 0;
                    local.publisher = None;
                }
                self.publisher_left(now, &stream, id);
            }
            Role::Play => {
                let index = self.index;
                if let Some(local) = self.streams.get_mut(&stream) {
                    local.viewers.retain(|v| *v != id);
                    if local.viewers.is_empty() && local.subscribed {
                        local.subscribed = false;
                        self.outbox.hub.push(HubUpdate::Watch {
                            stream: stream.clone(),
                            shard: index,
                            wants: false,
                        });
                    }
                }
            }
        }
        self.drop_stream_if_unused(&stream);
    }

    /// Tells the peer the session ends (RTCP BYE, DTLS close_notify) and queues those datagrams;
    /// the Rtc is dropped after, so consent answers stop too (RFC 7675 §5.2 revocation).
    fn say_goodbye(&mut self, now: Instant, rtc: &mut Rtc) {
        if rtc.close().is_err() {
            rtc.disconnect();
            return;
        }
        // A few rounds: the BYE is scheduled, the close_notify leaves at once.
        for _ in 0..4 {
            loop {
                match self.faults.isolate(Site::Poll, None, || rtc.poll_output()) {
                    Some(Ok(Output::Transmit(t))) => self.outbox.push(
                        t.proto == Protocol::Tcp,
                        Transmit {
                            source: t.source,
                            destination: t.destination,
                            contents: t.contents.into(),
                        },
                    ),
                    Some(Ok(Output::Event(_))) => {}
                    _ => break,
                }
            }
            if !rtc.is_alive() {
                break;
            }
            let timeout = || rtc.handle_input(Input::Timeout(now));
            if self.faults.isolate(Site::Timeout, None, timeout).is_none() {
                break;
            }
        }
        rtc.disconnect();
    }

    /// Session `id`'s local ufrag is `new` now, in place of `old`: for the demultiplexer, and
    /// for the directory, which routes ICE-TCP connections by it.
    fn set_ufrag(&mut self, id: SessionId, old: Option<&str>, new: String) {
        self.demux.set_ufrag(id, old, new.clone());
        self.outbox.hub.push(HubUpdate::Ufrag { id, ufrag: new });
    }

    fn drop_stream_if_unused(&mut self, stream: &Arc<str>) {
        let has_publisher = self.local_publisher(stream).is_some();
        if let Some(local) = self.streams.get(stream) {
            if local.viewers.is_empty() && !has_publisher && local.subscribers == 0 {
                self.streams.remove(stream);
            }
        }
    }
}

/// Whether str0m sends this datagram on the ICE pair it uses for media: DTLS, SRTP and SRTCP
/// go nowhere else (RFC 7983 §7 ranges). STUN goes to every pair checked; a later change of
/// pair shows in the viewer's RTCP (`demux`) and in the statistics event (`stats`).
fn on_media_path(d: &[u8]) -> bool {
    matches!(d.first(), Some(20..=63 | 128..=191))
}
