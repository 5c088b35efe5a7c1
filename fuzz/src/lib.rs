//! What the fuzz targets share: one shard engine driven the way the IO layer drives it, and
//! real offers made by the test kit's str0m peer.
//!
//! The engine's clock only moves when a target moves it, so sessions created here never time
//! out behind the fuzzer's back: each target removes what it created.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use wishcast::hub::Hub;
use wishcast::peer::{PeerCore, PeerOptions, VideoCodec};
use wishcast::sdp::Fragment;
use wishcast::session::{Role, SessionId};
use wishcast::shard::engine::Engine;
use wishcast::shard::{Command, Created, Patched, SessionError};
use wishcast::signalling::{self, AdmitError};
use wishcast::Config;

/// Where the engine's host candidate is.
pub const ENGINE_ADDR: &str = "127.0.0.1:5000";

/// One shard engine with its hub, as the gateway has them, on a clock the caller moves.
pub struct Shard {
    pub config: Arc<Config>,
    pub hub: Arc<Hub>,
    pub engine: Engine,
    pub now: Instant,
    next_id: u128,
}

/// Why a session was not created.
#[derive(Debug)]
pub enum CreateError {
    Admit(AdmitError),
    Shard(SessionError),
    NoReply,
}

impl Shard {
    pub fn new() -> Shard {
        let config = Arc::new(Config::default());
        let now = Instant::now();
        let addr: SocketAddr = ENGINE_ADDR.parse().expect("engine address");
        let engine = Engine::new(0, config.clone(), vec![addr], now, 7);
        Shard {
            hub: Arc::new(Hub::new(1)),
            config,
            engine,
            now,
            next_id: 1,
        }
    }

    /// Empties the outbox in the IO layer's order: hub updates, replies, messages, transmits.
    pub fn flush(&mut self) {
        let outbox = &mut self.engine.outbox;
        for update in outbox.hub.drain(..) {
            let _ = update.apply(&self.hub);
        }
        for reply in outbox.replies.drain(..) {
            reply();
        }
        outbox.messages.clear();
        outbox.transmits.clear();
    }

    /// A WHIP or WHEP POST of `offer` to `stream`, as the HTTP handler does it.
    pub fn create(
        &mut self,
        role: Role,
        stream: &str,
        offer: &str,
    ) -> Result<(SessionId, Created), CreateError> {
        let id = SessionId(self.next_id);
        self.next_id += 1;
        let admitted = signalling::admit(&self.hub, &self.config, id, role, stream, offer)
            .map_err(CreateError::Admit)?;
        let mut reply = admitted.reply;
        self.engine.handle_command(self.now, admitted.command);
        self.flush();
        match reply.try_recv() {
            Ok(Ok(created)) => {
                signalling::created(&self.hub, role, &admitted.stream, id, &created);
                Ok((id, created))
            }
            Ok(Err(e)) => {
                signalling::abandoned(&self.hub, id);
                Err(CreateError::Shard(e))
            }
            Err(_) => {
                signalling::abandoned(&self.hub, id);
                Err(CreateError::NoReply)
            }
        }
    }

    /// `DELETE` of session `id`.
    pub fn delete(&mut self, id: SessionId) -> Result<(), SessionError> {
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        self.engine
            .handle_command(self.now, Command::Delete { id, reply: tx });
        self.flush();
        rx.try_recv().unwrap_or(Err(SessionError::NotFound))
    }

    /// `PATCH` of session `id` with `fragment`.
    pub fn patch(
        &mut self,
        id: SessionId,
        fragment: Fragment,
        if_match: Option<&str>,
    ) -> Result<Patched, SessionError> {
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let cmd = Command::Patch {
            id,
            fragment,
            if_match: if_match.map(str::to_string),
            reply: tx,
        };
        self.engine.handle_command(self.now, cmd);
        self.flush();
        rx.try_recv().unwrap_or(Err(SessionError::NotFound))
    }
}

impl Default for Shard {
    fn default() -> Self {
        Shard::new()
    }
}

/// A real offer from the test kit's str0m peer: `video` (or none) plus Opus when `audio`.
pub fn offer(role: Role, video: Option<VideoCodec>, audio: bool) -> String {
    let opts = PeerOptions {
        video,
        audio,
        ..PeerOptions::default()
    };
    let now = Instant::now();
    let mut peer = PeerCore::new(role, opts.clone(), PeerCore::rtc_config(&opts), now);
    let local: SocketAddr = "127.0.0.1:40000".parse().expect("peer address");
    peer.offer(now, local).expect("the test kit makes an offer")
}
