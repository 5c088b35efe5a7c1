//! The sans-IO shard: every session of one shard, driven by datagrams, commands, messages from
//! other shards and time. No sockets, no threads, no clock: callers pass `now` and collect
//! [`Transmit`]s and [`PeerMsg`]s from [`Engine::outbox`].
//!
//! A publisher's packet goes: datagram → its `Rtc` → `Event::RtpPacket` → [`MediaPacket`] → the
//! shard's [`StreamCache`] and local viewers, and one copy per other shard with viewers.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{KeyframeRequestKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, Ssrc};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};
use tracing::{debug, info, warn, Span};

use super::{
    Command, Created, HubUpdate, Patched, PeerMsg, SessionError, SessionStats, StreamTotals,
    Transmit,
};
use crate::config::Config;
use crate::fanout::{is_keyframe, MediaPacket, Pushed, StreamCache, TrackRewriter};
use crate::sdp::{restart_offer, Fragment, Kind, Offer, OfferError};
use crate::session::{Role, SessionId};
use crate::stun;

/// How often sessions are checked for connect and consent timeouts and held keyframe requests.
const HOUSEKEEPING: Duration = Duration::from_millis(100);
/// Removal reason for a session whose str0m call panicked: its Rtc is not touched again.
const PANIC: &str = "panic in WebRTC stack";

/// How often paced GOP-cache replays send their next share.
const REPLAY_TICK: Duration = Duration::from_millis(5);

/// Counters of what a shard dropped or did, for tests and (later) metrics.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    pub datagrams_in: u64,
    pub datagrams_unknown_source: u64,
    pub datagrams_invalid: u64,
    pub packets_forwarded: u64,
    pub packets_no_codec: u64,
    /// Keyframe requests handed to str0m; it may merge several in one instant into one PLI.
    pub keyframe_requests_sent: u64,
    pub gop_cache_hits: u64,
    pub sessions_expired: u64,
    /// NACKs received from viewers and sent to publishers, PLIs likewise, and packets resent
    /// from viewers' resend buffers: moved forward at each statistics event (every
    /// `media.stats_interval_secs`) by what str0m counted since the previous one.
    pub nacks_received: u64,
    pub nacks_sent: u64,
    pub plis_received: u64,
    pub plis_sent: u64,
    pub packets_retransmitted: u64,
    /// Seconds from a viewer's 201 to its first video packet, since last published.
    pub first_frames: Vec<f64>,
}

/// A shard's counters as other threads read them; the shard thread stores its [`Counters`]
/// here after each pass, so the hot path only increments plain integers.
#[derive(Debug, Default)]
pub struct SharedCounters {
    pub datagrams_in: std::sync::atomic::AtomicU64,
    pub datagrams_dropped: std::sync::atomic::AtomicU64,
    pub packets_forwarded: std::sync::atomic::AtomicU64,
    pub packets_no_codec: std::sync::atomic::AtomicU64,
    pub keyframe_requests_sent: std::sync::atomic::AtomicU64,
    pub gop_cache_hits: std::sync::atomic::AtomicU64,
    pub sessions_expired: std::sync::atomic::AtomicU64,
    pub nacks_received: std::sync::atomic::AtomicU64,
    pub nacks_sent: std::sync::atomic::AtomicU64,
    pub plis_received: std::sync::atomic::AtomicU64,
    pub plis_sent: std::sync::atomic::AtomicU64,
    pub packets_retransmitted: std::sync::atomic::AtomicU64,
    /// Nanoseconds the shard thread spent working rather than waiting.
    pub busy_ns: std::sync::atomic::AtomicU64,
    /// Time-to-first-frame samples not yet taken by a scrape (bounded).
    pub first_frames: std::sync::Mutex<Vec<f64>>,
}

impl SharedCounters {
    pub fn publish(&self, c: &Counters) {
        use std::sync::atomic::Ordering::Relaxed;
        self.datagrams_in.store(c.datagrams_in, Relaxed);
        self.datagrams_dropped
            .store(c.datagrams_unknown_source + c.datagrams_invalid, Relaxed);
        self.packets_forwarded.store(c.packets_forwarded, Relaxed);
        self.packets_no_codec.store(c.packets_no_codec, Relaxed);
        self.keyframe_requests_sent
            .store(c.keyframe_requests_sent, Relaxed);
        self.gop_cache_hits.store(c.gop_cache_hits, Relaxed);
        self.sessions_expired.store(c.sessions_expired, Relaxed);
        self.nacks_received.store(c.nacks_received, Relaxed);
        self.nacks_sent.store(c.nacks_sent, Relaxed);
        self.plis_received.store(c.plis_received, Relaxed);
        self.plis_sent.store(c.plis_sent, Relaxed);
        self.packets_retransmitted
            .store(c.packets_retransmitted, Relaxed);
    }

    /// Moves the engine's time-to-first-frame samples here, keeping at most 4096 unscraped.
    pub fn take_first_frames(&self, c: &mut Counters) {
        if c.first_frames.is_empty() {
            return;
        }
        let mut v = self.first_frames.lock().unwrap_or_else(|p| p.into_inner());
        if v.len() < 4096 {
            v.append(&mut c.first_frames);
        }
        c.first_frames.clear();
    }
}

/// A command's answer, sent by the IO layer once the pass's [`HubUpdate`]s are applied: a
/// client that got its DELETE answered finds the directory without the session.
pub type Reply = Box<dyn FnOnce() + Send>;

/// What the IO layer takes out after each call, in this order: hub updates (apply them, and
/// deliver the messages they cause), messages to other shards, replies, transmits.
#[derive(Default)]
pub struct Outbox {
    pub transmits: Vec<Transmit>,
    pub messages: Vec<(usize, PeerMsg)>,
    pub hub: Vec<HubUpdate>,
    pub replies: Vec<Reply>,
}

