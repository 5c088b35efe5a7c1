//! Data-plane shards: one thread per core, each with its own UDP socket and sessions.
//!
//! [`engine`] is the sans-IO state machine (datagrams, commands and time in; transmits and
//! messages to other shards out); [`io`] is the thread that owns the socket and drives it.

pub mod counters;
pub mod engine;
pub mod io;
pub mod tcp;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::fanout::MediaPacket;
use crate::hub::Hub;
use crate::sdp::{Fragment, OfferError};
use crate::session::{Role, SessionId};

/// Why a session command failed, in the shard's terms; `http::error` maps it to a status.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Offer(#[from] OfferError),
    #[error("the offer could not be negotiated: {0}")]
    Negotiation(String),
    #[error("no such session")]
    NotFound,
    #[error("a PATCH must carry If-Match with the session's ETag (or \"*\" for an ICE restart)")]
    PreconditionRequired,
    #[error("If-Match does not match the current ICE session's ETag")]
    PreconditionFailed,
    #[error("the ICE restart could not be done: {0}")]
    RestartFailed(String),
    #[error("the media shard is not running")]
    Unavailable,
    /// A layer selection that cannot be served; the string says why.
    #[error("{0}")]
    Layer(String),
    /// The answer to a counter-offer is not SDP.
    #[error("the answer is not SDP: {0}")]
    MalformedAnswer(String),
    /// The answer to a counter-offer is SDP that cannot be served; the string says why.
    #[error("the answer cannot be served: {0}")]
    UnacceptableAnswer(String),
    /// An SDP answer to a session that has no counter-offer waiting for one.
    #[error(
        "this session is not waiting for an SDP answer: only the answer to the endpoint's \
         counter-offer (406) may be PATCHed as application/sdp, once"
    )]
    NotAwaitingAnswer,
    /// Trickle or ICE restart before the counter-offer was answered.
    #[error(
        "this session waits for the SDP answer to its counter-offer: PATCH that \
         (application/sdp) first"
    )]
    AwaitingAnswer,
}

/// A new session's answer.
#[derive(Debug)]
pub struct Created {
    pub answer: String,
    pub etag: String,
}

/// What a PATCH did.
#[derive(Debug, PartialEq, Eq)]
pub enum Patched {
    /// Candidates were added (204).
    Trickled,
    /// ICE restarted: the gateway's new fragment and ETag (200).
    Restarted { fragment: String, etag: String },
}

/// The gateway's own offer to a viewer (a WHEP counter-offer), waiting for its answer.
#[derive(Debug)]
pub struct Countered {
    pub offer: String,
    pub etag: String,
}

/// A viewer to be served the gateway's own offer: its m-lines carry the codecs the stream's
/// publisher sends (upper-case SDP names), and it waits `valid_for` for the answer.
pub struct CounterOfferSession {
    pub id: SessionId,
    pub stream: Arc<str>,
    pub video_codecs: Vec<String>,
    pub audio_codecs: Vec<String>,
    /// The publisher's H264 comes in packetization mode 1: mode 0 is not offered.
    pub h264_mode1: bool,
    pub valid_for: std::time::Duration,
    pub reply: oneshot::Sender<Result<Countered, SessionError>>,
}

pub struct CreateSession {
    pub id: SessionId,
    pub stream: Arc<str>,
    pub role: Role,
    pub offer_sdp: String,
    pub reply: oneshot::Sender<Result<Created, SessionError>>,
}

/// Requests from the HTTP control plane to a shard.
pub enum Command {
    Create(Box<CreateSession>),
    /// A viewer whose offer cannot be served as it is gets the gateway's offer instead.
    CounterOffer(Box<CounterOfferSession>),
    /// The viewer's SDP answer to its counter-offer.
    Answer {
        id: SessionId,
        answer_sdp: String,
        reply: oneshot::Sender<Result<(), SessionError>>,
    },
    Delete {
        id: SessionId,
        reply: oneshot::Sender<Result<(), SessionError>>,
    },
    Patch {
        id: SessionId,
        fragment: Fragment,
        if_match: Option<String>,
        reply: oneshot::Sender<Result<Patched, SessionError>>,
    },
    /// A viewer picks the video layer it plays (the WHEP layer extension): by rid, or
    /// `None` for automatic choice. `media` names the video m-line (its index in the offer
    /// or its mid), if the request named one.
    SelectLayer {
        id: SessionId,
        media: Option<String>,
        rid: Option<String>,
        reply: oneshot::Sender<Result<(), SessionError>>,
    },
    /// The sessions of `stream` on this shard, with their latest statistics.
    Stats {
        stream: Arc<str>,
        reply: oneshot::Sender<Vec<SessionStats>>,
    },
    /// Every stream with sessions on this shard, with its figures summed over them: one
    /// command per shard serves the whole stream list.
    StreamTotals {
        reply: oneshot::Sender<Vec<(Arc<str>, StreamTotals)>>,
    },
    Shutdown,
    /// Panics the shard outside any per-session isolation, for tests of its supervision.
    #[cfg(feature = "testkit")]
    Crash,
}

