//! # wishcast: a WebRTC broadcast gateway
//!
//! Encoders publish over WHIP (RFC 9725); any number of viewers play over WHEP. Media is
//! forwarded as RTP, never decoded or re-packetized.
//!
//! ## A packet's path
//!
//! 1. **Signalling** ([`http`]): `POST /whip/{stream}` or `POST /whep/{stream}` with an SDP offer.
//!    The handler checks the offer's shape ([`sdp`]), registers the session in the [`hub`] (one
//!    publisher per stream, least-loaded shard) and sends the offer to that shard, which answers
//!    with a str0m `Rtc` in RTP mode.
//! 2. **Shards** ([`shard`]): one thread per core, each owning a UDP socket on its own port and the
//!    sessions placed there. [`shard::engine::Engine`] is sans-IO: it takes
//!    `(now, source, datagram)`, commands and messages, and leaves transmits in its outbox;
//!    [`shard::io`] owns the socket and the clock. Datagrams reach their session through an index
//!    by remote address, learned from the ufrag of the first STUN request ([`stun`]).
//! 3. **Fan-out** ([`fanout`]): a publisher's `Event::RtpPacket` becomes a `MediaPacket` with a
//!    shared payload. Its shard caches it (the GOP cache) and writes it to local viewers; every
//!    other shard with viewers gets one copy, which it caches and writes to its own viewers. Each
//!    viewer's track rewriter maps the payload type by codec, rebases sequence numbers and
//!    timestamps, and holds video until a keyframe.
//! 4. **Feedback**: viewers' NACKs are answered by str0m from each viewer's resend buffer; their
//!    PLI/FIR and joins become keyframe requests to the publisher, at most one per interval.
//!
//! [`Gateway::start`] puts it together. The test kits (`peer`, `client`, `sim`: a WHIP/WHEP peer
//! on str0m, on real UDP or on a simulated network) are built with the `testkit` feature only.

pub mod auth;
#[cfg(any(test, feature = "testkit"))]
pub mod client;
pub mod config;
pub mod fanout;
pub mod gateway;
pub mod http;
pub mod http3;
pub mod hub;
pub mod metrics;
#[cfg(any(test, feature = "testkit"))]
pub mod peer;
pub mod sdp;
pub mod session;
pub mod shard;
#[cfg(any(test, feature = "testkit"))]
pub mod sim;
pub mod stun;
pub mod tls;
pub mod web;

pub use config::Config;
pub use gateway::{Gateway, StartError, Stats};
