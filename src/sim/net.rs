//! The simulated wire as tests see it: parties, links, and each datagram classified by RFC 7983
//! demultiplexing before the drop and delay rules decide its fate.

use super::*;

/// A peer of the simulation, by its index in [`Sim::peers`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub usize);

/// A party on the simulated network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Node {
    /// The gateway shard with this index.
    Engine(usize),
    Peer(PeerId),
}

/// Which way a datagram goes on a peer's link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Way {
    /// Peer → gateway.
    ToGateway,
    /// Gateway → peer.
    FromGateway,
}

/// What a datagram is, by RFC 7983 demultiplexing on its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Stun,
    Dtls,
    /// SRTP: the RTP header is in the clear.
    Rtp(RtpInfo),
    /// SRTCP (encrypted; peers with [`PeerOptions::raw_packets`] log what they send and get).
    Rtcp,
    Other,
}

/// The clear-text RTP header of an SRTP datagram, and what it means on its link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpInfo {
    pub ssrc: u32,
    pub pt: u8,
    pub seq: u16,
    pub timestamp: u32,
    pub marker: bool,
    /// The media kind of `pt` among the peer's negotiated payload types.
    pub kind: Option<MediaKind>,
    /// `pt` is a retransmission (RTX, RFC 4588) payload type.
    pub rtx: bool,
    /// How many RTP packets of this SSRC went this way on this link before this one (dropped
    /// ones included): 0 for the first.
    pub nth: u64,
}

/// A datagram about to be sent, as the drop and delay rules see it.
#[derive(Debug)]
pub struct Datagram<'a> {
    /// When it is sent.
    pub at: Instant,
    pub way: Way,
    /// The peer whose link it travels on.
    pub peer: PeerId,
    /// The gateway shard at the other end.
    pub shard: usize,
    /// How many datagrams went this way on this link before this one (dropped ones included).
    pub nth: u64,
    pub class: Class,
    pub contents: &'a [u8],
}

impl Datagram<'_> {
    pub fn rtp(&self) -> Option<&RtpInfo> {
        match &self.class {
            Class::Rtp(r) => Some(r),
            _ => None,
        }
    }

    /// A video media packet (not a retransmission).
    pub fn is_video_media(&self) -> bool {
        self.rtp()
            .is_some_and(|r| r.kind == Some(MediaKind::Video) && !r.rtx)
    }
}

/// What went over one direction of a peer's link (counted when sent, so dropped ones too).
#[derive(Clone, Debug, Default)]
pub struct LinkStats {
    pub datagrams: u64,
    pub bytes: u64,
    pub stun: u64,
    pub dtls: u64,
    pub rtp: u64,
    /// RTP packets with an RTX payload type: retransmissions answering NACKs.
    pub rtx: u64,
    pub rtcp: u64,
    /// Datagrams the drop rule removed.
    pub dropped: u64,
    pub(super) per_ssrc: Vec<(u32, u64)>,
}