impl Outbox {
    fn reply<T: Send + 'static>(&mut self, to: tokio::sync::oneshot::Sender<T>, value: T) {
        self.replies.push(Box::new(move || {
            let _ = to.send(value);
        }));
    }
}

/// A [`super::CreateSession`] without its reply channel.
struct NewSession {
    id: SessionId,
    stream: Arc<str>,
    role: Role,
    offer_sdp: String,
    viewer_shards: u64,
}

struct Session {
    id: SessionId,
    stream: Arc<str>,
    role: Role,
    /// Carries the session's id, stream and kind into every log line about it. Built once at
    /// creation and entered only around control work (creation, PATCH, connection, errors,
    /// timeouts, removal), never on the packet path: entering a span costs the subscriber's
    /// bookkeeping, which per packet and viewer would show in the fan-out's cost.
    span: Span,
    rtc: Rtc,
    offer_sdp: String,
    etag: String,
    ufrag: String,
    addrs: Vec<SocketAddr>,
    created: Instant,
    last_rx: Instant,
    connected: bool,
    /// When ICE and DTLS completed: a publisher's is its stream's uptime.
    connected_at: Option<Instant>,
    next_timeout: Option<Instant>,
    /// Publisher: what each incoming SSRC is, with its counts for the loss figure.
    ssrcs: Vec<Incoming>,
    mids: Vec<(Mid, Kind)>,
    /// Viewer: rewriters per track (by mid).
    tracks: Vec<(Mid, TrackRewriter)>,
    /// Viewer: the send SSRC of each track, learned at join, so a write is a hash lookup rather
    /// than str0m's scan of the session's send streams by mid.
    tx_ssrcs: Vec<(Mid, Ssrc)>,
    joined: bool,
    /// Latest figures from str0m's statistics events, for the API.
    stats: SessionStats,
    /// Transport bytes (in, out) at the previous statistics event and its time, for the bit
    /// rates over the interval since.
    rate_sample: (Instant, u64, u64),
    /// The latest cumulative figures str0m reported per track, received and sent.
    ingress: Vec<TrackReport>,
    egress: Vec<TrackReport>,
    /// Viewer: RTP packets written to str0m. str0m counts what it sent, resends included, but
    /// not the resends alone: they are the difference.
    packets_written: u64,
    /// Viewer: whether its first video packet went out (for the time-to-first-frame metric).
    first_video_sent: bool,
    /// Viewer catching up from the GOP cache: packets not yet sent, paced so the burst does not
    /// overflow the viewer's path or socket; live packets queue behind them.
    backlog: std::collections::VecDeque<Arc<MediaPacket>>,
    /// Publisher: when the last PLI went out, and whether one is held back.
    last_pli: Option<Instant>,
    pli_pending: bool,
}

/// A publisher's incoming RTP stream: its kind, and what RFC 3550 §A.3 needs to count the
/// packets lost on the way in (first and highest extended sequence number, packets received).
struct Incoming {
    ssrc: Ssrc,
    kind: Kind,
    first_seq: u64,
    max_seq: u64,
    received: u64,
}

impl Incoming {
    /// Expected minus received; retransmitted and duplicate packets count as received.
    fn lost(&self) -> u64 {
        (self.max_seq - self.first_seq + 1).saturating_sub(self.received)
    }
}

/// What str0m last reported for one track of a session: cumulative counts since it began.
#[derive(Clone, Copy, Debug)]
struct TrackReport {
    mid: Mid,
    packets: u64,
    nacks: u64,
    plis: u64,
    /// Sent tracks: packets the peer reports lost.
    lost: u64,
}

impl TrackReport {
    /// Stores `new` for its track in `list` and returns how far NACKs and PLIs moved.
    fn update(list: &mut Vec<TrackReport>, new: TrackReport) -> (u64, u64) {
        match list.iter_mut().find(|t| t.mid == new.mid) {
            Some(old) => {
                let moved = (
                    new.nacks.saturating_sub(old.nacks),
                    new.plis.saturating_sub(old.plis),
                );
                *old = new;
                moved
            }
            None => {
                list.push(new);
                (new.nacks, new.plis)
            }
        }
    }
}

/// The span of a session's log lines. A root span: when one session's work touches another
/// (a publisher's packet removes a failed viewer), the line names only the session it is about.
fn session_span(id: SessionId, stream: &str, role: Role) -> Span {
    let kind = role.name();
    tracing::info_span!(parent: None, "session", id = %id, stream = %stream, kind = %kind)
}

/// A stream as one shard sees it.
struct LocalStream {
    cache: StreamCache,
    viewers: Vec<SessionId>,
    /// On the publisher's shard: other shards that want the packets (bit per shard).
    subscribers: u64,
    /// This shard told the hub it wants the packets.
    subscribed: bool,
    /// The stream's publisher, when it is on this shard.
    publisher: Option<SessionId>,
}

