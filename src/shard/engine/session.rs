//! One session as its shard keeps it: the str0m `Rtc` and what the gateway tracks beside it.

use std::collections::VecDeque;

use str0m::media::Rid;

use super::keyframe::Limiter;
use super::*;
use crate::simulcast::{LayerChoice, LinkEstimate};

/// A [`super::CreateSession`] without its reply channel.
pub(super) struct NewSession {
    pub(super) id: SessionId,
    pub(super) stream: Arc<str>,
    pub(super) role: Role,
    pub(super) offer_sdp: String,
}

/// A session about to be kept: its `Rtc` and what the gateway read from the negotiation.
pub(super) struct NewRtcSession {
    pub(super) id: SessionId,
    pub(super) stream: Arc<str>,
    pub(super) role: Role,
    pub(super) span: Span,
    pub(super) rtc: Rtc,
    /// The peer's SDP as str0m took it: its offer, or its answer to a counter-offer.
    pub(super) remote_sdp: String,
    pub(super) mids: Vec<(Mid, Kind)>,
    pub(super) held_candidates: Vec<String>,
    pub(super) awaiting: Option<Box<AwaitingAnswer>>,
}

/// A viewer the gateway sent its own offer (a WHEP counter-offer) and that has not answered.
pub(super) struct AwaitingAnswer {
    /// str0m's side of the offer, which the answer completes.
    pub(super) pending: str0m::change::SdpPendingOffer,
    /// The offer as sent, which the answer is checked against.
    pub(super) offer_sdp: String,
    /// The offer's valid-until: unanswered then, the session is removed.
    pub(super) until: Instant,
}