/// One session as the API shows it. Bytes, packets, bit rates, NACKs and PLIs come from str0m's
/// statistics, refreshed every `media.stats_interval_secs` (all zero while that is 0); a
/// publisher's `packets_lost_in` is counted as its packets arrive.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SessionStats {
    pub id: String,
    /// `publish` or `play`.
    pub kind: &'static str,
    pub shard: usize,
    /// `connecting` until ICE and DTLS are done, then `connected`.
    pub state: &'static str,
    /// The peer's address media comes from.
    pub remote: Option<String>,
    /// How: `udp`, or `tcp` (ICE-TCP, RFC 6544).
    pub transport: Option<&'static str>,
    /// The type of the peer's candidate at that address: `host`, `srflx`, `relay` (through a
    /// TURN server) or `prflx` (learned from its checks, as behind a NAT).
    pub candidate: Option<&'static str>,
    pub duration_secs: f64,
    pub rtt_ms: Option<f64>,
    /// Fraction of packets lost towards the gateway (as reported by receiver reports).
    pub loss_in: Option<f32>,
    /// Fraction of packets lost towards the peer.
    pub loss_out: Option<f32>,
    /// Interarrival jitter of the peer's video, in 90 kHz RTP timestamp units (publishers).
    pub jitter: Option<u32>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Bits per second received and sent over the last statistics interval, every datagram
    /// counted (media, RTCP, STUN, DTLS).
    pub bitrate_in: u64,
    pub bitrate_out: u64,
    /// RTP packets received (publishers) and sent (viewers), retransmissions included.
    pub packets_in: u64,
    pub packets_out: u64,
    /// Publisher: packets that never arrived, not even retransmitted (expected from the
    /// sequence numbers minus received, as RFC 3550 §6.4.1 counts them).
    pub packets_lost_in: u64,
    /// Viewer: packets the viewer reports lost in its receiver reports (cumulative).
    pub packets_lost_out: u64,
    /// Viewer: packets sent again from its resend buffer after a NACK.
    pub packets_retransmitted: u64,
    /// NACKs sent to a publisher, or received from a viewer.
    pub nacks: u64,
    /// PLIs sent to a publisher, or received from a viewer.
    pub plis: u64,
    /// Seconds since ICE and DTLS completed; `None` while connecting.
    pub connected_secs: Option<f64>,
}

/// A stream's traffic: what its publisher sends in, and what goes out to all its viewers
/// together.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Traffic {
    /// Bits per second over the last statistics interval.
    pub bitrate_in: u64,
    pub bitrate_out: u64,
    /// RTP packets, retransmissions included.
    pub packets_in: u64,
    pub packets_out: u64,
    /// Packets from the publisher that never arrived, and packets the viewers report lost.
    pub packets_lost_in: u64,
    pub packets_lost_out: u64,
}

impl Traffic {
    fn add(&mut self, o: &Traffic) {
        self.bitrate_in += o.bitrate_in;
        self.bitrate_out += o.bitrate_out;
        self.packets_in += o.packets_in;
        self.packets_out += o.packets_out;
        self.packets_lost_in += o.packets_lost_in;
        self.packets_lost_out += o.packets_lost_out;
    }
}

/// A stream's figures on one shard, summed over its sessions there; the API adds up the shards.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StreamTotals {
    /// The publisher's state (`connecting`, `connected`) if it is on this shard.
    pub publisher_state: Option<&'static str>,
    /// Seconds since the publisher connected, if it is on this shard and connected.
    pub uptime_secs: Option<f64>,
    pub traffic: Traffic,
    pub viewers: usize,
}