pub struct Engine {
    index: usize,
    config: Arc<Config>,
    /// Every random choice the engine makes (ETags, the viewers' first sequence numbers and
    /// timestamps) comes from here, so a seed replays a run.
    rng: StdRng,
    /// Announced host candidates (what clients send to), all on this shard's port.
    candidates: Vec<SocketAddr>,
    dtls_cert: Option<str0m::config::DtlsCert>,
    sessions: HashMap<SessionId, Session>,
    by_addr: HashMap<SocketAddr, SessionId>,
    by_ufrag: HashMap<String, SessionId>,
    /// Remote addresses that a session still connecting has sent ICE checks to. The answers come
    /// from there and carry no ufrag of ours, and may arrive before the peer's own check has
    /// taught `by_addr` the address. Consulted only when `by_addr` misses, and an answer is only
    /// let through when it passes that session's STUN integrity check, so an offer that lists
    /// someone else's address cannot capture their traffic.
    checked: HashMap<SocketAddr, SessionId>,
    timers: BinaryHeap<Reverse<(Instant, SessionId)>>,
    streams: HashMap<Arc<str>, LocalStream>,
    next_housekeeping: Instant,
    /// Viewers with a backlog, and when to send their next share.
    replaying: Vec<SessionId>,
    next_replay: Option<Instant>,
    pub counters: Counters,
    pub outbox: Outbox,
    events: Vec<Event>,
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
        Engine {
            index,
            config,
            rng: StdRng::seed_from_u64(seed),
            candidates,
            dtls_cert,
            sessions: HashMap::new(),
            by_addr: HashMap::new(),
            by_ufrag: HashMap::new(),
            checked: HashMap::new(),
            timers: BinaryHeap::new(),
            streams: HashMap::new(),
            next_housekeeping: now + HOUSEKEEPING,
            replaying: Vec::new(),
            next_replay: None,
            counters: Counters::default(),
            outbox: Outbox::default(),
            events: Vec::new(),
        }
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
                    viewer_shards: c.viewer_shards,
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
            Command::Shutdown => {
                let mut ids: Vec<SessionId> = self.sessions.keys().copied().collect();
                ids.sort();
                for id in ids {
                    self.remove(now, id, "shutdown");
                }
            }
        }
    }

    /// A session as the API shows it, at `now`.
    fn session_stats(&self, s: &Session, now: Instant) -> SessionStats {
        let sum = |list: &[TrackReport], f: fn(&TrackReport) -> u64| list.iter().map(f).sum();
        let (packets_in, nacks_in, plis_in) = (
            sum(&s.ingress, |t| t.packets),
            sum(&s.ingress, |t| t.nacks),
            sum(&s.ingress, |t| t.plis),
        );
        let (packets_out, nacks_out, plis_out) = (
            sum(&s.egress, |t| t.packets),
            sum(&s.egress, |t| t.nacks),
            sum(&s.egress, |t| t.plis),
        );
        SessionStats {
            id: s.id.to_string(),
            kind: s.role.name(),
            shard: self.index,
            state: if s.connected {
                "connected"
            } else {
                "connecting"
            },
            remote: s.addrs.last().map(|a| a.to_string()),
            duration_secs: now.saturating_duration_since(s.created).as_secs_f64(),
            packets_in,
            packets_out,
            packets_lost_in: s.ssrcs.iter().map(Incoming::lost).sum(),
            packets_lost_out: sum(&s.egress, |t| t.lost),
            nacks: nacks_in + nacks_out,
            plis: plis_in + plis_out,
            connected_secs: s
                .connected_at
                .map(|t| now.saturating_duration_since(t).as_secs_f64()),
            ..s.stats.clone()
        }
    }

    fn rtc_config(&self) -> RtcConfig {
        let mut cfg = Rtc::builder()
            .set_rtp_mode(true)
            .set_ice_lite(self.config.media.ice_lite)
            .clear_codecs()
            .enable_h264(true)
            .enable_vp8(true)
            .enable_vp9(true)
            .enable_av1(true)
            .enable_opus(true, false)
            .set_stats_interval(
                (self.config.media.stats_interval_secs > 0)
                    .then(|| Duration::from_secs(self.config.media.stats_interval_secs)),
            );
        if let Some(cert) = &self.dtls_cert {
            cfg = cfg.set_dtls_cert(cert.clone());
        }
        cfg
    }

    fn create(&mut self, now: Instant, c: NewSession, span: Span) -> Result<Created, SessionError> {
        let NewSession {
            id,
            stream,
            role,
            offer_sdp,
            viewer_shards,
        } = c;
        let shape = Offer::parse(&offer_sdp)?;
        let offer = SdpOffer::from_sdp_string(&offer_sdp)
            .map_err(|e| OfferError::Malformed(e.to_string()))?;
        let mut rtc = self.rtc_config().build(now);
        for addr in &self.candidates {
            match Candidate::host(*addr, "udp") {
                Ok(c) => {
                    rtc.add_local_candidate(c);
                }
                Err(e) => warn!(%addr, error = %e, "cannot announce host candidate"),
            }
        }
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| SessionError::Negotiation(e.to_string()))?;
        let answer_sdp = answer.to_sdp_string();
        check_answer(&shape, &answer_sdp)?;
        let mids: Vec<(Mid, Kind)> = shape
            .sections
            .iter()
            .filter(|s| !s.port_zero)
            .filter_map(|s| Some((Mid::from(s.mid.as_deref()?), s.kind?)))
            .collect();
        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        let tracks = match role {
            Role::Publish => Vec::new(),
            Role::Play => mids
                .iter()
                .map(|(mid, kind)| (*mid, TrackRewriter::new(*kind, self.rng.gen())))
                .collect(),
        };
        let session = Session {
            id,
            stream: stream.clone(),
            role,
            span,
            rtc,
            offer_sdp,
            etag: new_etag(&mut self.rng),
            ufrag: ufrag.clone(),
            addrs: Vec::new(),
            created: now,
            last_rx: now,
            connected: false,
            connected_at: None,
            next_timeout: None,
            ssrcs: Vec::new(),
            mids,
            tracks,
            tx_ssrcs: Vec::new(),
            joined: false,
            backlog: std::collections::VecDeque::new(),
            first_video_sent: false,
            stats: SessionStats::default(),
            rate_sample: (now, 0, 0),
            ingress: Vec::new(),
            egress: Vec::new(),
            packets_written: 0,
            last_pli: None,
            pli_pending: false,
        };
        let etag = session.etag.clone();
        self.by_ufrag.insert(ufrag, id);
        self.sessions.insert(id, session);
        if role == Role::Publish {
            // The publisher's shard starts with the shards that already have viewers waiting.
            let index = self.index;
            let local = self.local_stream(&stream);
            local.subscribers = viewer_shards & !(1 << index);
            local.publisher = Some(id);
        }
        self.drive(now, id);
        info!(shard = self.index, "session created");
        Ok(Created {
            answer: answer_sdp,
            etag,
        })
    }

    fn local_stream(&mut self, stream: &Arc<str>) -> &mut LocalStream {
        let (keep, max) = (
            self.config.media.gop_cache,
            self.config.media.gop_cache_max_packets,
        );
        self.streams
            .entry(stream.clone())
            .or_insert_with(|| LocalStream {
                cache: StreamCache::new(keep, max),
                viewers: Vec::new(),
                subscribers: 0,
                subscribed: false,
                publisher: None,
            })
    }

    fn patch(
        &mut self,
        now: Instant,
        id: SessionId,
        fragment: Fragment,
        if_match: Option<String>,
    ) -> Result<Patched, SessionError> {
        let session = self.sessions.get_mut(&id).ok_or(SessionError::NotFound)?;
        let Some(tag) = if_match else {
            return Err(SessionError::PreconditionRequired);
        };
        // New credentials mean a restart (RFC 9725 §4.3.3); the current ones repeated in a
        // trickle fragment (as the RFC's own example does) are an ordinary trickle.
        let restart = fragment.ufrag.is_some()
            && fragment.ufrag.as_deref() != remote_ufrag(&session.offer_sdp);
        let tag = tag.trim();
        let matches = tag == "*" || tag.split(',').any(|t| t.trim() == session.etag);
        if !matches {
            return Err(SessionError::PreconditionFailed);
        }
        if !restart {
            for line in &fragment.candidates {
                // mDNS and unparseable candidates are dropped silently (RFC 9725 §4.3.2).
                if line.contains(".local ") {
                    continue;
                }
                match Candidate::from_sdp_string(line) {
                    Ok(c) => {
                        if let Some(s) = self.sessions.get_mut(&id) {
                            s.rtc.add_remote_candidate(c);
                        }
                        self.drive(now, id);
                    }
                    Err(e) => debug!(error = %e, "ignored trickled candidate"),
                }
            }
            return Ok(Patched::Trickled);
        }
        let offer_sdp = restart_offer(&session.offer_sdp, &fragment);
        let offer = SdpOffer::from_sdp_string(&offer_sdp)
            .map_err(|e| SessionError::RestartFailed(e.to_string()))?;
        let answer = session
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| SessionError::RestartFailed(e.to_string()));
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                self.drive(now, id);
                return Err(e);
            }
        };
        let creds = session.rtc.direct_api().local_ice_credentials();
        let old = std::mem::replace(&mut session.ufrag, creds.ufrag.clone());
        self.by_ufrag.remove(&old);
        self.by_ufrag.insert(creds.ufrag.clone(), id);
        session.offer_sdp = offer_sdp;
        session.etag = new_etag(&mut self.rng);
        let etag = session.etag.clone();
        let fragment = answer_fragment(&answer, &creds, self.config.media.ice_lite);
        self.drive(now, id);
        info!("ICE restarted");
        Ok(Patched::Restarted { fragment, etag })
    }

    // ---- datagrams ------------------------------------------------------------------------------

    /// One datagram from `source`, received on the shard's socket with destination IP `dst_ip`
    /// (when the socket reports it).
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        dst_ip: Option<IpAddr>,
        data: &[u8],
    ) {
        self.counters.datagrams_in += 1;
        let destination = self.destination(dst_ip);
        let Ok(receive) = Receive::new(Protocol::Udp, source, destination, data) else {
            self.counters.datagrams_invalid += 1;
            return;
        };
        let input = Input::Receive(now, receive);
        let (id, learned) = match self.by_addr.get(&source) {
            Some(id) => (*id, false),
            None => {
                let id = stun::local_ufrag(data)
                    .and_then(|u| self.by_ufrag.get(u))
                    .or_else(|| self.checked.get(&source))
                    .copied();
                match id {
                    Some(id) => (id, true),
                    None => {
                        self.counters.datagrams_unknown_source += 1;
                        return;
                    }
                }
            }
        };
        let Some(session) = self.sessions.get_mut(&id) else {
            self.by_addr.remove(&source);
            self.counters.datagrams_unknown_source += 1;
            return;
        };
        if learned {
            // Only a request that passes the session's ICE credentials teaches an address.
            if !session.rtc.accepts(&input) {
                self.counters.datagrams_unknown_source += 1;
                return;
            }
            session.addrs.push(source);
            self.by_addr.insert(source, id);
        }
        session.last_rx = now;
        match isolate(|| session.rtc.handle_input(input)) {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                session
                    .span
                    .in_scope(|| debug!(error = %e, "datagram rejected"));
                self.counters.datagrams_invalid += 1;
            }
            None => {
                self.counters.datagrams_invalid += 1;
                self.remove(now, id, PANIC);
                return;
            }
        }
        self.drive(now, id);
    }

    /// The announced candidate a datagram was sent to: str0m only accepts STUN addressed to one
    /// of its host candidates, so behind NAT the public address stands in for the local one.
    fn destination(&self, dst_ip: Option<IpAddr>) -> SocketAddr {
        let first = self.candidates[0];
        match dst_ip {
            Some(ip) => self
                .candidates
                .iter()
                .find(|c| c.ip() == ip)
                .copied()
                .unwrap_or(first),
            None => first,
        }
    }

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
            match isolate(|| session.rtc.handle_input(Input::Timeout(now))) {
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
        if self.next_replay.is_some_and(|t| now >= t) {
            self.replay(now);
        }
        if now >= self.next_housekeeping {
            self.next_housekeeping = now + HOUSEKEEPING;
            self.housekeeping(now);
        }
    }

    /// Sends each catching-up viewer its next share of the backlog.
    fn replay(&mut self, now: Instant) {
        let ids = std::mem::take(&mut self.replaying);
        for id in ids {
            if self.replay_share(now, id) {
                self.replaying.push(id);
            }
        }
        self.next_replay = (!self.replaying.is_empty()).then(|| now + REPLAY_TICK);
    }

    /// Sends one tick's worth of `id`'s backlog; true if some is left.
    fn replay_share(&mut self, now: Instant, id: SessionId) -> bool {
        let budget = (self.config.media.gop_replay_kbps as usize * 1000 / 8)
            * REPLAY_TICK.as_micros() as usize
            / 1_000_000;
        let mut sent = 0;
        while sent < budget.max(1) {
            let Some(pkt) = self
                .sessions
                .get_mut(&id)
                .and_then(|s| s.backlog.pop_front())
            else {
                break;
            };
            sent += pkt.payload.len();
            self.write_to_viewer(now, id, &pkt);
        }
        self.sessions
            .get(&id)
            .is_some_and(|s| !s.backlog.is_empty())
    }

    /// Writes a live packet to a viewer, or queues it behind the viewer's GOP replay.
    fn forward(&mut self, now: Instant, id: SessionId, pkt: &Arc<MediaPacket>) {
        let limit = self.config.media.gop_cache_max_packets;
        if let Some(s) = self.sessions.get_mut(&id) {
            if !s.backlog.is_empty() {
                if s.backlog.len() >= limit {
                    // Not catching up: drop the replay, start again from the next keyframe.
                    s.backlog.clear();
                    for (_, t) in &mut s.tracks {
                        t.publisher_left();
                    }
                    return;
                }
                s.backlog.push_back(pkt.clone());
                return;
            }
        }
        self.write_to_viewer(now, id, pkt);
    }

    fn housekeeping(&mut self, now: Instant) {
        let connect = self.config.timeouts.connect();
        let consent = self.config.timeouts.consent();
        let mut expired = Vec::new();
        let mut plis = Vec::new();
        for s in self.sessions.values() {
            let reason = if !s.rtc.is_alive() {
                Some("closed")
            } else if !s.connected && now.saturating_duration_since(s.created) > connect {
                Some("connect timeout")
            } else if now.saturating_duration_since(s.last_rx) > consent {
                Some("consent expired")
            } else {
                None
            };
            if let Some(r) = reason {
                expired.push((s.id, r));
            } else if s.pli_pending {
                plis.push(s.id);
            }
        }
        // In id order, not the map's: a seed must replay the same run.
        expired.sort();
        plis.sort();
        for (id, reason) in expired {
            self.counters.sessions_expired += 1;
            self.remove(now, id, reason);
        }
        for id in plis {
            self.request_keyframe(now, id);
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
            PeerMsg::Subscribe { stream, shard } => {
                let local = self.local_stream(&stream);
                if local.subscribers & (1 << shard) != 0 {
                    return;
                }
                local.subscribers |= 1 << shard;
                let packets: Vec<MediaPacket> = local
                    .cache
                    .all()
                    .iter()
                    .map(|p| p.for_other_shard())
                    .collect();
                self.outbox
                    .messages
                    .push((shard, PeerMsg::Gop { stream, packets }));
            }
            PeerMsg::Gop { stream, packets } => {
                let Some(local) = self.streams.get_mut(&stream) else {
                    return;
                };
                for p in packets {
                    local.cache.push(Arc::new(p));
                }
                let Some(gop) = local.cache.gop().map(|g| g.to_vec()) else {
                    return;
                };
                let waiting: Vec<SessionId> = local
                    .viewers
                    .iter()
                    .copied()
                    .filter(|v| {
                        self.sessions.get(v).is_some_and(|s| {
                            s.tracks
                                .iter()
                                .any(|(_, t)| t.kind == Kind::Video && !t.started())
                        })
                    })
                    .collect();
                for v in waiting {
                    self.counters.gop_cache_hits += 1;
                    self.start_from_cache(now, v, gop.clone());
                }
            }
            PeerMsg::Unsubscribe { stream, shard } => {
                if let Some(local) = self.streams.get_mut(&stream) {
                    local.subscribers &= !(1 << shard);
                }
                self.drop_stream_if_unused(&stream);
            }
            PeerMsg::KeyframeRequest { stream } => {
                if let Some(id) = self.local_publisher(&stream) {
                    self.request_keyframe(now, id);
                }
            }
            PeerMsg::PublisherLeft { stream, publisher } => {
                self.publisher_left(&stream, publisher);
            }
        }
    }

    fn local_publisher(&self, stream: &str) -> Option<SessionId> {
        self.streams.get(stream).and_then(|l| l.publisher)
    }

    fn publisher_left(&mut self, stream: &Arc<str>, publisher: SessionId) {
        let Some(local) = self.streams.get_mut(stream) else {
            return;
        };
        if local.cache.publisher.is_some() && local.cache.publisher != Some(publisher) {
            return; // a newer publisher already sends
        }
        local.cache.reset();
        let viewers = local.viewers.clone();
        for v in viewers {
            if let Some(s) = self.sessions.get_mut(&v) {
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
            let Some(output) = isolate(|| session.rtc.poll_output()) else {
                // The Rtc is in an unknown state: drop the session, nobody else's.
                self.events = events;
                self.remove(now, id, PANIC);
                return;
            };
            match output {
                Ok(Output::Timeout(t)) => {
                    if session.next_timeout != Some(t) {
                        session.next_timeout = Some(t);
                        self.timers.push(Reverse((t, id)));
                    }
                    break;
                }
                Ok(Output::Transmit(t)) => {
                    if !session.connected && !self.by_addr.contains_key(&t.destination) {
                        self.checked.insert(t.destination, id);
                    }
                    self.outbox.transmits.push(Transmit {
                        source: t.source,
                        destination: t.destination,
                        contents: t.contents.into(),
                    })
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
            Event::RtpPacket(rtp) => self.on_rtp(now, id, rtp),
            Event::PeerStats(p) => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    s.stats.rtt_ms = p.rtt.map(|d| d.as_secs_f64() * 1000.0);
                    s.stats.loss_in = p.ingress_loss_fraction;
                    s.stats.loss_out = p.egress_loss_fraction;
                    s.stats.bytes_in = p.peer_bytes_rx;
                    s.stats.bytes_out = p.peer_bytes_tx;
                    // Bit rates over the interval since the previous event (or creation).
                    let (then, rx, tx) = s.rate_sample;
                    let secs = p.timestamp.saturating_duration_since(then).as_secs_f64();
                    if secs > 0.0 {
                        let rate = |now: u64, before: u64| {
                            (now.saturating_sub(before) as f64 * 8.0 / secs).round() as u64
                        };
                        s.stats.bitrate_in = rate(p.peer_bytes_rx, rx);
                        s.stats.bitrate_out = rate(p.peer_bytes_tx, tx);
                        s.rate_sample = (p.timestamp, p.peer_bytes_rx, p.peer_bytes_tx);
                    }
                }
            }
            Event::MediaIngressStats(m) => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    // Video only: jitter is in RTP clock units, which differ between tracks.
                    if s.mids
                        .iter()
                        .any(|(mid, k)| *mid == m.mid && *k == Kind::Video)
                    {
                        s.stats.jitter = Some(m.jitter);
                    }
                    let report = TrackReport {
                        mid: m.mid,
                        packets: m.packets,
                        nacks: m.nacks,
                        plis: m.plis,
                        lost: 0,
                    };
                    let (nacks, plis) = TrackReport::update(&mut s.ingress, report);
                    self.counters.nacks_sent += nacks;
                    self.counters.plis_sent += plis;
                }
            }
            Event::MediaEgressStats(m) => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    let report = TrackReport {
                        mid: m.mid,
                        packets: m.packets,
                        nacks: m.nacks,
                        plis: m.plis,
                        lost: m.remote.as_ref().map_or(0, |r| r.packets_lost),
                    };
                    let (nacks, plis) = TrackReport::update(&mut s.egress, report);
                    self.counters.nacks_received += nacks;
                    self.counters.plis_received += plis;
                    // Packets still queued in str0m make this low for a moment, never high:
                    // it only moves forward.
                    let sent: u64 = s.egress.iter().map(|t| t.packets).sum();
                    let resent = sent.saturating_sub(s.packets_written);
                    if resent > s.stats.packets_retransmitted {
                        self.counters.packets_retransmitted +=
                            resent - s.stats.packets_retransmitted;
                        s.stats.packets_retransmitted = resent;
                    }
                }
            }
            Event::KeyframeRequest(_) => {
                let Some(stream) = self.sessions.get(&id).map(|s| s.stream.clone()) else {
                    return;
                };
                self.ask_keyframe(now, &stream);
            }
            _ => {}
        }
    }

    fn on_connected(&mut self, now: Instant, id: SessionId) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        session.connected = true;
        session.connected_at = Some(now);
        // Its peer's addresses are in `by_addr` now.
        self.checked.retain(|_, s| *s != id);
        let stream = session.stream.clone();
        session.span.in_scope(|| info!("connected"));
        match session.role {
            // Encoders often lose their first keyframe to the handshake: ask at once.
            Role::Publish => self.request_keyframe(now, id),
            Role::Play => self.join(now, id, &stream),
        }
    }

    /// A connected viewer starts receiving: from the GOP cache if it has a keyframe, else from the
    /// next keyframe (which it asks the publisher for).
    fn join(&mut self, now: Instant, id: SessionId, stream: &Arc<str>) {
        let index = self.index;
        let resend = self.config.media.resend_buffer_packets;
        if let Some(session) = self.sessions.get_mut(&id) {
            session.joined = true;
            let mids: Vec<Mid> = session.tracks.iter().map(|(m, _)| *m).collect();
            for mid in mids {
                if let Some(tx) = session.rtc.direct_api().stream_tx_by_mid(mid, None) {
                    tx.set_rtx_cache(resend, Duration::from_secs(3), None);
                    session.tx_ssrcs.push((mid, tx.ssrc()));
                }
            }
        }
        let local = self.local_stream(stream);
        local.viewers.push(id);
        let need_subscribe = !local.subscribed;
        local.subscribed = true;
        let gop: Option<Vec<Arc<MediaPacket>>> = local.cache.gop().map(|g| g.to_vec());
        if need_subscribe {
            self.outbox.hub.push(HubUpdate::Watch {
                stream: stream.clone(),
                shard: index,
                wants: true,
            });
        }
        match gop {
            Some(packets) => {
                self.counters.gop_cache_hits += 1;
                self.start_from_cache(now, id, packets);
            }
            None => self.ask_keyframe(now, stream),
        }
    }

    /// Starts a viewer on the cached GOP: paced through its backlog, the keyframe first.
    fn start_from_cache(&mut self, now: Instant, id: SessionId, gop: Vec<Arc<MediaPacket>>) {
        self.start_track_with_next(id, Kind::Video);
        if let Some(s) = self.sessions.get_mut(&id) {
            s.backlog.extend(gop);
        }
        // The first share (the keyframe, as far as the budget goes) leaves now, the rest on
        // the replay ticks.
        if self.replay_share(now, id) && !self.replaying.contains(&id) {
            self.replaying.push(id);
            if self.next_replay.is_none() {
                self.next_replay = Some(now + REPLAY_TICK);
            }
        }
    }

    /// Routes a keyframe request to the stream's publisher, wherever it is.
    fn ask_keyframe(&mut self, now: Instant, stream: &Arc<str>) {
        if let Some(id) = self.local_publisher(stream) {
            self.request_keyframe(now, id);
        } else {
            self.outbox.hub.push(HubUpdate::KeyframeWanted {
                stream: stream.clone(),
                shard: self.index,
            });
        }
    }

    /// Sends a PLI to publisher `id`, at most one per configured interval; a request inside the
    /// interval is held and sent when it ends.
    fn request_keyframe(&mut self, now: Instant, id: SessionId) {
        let interval = Duration::from_millis(self.config.media.keyframe_request_interval_ms);
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        if let Some(last) = s.last_pli {
            if now.saturating_duration_since(last) < interval {
                s.pli_pending = true;
                return;
            }
        }
        let Some(mid) = s
            .mids
            .iter()
            .find(|(_, k)| *k == Kind::Video)
            .map(|(m, _)| *m)
        else {
            s.pli_pending = false;
            return;
        };
        let mut api = s.rtc.direct_api();
        let Some(rx) = api.stream_rx_by_mid(mid, None) else {
            // No video has arrived yet: try again on the next housekeeping round.
            s.pli_pending = s.connected;
            return;
        };
        rx.request_keyframe(KeyframeRequestKind::Pli);
        s.last_pli = Some(now);
        s.pli_pending = false;
        self.counters.keyframe_requests_sent += 1;
        self.drive(now, id);
    }

    fn on_rtp(&mut self, now: Instant, id: SessionId, rtp: str0m::rtp::RtpPacket) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        if s.role != Role::Publish {
            return;
        }
        let ssrc = rtp.header.ssrc;
        let seq = *rtp.seq_no;
        let kind = match s.ssrcs.iter_mut().find(|x| x.ssrc == ssrc) {
            Some(x) => {
                x.received += 1;
                x.max_seq = x.max_seq.max(seq);
                x.first_seq = x.first_seq.min(seq);
                x.kind
            }
            None => {
                let Some(mid) = s.rtc.direct_api().stream_rx(&ssrc).map(|rx| rx.mid()) else {
                    return;
                };
                let Some(kind) = s.mids.iter().find(|(m, _)| *m == mid).map(|(_, k)| *k) else {
                    return;
                };
                s.ssrcs.push(Incoming {
                    ssrc,
                    kind,
                    first_seq: seq,
                    max_seq: seq,
                    received: 1,
                });
                kind
            }
        };
        let pt = rtp.header.payload_type;
        let Some(params) = s.rtc.codec_config().find(|p| p.pt() == pt).copied() else {
            self.counters.packets_no_codec += 1;
            return;
        };
        let keyframe = kind == Kind::Video && is_keyframe(params.spec().codec, &rtp.payload);
        if keyframe {
            // A held request is answered: sending it now would cost a needless keyframe.
            s.pli_pending = false;
        }
        let pkt = MediaPacket {
            publisher: id,
            kind,
            params,
            seq,
            time: rtp.header.timestamp,
            marker: rtp.header.marker,
            keyframe,
            payload: rtp.payload,
            received: now,
        };
        let stream = s.stream.clone();
        let subscribers = self
            .streams
            .get(&stream)
            .map(|l| l.subscribers)
            .unwrap_or(0);
        let mut rest = subscribers;
        while rest != 0 {
            let shard = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            self.outbox.messages.push((
                shard,
                PeerMsg::Media {
                    stream: stream.clone(),
                    pkt: pkt.for_other_shard(),
                },
            ));
        }
        self.deliver(now, &stream, Arc::new(pkt));
    }

    /// A packet of `stream` reaches this shard: cache it and write it to the local viewers.
    fn deliver(&mut self, now: Instant, stream: &Arc<str>, pkt: Arc<MediaPacket>) {
        let Some(local) = self.streams.get_mut(stream) else {
            return;
        };
        let pushed = local.cache.push(pkt.clone());
        let viewers = std::mem::take(&mut local.viewers);
        let frame: Vec<Arc<MediaPacket>> = if pushed == Pushed::KeyframeStart {
            local.cache.frame().to_vec()
        } else {
            Vec::new()
        };
        for &v in &viewers {
            // Only a keyframe's first packet can start a waiting viewer; others go as they are.
            let starts_waiting = pushed == Pushed::KeyframeStart
                && self
                    .sessions
                    .get(&v)
                    .and_then(|s| s.tracks.iter().find(|(_, t)| t.kind == pkt.kind))
                    .is_some_and(|(_, t)| t.waiting_keyframe);
            if starts_waiting {
                // Start on the whole keyframe, including its packets before this one (SPS/PPS).
                self.start_track_with_next(v, Kind::Video);
                for p in frame.iter().filter(|p| p.kind == Kind::Video) {
                    self.forward(now, v, p);
                }
            } else {
                self.forward(now, v, &pkt);
            }
        }
        if let Some(local) = self.streams.get_mut(stream) {
            local.viewers = viewers;
        }
    }

    fn start_track_with_next(&mut self, id: SessionId, kind: Kind) {
        if let Some(s) = self.sessions.get_mut(&id) {
            if let Some((_, t)) = s.tracks.iter_mut().find(|(_, t)| t.kind == kind) {
                t.start_with_next();
            }
        }
    }

    fn write_to_viewer(&mut self, now: Instant, id: SessionId, pkt: &MediaPacket) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let Session {
            rtc,
            tracks,
            tx_ssrcs,
            ..
        } = s;
        let Some((mid, track)) = tracks.iter_mut().find(|(_, t)| t.kind == pkt.kind) else {
            return;
        };
        let mid = *mid;
        let pt = track.map_pt(&pkt.params, |params| {
            let remote = rtc.media(mid)?.remote_pts().to_vec();
            rtc.codec_config()
                .params()
                .iter()
                .filter(|p| remote.contains(&p.pt()))
                .filter(|p| p.spec().codec == params.spec().codec)
                .filter(|p| takes_packetization(p, params))
                .max_by_key(|p| fmtp_score(p, params))
                .map(|p| p.pt())
        });
        let Some(pt) = pt else {
            self.counters.packets_no_codec += 1;
            return;
        };
        let Some((seq, time)) = track.rewrite(pkt, now) else {
            return;
        };
        let ssrc = tx_ssrcs.iter().find(|(m, _)| *m == mid).map(|(_, s)| *s);
        let mut api = rtc.direct_api();
        let tx = match ssrc {
            Some(ssrc) => api.stream_tx(&ssrc),
            None => api.stream_tx_by_mid(mid, None),
        };
        let Some(tx) = tx else {
            return;
        };
        let write = RtpWrite::new(pt, seq.into(), time, pkt.received, pkt.payload.clone())
            .marker(pkt.marker)
            .nackable(true);
        if isolate(|| tx.write_rtp(write)).is_none() {
            self.remove(now, id, PANIC);
            return;
        }
        s.packets_written += 1;
        if pkt.kind == Kind::Video && !s.first_video_sent {
            s.first_video_sent = true;
            let secs = now.saturating_duration_since(s.created).as_secs_f64();
            self.counters.first_frames.push(secs);
        }
        self.counters.packets_forwarded += 1;
        self.drive(now, id);
    }

    // ---- removal ----------------------------------------------------------------------------------

    fn remove(&mut self, now: Instant, id: SessionId, reason: &str) {
        let Some(mut session) = self.sessions.remove(&id) else {
            return;
        };
        session.span.in_scope(|| info!(reason, "session removed"));
        if reason == PANIC {
            session.rtc.disconnect();
        } else {
            self.say_goodbye(now, &mut session.rtc);
        }
        for a in &session.addrs {
            self.by_addr.remove(a);
        }
        self.checked.retain(|_, s| *s != id);
        self.by_ufrag.remove(&session.ufrag);
        self.outbox.hub.push(HubUpdate::Removed {
            id,
            shard: self.index,
        });
        let stream = session.stream.clone();
        match session.role {
            Role::Publish => {
                // The hub tells the other shards with viewers (see `HubUpdate::Removed`).
                if let Some(local) = self.streams.get_mut(&stream) {
                    local.subscribers = 0;
                    local.publisher = None;
                }
                self.publisher_left(&stream, id);
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
                match isolate(|| rtc.poll_output()) {
                    Some(Ok(Output::Transmit(t))) => self.outbox.transmits.push(Transmit {
                        source: t.source,
                        destination: t.destination,
                        contents: t.contents.into(),
                    }),
                    Some(Ok(Output::Event(_))) => {}
                    _ => break,
                }
            }
            if !rtc.is_alive() || isolate(|| rtc.handle_input(Input::Timeout(now))).is_none() {
                break;
            }
        }
        rtc.disconnect();
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

/// Runs one str0m call so that a panic in it costs only its session: the caller removes the
/// session when this returns `None`. `Rtc` keeps no state shared with other sessions.
fn isolate<T>(f: impl FnOnce() -> T) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok()
}