pub(super) struct Session {
    pub(super) id: SessionId,
    pub(super) stream: Arc<str>,
    pub(super) role: Role,
    /// Carries the session's id, stream and kind into every log line about it. Built once at
    /// creation and entered only around control work (creation, PATCH, connection, errors,
    /// timeouts, removal), never on the packet path: entering a span costs the subscriber's
    /// bookkeeping, which per packet and viewer would show in the fan-out's cost.
    pub(super) span: Span,
    pub(super) rtc: Rtc,
    /// The peer's SDP as str0m took it (its offer, or its answer to a counter-offer), with
    /// the remote ICE credentials a PATCH is compared with.
    pub(super) offer_sdp: String,
    pub(super) etag: String,
    pub(super) ufrag: String,
    pub(super) addrs: Vec<SocketAddr>,
    /// The offer's candidates, given to str0m on the peer's first datagram.
    pub(super) held_candidates: Vec<String>,
    /// The peer's candidates str0m took (offered or trickled): address, TCP or not, and type
    /// (`host`, `srflx`, `prflx`, `relay`), to name the path its media comes by.
    pub(super) peer_candidates: Vec<(SocketAddr, bool, &'static str)>,
    /// Whether the address media comes from (the last one learned) is an ICE-TCP connection.
    pub(super) over_tcp: bool,
    pub(super) created: Instant,
    pub(super) last_rx: Instant,
    pub(super) connected: bool,
    /// When ICE and DTLS completed: a publisher's is its stream's uptime.
    pub(super) connected_at: Option<Instant>,
    pub(super) next_timeout: Option<Instant>,
    /// Publisher: what each incoming SSRC is, with its counts for the loss figure.
    pub(super) ssrcs: Vec<Incoming>,
    /// Publisher: its video layers' rids, indexed by layer number (see `crate::simulcast`).
    pub(super) layer_rids: Vec<Option<Rid>>,
    /// Publisher: per layer number, its PLIs of that layer alone (see
    /// `Engine::request_layer_keyframe`).
    pub(super) layer_plis: Vec<Limiter>,
    /// Viewer: the video layer it plays and the one it moves to.
    pub(super) layer: LayerChoice,
    /// Viewer: what its path carries, from its receiver reports, for the layer it gets.
    pub(super) estimate: LinkEstimate,
    pub(super) mids: Vec<(Mid, Kind)>,
    /// Viewer: rewriters per track (by mid).
    pub(super) tracks: Vec<(Mid, TrackRewriter)>,
    /// Viewer: the send SSRC of each track, learned at join, so a write is a hash lookup rather
    /// than str0m's scan of the session's send streams by mid.
    pub(super) tx_ssrcs: Vec<(Mid, Ssrc)>,
    pub(super) joined: bool,
    /// Latest figures from str0m's statistics events, for the API.
    pub(super) stats: SessionStats,
    /// Transport bytes (in, out) at the previous statistics event and its time, for the bit
    /// rates over the interval since.
    pub(super) rate_sample: (Instant, u64, u64),
    /// The latest cumulative figures str0m reported per track, received and sent.
    pub(super) ingress: Vec<TrackReport>,
    pub(super) egress: Vec<TrackReport>,
    /// Viewer: RTP packets written to str0m. str0m counts what it sent, resends included, but
    /// not the resends alone: they are the difference.
    pub(super) packets_written: u64,
    /// Viewer: whether its first video packet went out (for the time-to-first-frame metric).
    pub(super) first_video_sent: bool,
    /// Viewer catching up from the GOP cache: packets not yet sent, paced so the burst does not
    /// overflow the viewer's path or socket; live packets queue behind them.
    pub(super) backlog: std::collections::VecDeque<Arc<MediaPacket>>,
    /// Replay ticks left on which the backlog's first packet is sent again before the rest
    /// (see `replay::LEAD_IN`).
    pub(super) lead_in: u8,
    /// Viewer: when its video started, and whether a keyframe request of its own was already
    /// answered by starting it again from the GOP cache (once per viewer).
    pub(super) video_started: Option<Instant>,
    pub(super) restarted: bool,
    /// Viewer: a DTLS handshake record came from it after the gateway's side of the
    /// handshake had ended. The gateway was the DTLS server and its last flight was lost, so
    /// media went out before the viewer had keys to decrypt it.
    pub(super) keys_late: bool,
    /// Viewer: its video started on a GOP from the cache with every packet in it, a start
    /// it can decode (its keys permitting). False after a start on a live keyframe, which it
    /// got only as the packets came, or on a GOP with a hole (a packet lost upstream).
    pub(super) start_whole: bool,
    /// Publisher: its PLIs (see `Engine::request_keyframe`).
    pub(super) pli: Limiter,
    /// Publisher: a loss could not be repaired, so a keyframe newer than this sequence number
    /// is wanted; the PLI is repeated each interval until one arrives (a PLI can be lost too).
    pub(super) keyframe_after: Option<u64>,
    /// Viewer: the SRTP keys its DTLS handshake produced, until its media egress takes them.
    pub(super) srtp_keys: Option<crate::dtls::SrtpKeys>,
    /// Viewer: its media egress around str0m, from when it joins with keys (see `egress`).
    pub(super) sender: Option<super::egress::Egress>,
    /// Where a viewer's media goes, over TCP or not, local and remote address: the pair
    /// str0m's DTLS went on, then where the viewer's authenticated RTCP comes from, and the
    /// pair str0m's statistics name. Media from `sender` goes the same way.
    pub(super) media_path: Option<MediaPath>,
    /// When a datagram last came from `media_path`'s remote address.
    pub(super) path_heard: Instant,
    /// The pair str0m's last statistics event named as selected.
    pub(super) selected_pair: Option<MediaPath>,
    /// Viewer: the counter-offer waiting for its answer. Until then the session has no peer
    /// to hear from, so only the offer's validity ends it; when the answer comes, `created`
    /// and `last_rx` start again, so the connect timeout and the time to first frame count
    /// from the answer, as they count from the 201 of a session created from an offer.
    pub(super) awaiting: Option<Box<AwaitingAnswer>>,
}

/// Where a viewer's media goes: over TCP or not, local and remote address.
pub(super) type MediaPath = (bool, SocketAddr, SocketAddr);

impl Session {
    /// Sends media on `path` from `now` on. A change restarts the time since the viewer was
    /// last heard from there: a new path is not silent.
    pub(super) fn move_media(&mut self, path: MediaPath, now: Instant) {
        if self.media_path != Some(path) {
            self.media_path = Some(path);
            self.path_heard = now;
        }
    }

