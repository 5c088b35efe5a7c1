//! A record of everything that crossed the simulated wire and the shard channels, to show that a
//! seed replays a run. Each line holds the simulated time, the parties and what a datagram's
//! clear text says: STUN whole, the RTP header, the RTCP packet's first word, the DTLS record
//! header. Left out is what no seed reaches: DTLS's cryptographic randomness (keys, so
//! ciphertext, and signature lengths) and RTCP's sender SSRC, which str0m picks by hash-map
//! iteration.

use std::fmt::Write as _;

use super::*;

impl Node {
    fn tag(self) -> String {
        match self {
            Node::Engine(k) => format!("e{k}"),
            Node::Peer(p) => format!("p{}", p.0),
        }
    }
}

impl Sim {
    /// Starts (or stops) recording the run log.
    pub fn record_log(&mut self, on: bool) {
        self.log = on.then(Vec::new);
    }

    /// The run log recorded so far.
    pub fn log(&self) -> &[u8] {
        self.log.as_deref().unwrap_or_default()
    }

    fn log_line(&mut self, line: impl FnOnce(&mut String)) {
        let t = self.elapsed().as_nanos();
        if let Some(log) = &mut self.log {
            let mut s = format!("{t} ");
            line(&mut s);
            s.push('\n');
            log.extend_from_slice(s.as_bytes());
        }
    }

    pub(super) fn log_datagram(&mut self, from: Node, to: Node, class: &Class, data: &[u8]) {
        if self.log.is_none() {
            return;
        }
        let (what, clear) = match class {
            Class::Stun => ("stun", data.len()),
            Class::Dtls => ("dtls", data.len().min(11)),
            Class::Rtp(_) => ("rtp", data.len().min(12)),
            Class::Rtcp => ("rtcp", data.len().min(4)),
            Class::Other => ("other", data.len()),
        };
        // A DTLS record's length depends on its signature's, which is random.
        let len = if matches!(class, Class::Dtls) {
            0
        } else {
            data.len()
        };
        self.log_line(|s| {
            let _ = write!(s, "{}>{} {what} {len} ", from.tag(), to.tag());
            for b in &data[..clear] {
                let _ = write!(s, "{b:02x}");
            }
        });
    }

    pub(super) fn log_message(&mut self, from: usize, to: usize, msg: &PeerMsg, fate: Fate) {
        if self.log.is_none() {
            return;
        }
        let detail = match msg {
            PeerMsg::Media { stream, pkt } => format!("media {stream} {} {}", pkt.seq, pkt.time),
            PeerMsg::Gop { stream, packets } => format!("gop {stream} {}", packets.len()),
            PeerMsg::Subscribe { stream, shard } => format!("subscribe {stream} {shard}"),
            PeerMsg::Unsubscribe { stream, shard } => format!("unsubscribe {stream} {shard}"),
            PeerMsg::KeyframeRequest { stream, layer } => match layer {
                Some(l) => format!("keyframe {stream} layer {l}"),
                None => format!("keyframe {stream}"),
            },
            PeerMsg::PublisherLeft { stream, publisher } => format!("left {stream} {publisher}"),
            PeerMsg::PublisherStarted { stream, publisher } => {
                format!("started {stream} {publisher}")
            }
        };
        self.log_line(|s| {
            let _ = write!(s, "e{from}>e{to} {detail} {fate:?}");
        });
    }
}