/// Whether a viewer's payload type can carry the publisher's packets: an H264 receiver in
/// packetization mode 0 need not understand the FU-A and STAP-A packets of mode 1 (RFC 6184
/// §6.2), so mode-1 packets never go to a mode-0 payload type.
fn takes_packetization(
    viewer: &str0m::format::PayloadParams,
    publisher: &str0m::format::PayloadParams,
) -> bool {
    let mode = |p: &str0m::format::PayloadParams| p.spec().format.packetization_mode.unwrap_or(0);
    mode(viewer) >= mode(publisher)
}

/// How well the viewer's payload parameters fit the publisher's: same H264 profile and
/// packetization mode first.
fn fmtp_score(ours: &str0m::format::PayloadParams, theirs: &str0m::format::PayloadParams) -> u32 {
    let (a, b) = (ours.spec().format, theirs.spec().format);
    let mut score = 0;
    if a.packetization_mode == b.packetization_mode {
        score += 2;
    }
    if a.profile_level_id.map(|p| p >> 8) == b.profile_level_id.map(|p| p >> 8) {
        score += 1;
    }
    if a.profile_id == b.profile_id {
        score += 1;
    }
    score
}

/// The remote ICE ufrag a session runs on, from the offer it was created (or restarted) with.
fn remote_ufrag(offer_sdp: &str) -> Option<&str> {
    offer_sdp
        .lines()
        .find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:"))
}

