//! A peer on the simulated network: a [`PeerCore`] on an address, with what only the simulation
//! needs around it (its session on the gateway, its link, its feed, its timer).

use super::*;

pub use crate::peer::{PeerOptions, ReceivedFrame, RtcpLog};

/// Why a simulated session could not be set up or used.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("peer {0:?}: {1}")]
    Peer(PeerId, #[source] PeerError),
    #[error("the gateway would refuse the offer: {0}")]
    Offer(#[from] OfferError),
    #[error("the hub refused the session: {0:?}")]
    Claim(ClaimError),
    #[error("the shard refused the session: {0}")]
    Session(#[from] SessionError),
    #[error("the shard did not reply to the command")]
    NoReply,
    #[error("the gateway answered an ICE restart as a trickle")]
    NotRestarted,
}

/// A str0m peer on the simulated network.
///
/// It derefs to its [`PeerCore`] for everything about the WebRTC session (state, received
/// frames, counters, RTCP logs); only the simulation drives the core.
pub struct Peer {
    pub id: PeerId,
    pub stream: Arc<str>,
    /// The gateway session serving it.
    pub session: SessionId,
    pub shard: usize,
    pub addr: SocketAddr,
    /// The session's ETag, for `If-Match` on a PATCH.
    pub etag: String,
    /// Peer → gateway.
    pub up: LinkStats,
    /// Gateway → peer.
    pub down: LinkStats,
    pub feed: Option<Feed>,
    pub(super) core: PeerCore,
    /// Negotiated payload types: (pt, kind, is RTX), for classifying RTP on the wire.
    pub(super) pts: Vec<(u8, MediaKind, bool)>,
    /// The core's timeout as last put on the simulation's timer heap.
    pub(super) next_timeout: Option<Instant>,
    /// Counted in [`Sim::connected_count`].
    counted: bool,
    /// The address a NAT in front of the peer maps `addr` to, after [`super::Sim::rebind`]:
    /// what the gateway sees its datagrams come from, and where it must send.
    pub(super) mapped: Option<SocketAddr>,
}

impl std::ops::Deref for Peer {
    type Target = PeerCore;

    fn deref(&self) -> &PeerCore {
        &self.core
    }
}

impl Peer {
    /// The m-line a received SSRC belongs to (see [`PeerCore::rx_mid`]).
    pub fn rx_mid(&mut self, ssrc: u32) -> Option<str0m::media::Mid> {
        self.core.rx_mid(ssrc)
    }

    /// The SSRC of its video, of layer `rid` (see [`PeerCore::video_send_ssrc`]).
    pub fn video_send_ssrc(&mut self, rid: Option<&str>) -> Option<u32> {
        self.core.video_send_ssrc(rid)
    }

    pub(super) fn new(
        id: PeerId,
        stream: &str,
        session: SessionId,
        addr: SocketAddr,
        core: PeerCore,
    ) -> Peer {
        Peer {
            id,
            stream: Arc::from(stream),
            session,
            shard: 0,
            addr,
            etag: String::new(),
            up: LinkStats::default(),
            down: LinkStats::default(),
            feed: None,
            core,
            pts: Vec::new(),
            next_timeout: None,
            counted: false,
            mapped: None,
        }
    }

    /// Whether the peer now counts as connected (it connected and has not ended since), if
    /// that changed since the last call.
    pub(super) fn recount(&mut self) -> Option<bool> {
        let live = self.core.connected_at().is_some() && !self.core.is_closed();
        (live != self.counted).then(|| {
            self.counted = live;
            live
        })
    }

    /// Writes the feed's next frame if one is due by `now`; false if none is. A write str0m
    /// refuses (before the peer connected, say) is counted by the core.
    pub(super) fn write_due(&mut self, now: Instant) -> bool {
        let Some(feed) = self.feed.as_mut() else {
            return false;
        };
        let Some(frame) = feed.take_due(now, self.core.stats().keyframe_requests) else {
            return false;
        };
        let _ = self.core.write_layer(
            now,
            frame.kind,
            frame.rid.as_deref(),
            frame.rtp_time,
            frame.data,
        );
        true
    }

    pub(super) fn classify(&mut self, way: Way, data: &[u8]) -> Class {
        let Some(&b0) = data.first() else {
            return Class::Other;
        };
        match b0 {
            0..=3 => Class::Stun,
            20..=63 => Class::Dtls,
            128..=191 if data.len() >= 12 => {
                let b1 = data[1];
                if (192..=223).contains(&b1) {
                    return Class::Rtcp;
                }
                let pt = b1 & 0x7f;
                let ssrc = u32::from_be_bytes([data[8], data[9], data[10], data[11]]);
                let (kind, rtx) = self
                    .pts
                    .iter()
                    .find(|(p, _, _)| *p == pt)
                    .map(|(_, k, r)| (Some(*k), *r))
                    .unwrap_or((None, false));
                let link = match way {
                    Way::ToGateway => &mut self.up,
                    Way::FromGateway => &mut self.down,
                };
                let nth = match link.per_ssrc.iter_mut().find(|(s, _)| *s == ssrc) {
                    Some((_, n)) => {
                        *n += 1;
                        *n - 1
                    }
                    None => {
                        link.per_ssrc.push((ssrc, 1));
                        0
                    }
                };
                Class::Rtp(RtpInfo {
                    ssrc,
                    pt,
                    seq: u16::from_be_bytes([data[2], data[3]]),
                    timestamp: u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
                    marker: b1 & 0x80 != 0,
                    kind,
                    rtx,
                    nth,
                })
            }
            _ => Class::Other,
        }
    }
}
