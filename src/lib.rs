//! # wishcast: a WebRTC broadcast gateway
//!
//! Encoders publish over WHIP (RFC 9725); any number of viewers play over WHEP. Media is
//! forwarded as RTP, never decoded or re-packetized.
//!
//! ## The design in one paragraph
//!
//! The data plane is a set of shards, one per core. Each shard's logic is an [`Engine`]: a
//! sans-IO state machine in the manner of str0m's `Rtc` and quinn-proto's `Endpoint`. It owns
//! no socket, thread, clock, lock or ambient randomness: datagrams, commands from the control
//! plane, messages from other shards and the current time go in; transmits, messages, updates
//! for the stream directory and command replies come out, in [`Engine::outbox`]. The thin IO
//! layer ([`shard::io`]) owns the UDP socket, the channels and the clock, and the simulation
//! (`sim`) drives the same engines on a fake clock and an in-memory network, so loss,
//! reordering and timeouts are tested deterministically and a seed replays a run.
//!
//! ## A packet's path
//!
//! 1. **Signalling** ([`http`], [`signalling`]): `POST /whip/{stream}` or `POST /whep/{stream}`
//!    with an SDP offer. [`signalling::admit`] checks the offer's shape ([`sdp`]), registers the
//!    session in the [`hub`] (one publisher per stream, least-loaded shard) and builds the
//!    [`shard::Command::Create`] for that shard, whose engine answers with a str0m `Rtc` in RTP
//!    mode ([`shard::engine`]'s `negotiate`).
//! 2. **Demux**: a datagram reaches its session by remote address, learned from the ufrag of a
//!    first STUN request that passes the session's ICE check ([`stun`], `demux`).
//! 3. **Fan-out** (`deliver`, [`fanout`]): a publisher's `Event::RtpPacket` becomes a
//!    [`fanout::MediaPacket`] with a shared payload. Its shard caches it (the GOP cache) and
//!    writes it to local viewers; every other shard that subscribed gets one copy as a
//!    [`shard::PeerMsg::Media`], which it caches and writes to its own viewers. Each viewer's
//!    track rewriter maps the payload type by codec, rebases sequence numbers and timestamps,
//!    continues VP8 picture numbering across a move to another layer or publisher ([`vp8`]),
//!    and holds video until a keyframe; a joining viewer starts on the cached GOP, paced
//!    (`replay`).
//! 4. **Feedback** (`keyframe`, `stats`): viewers' NACKs are answered by str0m from each
//!    viewer's resend buffer; their PLI/FIR and joins become keyframe requests to the
//!    publisher, at most one per interval, wherever the publisher is.
//! 5. **Across shards**: what a shard needs from the directory leaves as a
//!    [`shard::HubUpdate`]; the IO layer applies it ([`shard::HubUpdate::apply`]) and delivers
//!    the messages that come back (subscribe, publisher left, keyframe request). The engine
//!    never takes the hub's lock.
//!
//! ## Driving an engine
//!
//! This is the whole run loop, minus the socket: what [`shard::io`] does around `recvmmsg`
//! and what the simulation (`sim`) does around its fake network.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::{Duration, Instant};
//!
//! use str0m::media::{Direction, MediaKind};
//! use str0m::Rtc;
//! use wishcast::hub::Hub;
//! use wishcast::session::{Role, SessionId};
//! use wishcast::shard::engine::Engine;
//! use wishcast::{signalling, Config};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::default();
//! let hub = Hub::new(1);
//! let mut now = Instant::now();
//! let candidate = "127.0.0.1:5000".parse()?;
//! // Shard 0: its announced candidate, the time, and the seed of its random choices.
//! let mut engine = Engine::new(0, Arc::new(config.clone()), vec![candidate], now, 42);
//!
//! // A publisher's offer (made here by str0m), admitted as a WHIP POST would be.
//! let mut encoder = Rtc::new(now);
//! let mut sdp = encoder.sdp_api();
//! sdp.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
//! let (offer, _pending) = sdp.apply().ok_or("no offer")?;
//! let id = SessionId(1);
//! let admitted =
//!     signalling::admit(&hub, &config, id, Role::Publish, "live", &offer.to_sdp_string())?;
//! engine.handle_command(now, admitted.command);
//!
//! // Junk from an address no session knows is dropped and counted.
//! engine.handle_datagram(now, "192.0.2.7:4000".parse()?, None, &[0x80; 40]);
//! assert_eq!(engine.counters.datagrams_unknown_source, 1);
//!
//! // Time moves only when the caller says so.
//! now += Duration::from_millis(100);
//! let due = engine.poll_timeout().min(now);
//! engine.handle_timeout(due);
//!
//! // After every call, empty the outbox in this order.
//! let outbox = &mut engine.outbox;
//! for update in outbox.hub.drain(..) {
//!     outbox.messages.extend(update.apply(&hub));
//! }
//! for reply in outbox.replies.drain(..) {
//!     reply(); // here: the answer to the WHIP POST
//! }
//! for (_shard, _msg) in outbox.messages.drain(..) {
//!     // to the other shards' channels
//! }
//! for _t in outbox.transmits.drain(..) {
//!     // socket.send_to(&t.contents, t.destination)
//! }
//! let created = admitted.reply.blocking_recv()??;
//! assert!(created.answer.contains("a=recvonly"));
//! signalling::created(&hub, Role::Publish, "live", id, &created);
//! # Ok(())
//! # }
//! ```
//!
//! [`Gateway::start`] puts it together: shards on their threads, signalling on HTTP/1.1, HTTP/2
//! and HTTP/3. The test kits (`peer`, `client`, `sim`: a WHIP/WHEP peer on str0m, on real UDP
//! or on a simulated network) are built with the `testkit` feature only, which the tests,
//! examples and benches turn on.

pub mod auth;
#[cfg(any(test, feature = "testkit"))]
pub mod client;
pub mod config;
pub mod dtls;
pub mod events;
pub mod fanout;
pub mod gateway;
pub mod http;
pub mod http3;
pub mod hub;
pub mod live;
pub mod metrics;
#[cfg(any(test, feature = "testkit"))]
pub mod peer;
pub mod picture;
pub mod reload;
pub mod sdp;
pub mod session;
pub mod shard;
pub mod signalling;
#[cfg(any(test, feature = "testkit"))]
pub mod sim;
pub mod simulcast;
pub mod srtp;
pub mod stun;
pub mod tls;
pub mod twcc;
pub mod vp8;
pub mod web;

pub use config::Config;
pub use gateway::{Gateway, StartError};
pub use shard::counters::Counters;
pub use shard::engine::Engine;
