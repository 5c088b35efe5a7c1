//! The WebRTC peer the test kits are built on: a WHIP publisher or WHEP viewer on a str0m `Rtc`
//! in frame mode, sans-IO.
//!
//! [`PeerCore`] is everything about being such a peer that does not depend on where datagrams
//! and time come from: the offer, the answer, ICE restarts, writing and receiving frames,
//! keyframe requests, statistics. Its two shells supply the IO: [`crate::client::Peer`] runs it
//! on a real UDP socket and the real clock, [`crate::sim::Peer`] on the simulated network and
//! its fake clock. [`Feed`] is the synthetic encoder either of them can publish, and
//! [`media`] the frames it generates.

mod core;
mod feed;
pub mod media;
mod rtcp;
mod vp8;

pub use self::core::{PeerCore, TCP_ACTIVE_PORT};
pub use feed::{Feed, FeedFrame};
pub use rtcp::RtcpLog;

use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::format::Codec;
use str0m::media::{MediaKind, Mid};
use str0m::RtcError;

/// Video codec a peer offers; exactly one per peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    H264,
    Vp8,
    Vp9,
    Av1,
}

impl VideoCodec {
    /// The str0m codec this maps to.
    pub fn codec(self) -> Codec {
        match self {
            VideoCodec::H264 => Codec::H264,
            VideoCodec::Vp8 => Codec::Vp8,
            VideoCodec::Vp9 => Codec::Vp9,
            VideoCodec::Av1 => Codec::Av1,
        }
    }

    /// The video codec for a str0m codec, if it is one of these.
    pub fn from_codec(codec: Codec) -> Option<Self> {
        match codec {
            Codec::H264 => Some(VideoCodec::H264),
            Codec::Vp8 => Some(VideoCodec::Vp8),
            Codec::Vp9 => Some(VideoCodec::Vp9),
            Codec::Av1 => Some(VideoCodec::Av1),
            _ => None,
        }
    }

    /// Parse a command-line name (`h264`, `vp8`, `vp9`, `av1`, any case).
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "h264" | "avc" => Some(VideoCodec::H264),
            "vp8" => Some(VideoCodec::Vp8),
            "vp9" => Some(VideoCodec::Vp9),
            "av1" => Some(VideoCodec::Av1),
            _ => None,
        }
    }
}

impl From<VideoCodec> for Codec {
    fn from(codec: VideoCodec) -> Codec {
        codec.codec()
    }
}

/// What a peer offers and what it keeps of what it receives.
#[derive(Clone, Debug)]
pub struct PeerOptions {
    /// Video m-line with exactly this codec, or no video.
    pub video: Option<VideoCodec>,
    /// Opus audio m-line.
    pub audio: bool,
    /// Keep every received frame ([`PeerCore::frames`]); counters are kept either way. The
    /// client hands kept frames on to `next_frame`, so without this it receives none.
    pub record_frames: bool,
    /// Log decrypted RTCP feedback ([`PeerCore::rtcp_in`], [`PeerCore::rtcp_out`]); costs a
    /// copy per packet.
    pub raw_packets: bool,
    /// str0m statistics events every so often ([`PeerCore::egress`], [`PeerCore::ingress`]).
    pub stats_interval: Option<Duration>,
    /// Viewer: ask for a keyframe (PLI) when video cannot be decoded, as a browser does:
    /// a frame after a gap that was not repaired, or video that did not start on a
    /// keyframe. At most one request per [`KEYFRAME_REQUEST_GAP`].
    pub request_keyframes: bool,
    /// Offer `a=setup:active` instead of `actpass`, so that the peer is the DTLS client
    /// (RFC 5763 §5) and signs its CertificateVerify, and the gateway the server; str0m
    /// reads the `passive` answer the same either way.
    pub dtls_active: bool,
    /// Publisher: send video as simulcast (RFC 8853), one layer per rid, in this order in
    /// the offer; empty for one stream. [`Feed::with_layers`] generates the layers' frames.
    pub simulcast: Vec<String>,
    /// Negotiate the abs-capture-time header extension; a publisher stamps each video frame
    /// with [`capture_time`] of its RTP time, a viewer records what arrives
    /// ([`ReceivedFrame::capture_time`]).
    pub abs_capture_time: bool,
    /// Viewer: negotiate the playout-delay header extension and record what arrives
    /// ([`ReceivedFrame::playout_delay`]).
    pub playout_delay: bool,
    /// Publisher: send VP8 with the payload descriptor an encoder writes (a 15-bit picture
    /// id, TL0PICIDX and KEYIDX; RFC 7741 §4.2), packetized here rather than by str0m, whose
    /// packetizer writes none of them. Each simulcast layer numbers from its own random start,
    /// as separate encoders do. A viewer logs what arrives either way ([`ReceivedFrame::vp8`]).
    pub vp8_picture_ids: bool,
}

/// The capture time a test publisher stamps on a video frame of RTP time `rtp_time` (90 kHz):
/// a fixed origin plus that time, so a viewer can check what arrived against the frame.
pub fn capture_time(rtp_time: u64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH
        + Duration::from_secs(1_800_000_000)
        + Duration::from_micros(rtp_time * 1_000_000 / 90_000)
}