impl StreamTotals {
    /// Counts one session of the stream: a publisher's figures are what comes in, viewers'
    /// what goes out.
    pub fn add_session(&mut self, s: &SessionStats) {
        let t = &mut self.traffic;
        if s.kind == "publish" {
            self.publisher_state = Some(s.state);
            self.uptime_secs = s.connected_secs;
            t.bitrate_in += s.bitrate_in;
            t.packets_in += s.packets_in;
            t.packets_lost_in += s.packets_lost_in;
        } else {
            self.viewers += 1;
            t.bitrate_out += s.bitrate_out;
            t.packets_out += s.packets_out;
            t.packets_lost_out += s.packets_lost_out;
        }
    }

    /// Adds another shard's totals of the same stream.
    pub fn merge(&mut self, o: &StreamTotals) {
        if o.publisher_state.is_some() {
            self.publisher_state = o.publisher_state;
            self.uptime_secs = o.uptime_secs;
        }
        self.traffic.add(&o.traffic);
        self.viewers += o.viewers;
    }
}

/// Messages between shards.
#[derive(Debug)]
pub enum PeerMsg {
    /// A publisher's packet for the viewers on the receiving shard.
    Media { stream: Arc<str>, pkt: MediaPacket },
    /// The GOP cache of `stream`, sent once to a shard that subscribed; live packets follow.
    Gop {
        stream: Arc<str>,
        packets: Vec<MediaPacket>,
    },
    /// Shard `shard` has viewers of `stream` now: send it the GOP cache, then every packet.
    Subscribe { stream: Arc<str>, shard: usize },
    /// Shard `shard` has no viewers of `stream` left.
    Unsubscribe { stream: Arc<str>, shard: usize },
    /// A viewer asked for a keyframe (PLI/FIR, or it just joined): of every layer, or of
    /// `layer` (a viewer moves to that simulcast layer).
    KeyframeRequest { stream: Arc<str>, layer: Option<u8> },
    /// The stream's publisher `publisher` left; its viewers stay and wait for the next one.
    PublisherLeft {
        stream: Arc<str>,
        publisher: SessionId,
    },
    /// A new publisher `publisher` of `stream` started on another shard: viewers waiting
    /// through the grace period keep waiting for its media rather than end at it.
    PublisherStarted {
        stream: Arc<str>,
        publisher: SessionId,
    },
}

/// What a shard tells the stream directory ([`crate::hub::Hub`]). The engine never reads the
/// directory: the IO layer applies these after each pass ([`HubUpdate::apply`]) and
/// delivers the [`PeerMsg`]s that come back, so the cross-shard protocol is messages only and
/// the simulation can interleave, delay or drop them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubUpdate {
    /// Shard `shard` now has (or no longer has) viewers of `stream`: the publisher's shard is
    /// sent [`PeerMsg::Subscribe`] (or [`PeerMsg::Unsubscribe`]).
    Watch {
        stream: Arc<str>,
        shard: usize,
        wants: bool,
    },
    /// Session `id` ended on shard `shard`; `by_peer` when the peer itself closed it (DTLS
    /// close_notify), so its own DELETE, racing that, still finds it ended rather than unknown.
    /// For a publisher, the other shards with viewers of its stream are sent
    /// [`PeerMsg::PublisherLeft`].
    Removed {
        id: SessionId,
        shard: usize,
        by_peer: bool,
    },
    /// Publisher `publisher` of `stream` started on shard `shard`: it is sent a
    /// [`PeerMsg::Subscribe`] for each other shard that has viewers of the stream now, and
    /// those shards a [`PeerMsg::PublisherStarted`]. Read when the session exists, not when it
    /// was registered: a shard that subscribed in between has told it already.
    PublisherStarted {
        stream: Arc<str>,
        shard: usize,
        publisher: SessionId,
    },
    /// A viewer on shard `shard` wants a keyframe and the publisher is elsewhere: its shard is
    /// sent [`PeerMsg::KeyframeRequest`].
    KeyframeWanted {
        stream: Arc<str>,
        shard: usize,
        layer: Option<u8>,
    },
    /// Session `id` runs on local ICE ufrag `ufrag` now (created, or ICE restarted): ICE-TCP
    /// connections are routed by it. Its removal ([`HubUpdate::Removed`]) drops it.
    Ufrag { id: SessionId, ufrag: String },
    /// Viewer `id` is about to be ended by the gateway (shed under overload), not by its peer
    /// or a fault: its event streams tell the player to reconnect. Its
    /// [`HubUpdate::Removed`] follows.
    Reconnect { id: SessionId },
    /// The simulcast layers of `stream` as its publisher's shard measures them, for the
    /// WHEP `layers` event; sent when they change (see `Engine::report_layers`).
    Layers {
        stream: Arc<str>,
        layers: Vec<crate::hub::LayerInfo>,
    },
}