    /// Counts a packet written to this viewer; for its first video packet, the seconds since
    /// its creation (its time to first frame).
    pub(super) fn count_written(&mut self, now: Instant, kind: Kind) -> Option<f64> {
        self.packets_written += 1;
        if kind != Kind::Video || self.first_video_sent {
            return None;
        }
        self.first_video_sent = true;
        self.video_started = Some(now);
        Some(now.saturating_duration_since(self.created).as_secs_f64())
    }
}

/// A publisher's incoming RTP stream: its kind, and what RFC 3550 §A.3 needs to count the
/// packets lost on the way in (first and highest extended sequence number, packets received).
pub(super) struct Incoming {
    pub(super) ssrc: Ssrc,
    pub(super) kind: Kind,
    /// Its video layer: number and rid.
    pub(super) layer: u8,
    pub(super) rid: Option<Rid>,
    pub(super) first_seq: u64,
    pub(super) max_seq: u64,
    pub(super) received: u64,
    /// Video: sequence numbers not received yet, oldest first, with when they were missed.
    pub(super) missing: VecDeque<(u64, Instant)>,
}

/// How long a lost video packet may take to be repaired by NACK and retransmission before
/// the gateway asks for a keyframe instead. str0m retries a NACK every RTT + 5 ms (100 ms
/// while the RTT is unknown), at most 5 times; 300 ms leaves room for three tries at 100 ms,
/// and for the keyframe to reach the viewers within a second of the loss.
pub(super) const REPAIR_DEADLINE: Duration = Duration::from_millis(300);

/// str0m NACKs a packet only while fewer than this many newer ones have arrived
/// (`MAX_MISORDER` in its NACK register); past that it is never delivered.
const NACK_WINDOW: u64 = 100;

/// Missing packets tracked per stream; more means a burst no NACK will repair.
const MAX_MISSING: usize = 256;

impl Incoming {
    pub(super) fn new(
        ssrc: Ssrc,
        kind: Kind,
        (layer, rid): (u8, Option<Rid>),
        seq: u64,
    ) -> Incoming {
        Incoming {
            ssrc,
            kind,
            layer,
            rid,
            first_seq: seq,
            max_seq: seq,
            received: 1,
            missing: VecDeque::new(),
        }
    }

    /// Counts packet `seq`, received at `now`, and notes the gap before it (video only).
    /// Returns true if a packet can no longer be repaired in time: the caller wants a keyframe.
    pub(super) fn record(&mut self, seq: u64, keyframe: bool, now: Instant) -> bool {
        self.received += 1;
        let mut lost = false;
        if seq > self.max_seq {
            if self.kind == Kind::Video {
                let gap = seq - self.max_seq - 1;
                if gap >= NACK_WINDOW {
                    lost = true;
                } else {
                    self.missing
                        .extend((self.max_seq + 1..seq).map(|s| (s, now)));
                }
            }
            self.max_seq = seq;
        } else if let Ok(i) = self.missing.binary_search_by_key(&seq, |m| m.0) {
            // Repaired by a retransmission, or only reordered.
            self.missing.remove(i);
        }
        self.first_seq = self.first_seq.min(seq);
        if keyframe {
            // What was lost before a keyframe no longer matters to a decoder.
            while self.missing.front().is_some_and(|m| m.0 < seq) {
                self.missing.pop_front();
            }
        }
        while let Some(&(s, since)) = self.missing.front() {
            let given_up = now.saturating_duration_since(since) >= REPAIR_DEADLINE
                || self.max_seq - s >= NACK_WINDOW
                || self.missing.len() > MAX_MISSING;
            if !given_up {
                break;
            }
            self.missing.pop_front();
            lost = true;
        }
        lost
    }

    /// Expected minus received; retransmitted and duplicate packets count as received.
    pub(super) fn lost(&self) -> u64 {
        (self.max_seq - self.first_seq + 1).saturating_sub(self.received)
    }
}

/// What str0m last reported for one track of a session: cumulative counts since it began.
#[derive(Clone, Copy, Debug)]
pub(super) struct TrackReport {
    pub(super) mid: Mid,
    pub(super) packets: u64,
    pub(super) nacks: u64,
    pub(super) plis: u64,
    /// Sent tracks: packets the peer reports lost.
    pub(super) lost: u64,
}

impl TrackReport {
    /// Stores `new` for its track in `list` and returns how far NACKs and PLIs moved.
    pub(super) fn update(list: &mut Vec<TrackReport>, new: TrackReport) -> (u64, u64) {
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
pub(super) fn session_span(id: SessionId, stream: &str, role: Role) -> Span {
    let kind = role.name();
    tracing::info_span!(parent: None, "session", id = %id, stream = %stream, kind = %kind)
}