/// A strong entity-tag for an ICE session (RFC 9110 §8.8.3).
fn new_etag(rng: &mut StdRng) -> String {
    format!("\"{:016x}\"", rng.gen::<u64>())
}

/// RFC 9725 §4.4.3: no partially successful answers. str0m rejects an m-line it cannot serve
/// with port 0; the whole offer is refused instead.
fn check_answer(offer: &Offer, answer_sdp: &str) -> Result<(), SessionError> {
    let answer = Offer::parse(answer_sdp)?;
    for (o, a) in offer.sections.iter().zip(answer.sections.iter()) {
        if o.kind.is_some() && !o.port_zero && a.port_zero {
            let kind = o.kind.map(|k| k.to_string()).unwrap_or_default();
            return Err(SessionError::Negotiation(format!(
                "no codec of the {kind} track can be forwarded"
            )));
        }
    }
    Ok(())
}

/// The gateway's side of an ICE restart as an sdpfrag (RFC 8840): its new credentials and its
/// candidates, with the same ice-options and ice-lite as the answer (RFC 9725 §4.3.3).
fn answer_fragment(answer: &SdpAnswer, creds: &str0m::IceCreds, lite: bool) -> String {
    let sdp = answer.to_sdp_string();
    let mut out = String::new();
    if sdp.lines().any(|l| l.trim_end() == "a=ice-options:trickle") {
        out.push_str("a=ice-options:trickle\r\n");
    }
    if lite {
        out.push_str("a=ice-lite\r\n");
    }
    out.push_str(&format!(
        "a=ice-ufrag:{}\r\na=ice-pwd:{}\r\n",
        creds.ufrag, creds.pass
    ));
    let mut in_first = false;
    for line in sdp.lines().map(|l| l.trim_end_matches('\r')) {
        if line.starts_with("m=") {
            if in_first {
                break;
            }
            in_first = true;
            out.push_str(line);
            out.push_str("\r\n");
        } else if in_first && (line.starts_with("a=mid:") || line.starts_with("a=candidate:")) {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("a=end-of-candidates\r\n");
    out
}