impl HubUpdate {
    /// Applies this update to the directory and returns the messages it causes, each for a
    /// shard: the one place the shards' subscription protocol meets the directory.
    pub fn apply(self, hub: &Hub) -> Vec<(usize, PeerMsg)> {
        match self {
            HubUpdate::Watch {
                stream,
                shard,
                wants,
            } => match hub.set_viewer_shard(&stream, shard, wants) {
                Some(p) if p != shard => {
                    let msg = if wants {
                        PeerMsg::Subscribe { stream, shard }
                    } else {
                        PeerMsg::Unsubscribe { stream, shard }
                    };
                    vec![(p, msg)]
                }
                _ => Vec::new(),
            },
            HubUpdate::Removed { id, shard, by_peer } => {
                if by_peer {
                    hub.remember_closed(id);
                }
                let Some((stream, shards)) = hub.unregister(id) else {
                    return Vec::new();
                };
                // The publisher's own shard has already told its viewers.
                shards_in(shards & !(1u64 << shard))
                    .map(|k| {
                        let msg = PeerMsg::PublisherLeft {
                            stream: stream.clone(),
                            publisher: id,
                        };
                        (k, msg)
                    })
                    .collect()
            }
            HubUpdate::PublisherStarted {
                stream,
                shard,
                publisher,
            } => {
                hub.publisher_active(&stream, publisher);
                let others = hub.viewer_shards(&stream) & !(1u64 << shard);
                shards_in(others)
                    .flat_map(|k| {
                        let subscribe = PeerMsg::Subscribe {
                            stream: stream.clone(),
                            shard: k,
                        };
                        let started = PeerMsg::PublisherStarted {
                            stream: stream.clone(),
                            publisher,
                        };
                        [(shard, subscribe), (k, started)]
                    })
                    .collect()
            }
            HubUpdate::Ufrag { id, ufrag } => {
                hub.set_ufrag(id, ufrag);
                Vec::new()
            }
            HubUpdate::Reconnect { id } => {
                hub.reconnect_viewer(id);
                Vec::new()
            }
            HubUpdate::Layers { stream, layers } => {
                hub.set_layers(&stream, layers);
                Vec::new()
            }
            HubUpdate::KeyframeWanted {
                stream,
                shard,
                layer,
            } => match hub.publisher_shard(&stream) {
                Some(p) if p != shard => vec![(p, PeerMsg::KeyframeRequest { stream, layer })],
                _ => Vec::new(),
            },
        }
    }
}

/// Makes the directory forget every session of shard `shard` (whose engine was lost) and
/// returns the messages that tells the other shards: [`PeerMsg::PublisherLeft`] for its
/// publishers' viewers elsewhere, [`PeerMsg::Unsubscribe`] for streams it watched. The same
/// [`HubUpdate`]s an engine would have sent had it removed them itself.
pub fn forget_shard(hub: &Hub, shard: usize) -> Vec<(usize, PeerMsg)> {
    let mut msgs = Vec::new();
    for stream in hub.streams_watched_by(shard) {
        let update = HubUpdate::Watch {
            stream,
            shard,
            wants: false,
        };
        msgs.extend(update.apply(hub));
    }
    for id in hub.sessions_on(shard) {
        let update = HubUpdate::Removed {
            id,
            shard,
            by_peer: false,
        };
        msgs.extend(update.apply(hub));
    }
    msgs
}

/// The shard numbers in a set of shards (bit k for shard k), lowest first.
pub fn shards_in(mut set: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        (set != 0).then(|| {
            let k = set.trailing_zeros() as usize;
            set &= set - 1;
            k
        })
    })
}

/// A datagram to send.
#[derive(Debug)]
pub struct Transmit {
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_in_lists_the_set_bits_lowest_first() {
        assert_eq!(shards_in(0).count(), 0);
        assert_eq!(shards_in(0b1010_0001).collect::<Vec<_>>(), vec![0, 5, 7]);
        assert_eq!(shards_in(1 << 63).collect::<Vec<_>>(), vec![63]);
    }
}
