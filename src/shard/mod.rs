//! Data-plane shards: one thread per core, each with its own UDP socket and sessions.
//!
//! [`engine`] is the sans-IO state machine (datagrams, commands and time in; transmits and
//! messages to other shards out); [`io`] is the thread that owns the socket and drives it.

pub mod engine;
pub mod io;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::fanout::MediaPacket;
use crate::hub::SessionId;
use crate::sdp::{Fragment, OfferError, Role};

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
    Shutdown,
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
    /// A viewer asked for a keyframe (PLI/FIR, or it just joined).
    KeyframeRequest { stream: Arc<str> },
    /// The stream's publisher `publisher` left; its viewers stay and wait for the next one.
    PublisherLeft {
        stream: Arc<str>,
        publisher: SessionId,
    },
}

/// A datagram to send.
#[derive(Debug)]
pub struct Transmit {
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
}