/// Least time between a viewer's own keyframe requests ([`PeerOptions::request_keyframes`]).
pub const KEYFRAME_REQUEST_GAP: Duration = Duration::from_millis(300);

impl Default for PeerOptions {
    /// H264 + Opus, recording frames and RTCP.
    fn default() -> Self {
        PeerOptions {
            video: Some(VideoCodec::H264),
            audio: true,
            record_frames: true,
            raw_packets: true,
            stats_interval: None,
            request_keyframes: false,
            dtls_active: false,
            simulcast: Vec::new(),
            abs_capture_time: false,
            playout_delay: false,
            vp8_picture_ids: false,
        }
    }
}

impl PeerOptions {
    /// `codec` + Opus, recording frames and RTCP.
    pub fn with_video(codec: VideoCodec) -> PeerOptions {
        PeerOptions {
            video: Some(codec),
            ..PeerOptions::default()
        }
    }

    /// A cheap viewer for scale runs: counts frames, keeps none, logs no RTCP.
    pub fn sink(video: VideoCodec) -> PeerOptions {
        PeerOptions {
            video: Some(video),
            audio: true,
            record_frames: false,
            raw_packets: false,
            stats_interval: None,
            request_keyframes: false,
            dtls_active: false,
            simulcast: Vec::new(),
            abs_capture_time: false,
            playout_delay: false,
            vp8_picture_ids: false,
        }
    }
}

/// One depacketized frame from the remote side (`Event::MediaData`).
#[derive(Clone, Debug)]
pub struct ReceivedFrame {
    /// When the datagram that completed it was handed to the peer.
    pub at: Instant,
    pub kind: MediaKind,
    pub codec: Codec,
    pub mid: Mid,
    /// RTP time in the codec clock (90 kHz video, 48 kHz Opus), as str0m extends it past the
    /// 32-bit wire field.
    pub rtp_time: u64,
    /// False if packets were lost since the previous frame of this stream.
    pub contiguous: bool,
    /// str0m's codec-level keyframe flag.
    pub keyframe: bool,
    pub data: Arc<[u8]>,
    /// The abs-capture-time header extension's capture time, if the frame carried one.
    pub capture_time: Option<std::time::SystemTime>,
    /// The playout-delay header extension's min and max, in milliseconds, if it carried one.
    pub playout_delay: Option<(u64, u64)>,
    /// VP8: the payload descriptors of the frame's packets in arrival order, resends
    /// included (needs [`PeerOptions::raw_packets`]); empty for other codecs.
    pub vp8: Vec<crate::vp8::Descriptor>,
}

/// Connection state of a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// ICE/DTLS not finished yet.
    Connecting,
    /// `Event::Connected` seen and ICE not disconnected since.
    Connected,
    /// ICE reported disconnected (e.g. consent lost); may recover.
    Disconnected,
    /// The peer takes no further part; the reason says why.
    Closed(String),
}

/// Traffic counters of a peer, and when its connection came up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerStats {
    pub video_frames: u64,
    pub audio_frames: u64,
    /// Video frames str0m delivered with `contiguous == false` (a gap before them).
    pub discontinuities: u64,
    pub bytes_received: u64,
    /// Received frames the shell could not hand on (the client's queue was full).
    pub frames_dropped: u64,
    /// Writes that failed (no track, not connected, no negotiated payload type, str0m refused).
    pub write_errors: u64,
    /// Datagrams str0m refused; not fatal to the peer.
    pub input_errors: u64,
    /// `Event::KeyframeRequest`s: PLI/FIR from the remote, coalesced by str0m per poll.
    pub keyframe_requests: u64,
    /// When ICE first connected, and when DTLS finished after it (`Event::Connected`).
    pub ice_connected_at: Option<std::time::Instant>,
    pub connected_at: Option<std::time::Instant>,
}

impl PeerStats {
    /// Video and audio frames received.
    pub fn frames_received(&self) -> u64 {
        self.video_frames + self.audio_frames
    }
}

/// Why a peer could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("str0m: {0}")]
    Rtc(#[from] RtcError),
    #[error("invalid local candidate: {0}")]
    Candidate(String),
    #[error("str0m produced no offer")]
    NoOffer,
    #[error("no offer is waiting for an answer")]
    NoPendingOffer,
    #[error("the answer is not SDP: {0}")]
    Answer(String),
    #[error("no {0:?} track")]
    NoTrack(MediaKind),
    #[error("not connected")]
    NotConnected,
    #[error("no negotiated payload type for {0:?}")]
    NoPayloadType(MediaKind),
    #[error("closed: {0}")]
    Closed(String),
}

/// Media kind of a str0m codec: str0m reports received frames by codec, not kind.
fn kind_of(codec: Codec) -> MediaKind {
    if codec.is_audio() {
        MediaKind::Audio
    } else {
        MediaKind::Video
    }
}

/// Index of a kind in per-kind arrays: video, audio.
fn slot(kind: MediaKind) -> usize {
    match kind {
        MediaKind::Video => 0,
        MediaKind::Audio => 1,
    }
}
