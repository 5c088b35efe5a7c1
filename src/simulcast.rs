//! Simulcast (RFC 8853): a publisher's video as several layers, each its own RTP stream, and
//! which one each viewer follows.
//!
//! - [`Layers`]: per stream and shard, each layer's GOP cache and measured bitrate. A layer is
//!   numbered by the publisher's shard in the order its first packet came, and named by its
//!   rid. Layers are ranked by measured bitrate, never by rid: OBS calls its largest layer
//!   "0", browsers call theirs "h".
//! - [`LayerChoice`]: per viewer, the layer it plays and the one it moves to. A move happens at
//!   a keyframe of the new layer, so the viewer's decoder never gets a frame it cannot use.
//!
//! A stream without simulcast is one layer, number 0, without a rid.

use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::media::Rid;

use crate::fanout::{MediaPacket, Pushed, StreamCache};
use crate::session::SessionId;

/// The window over which a layer's bitrate is measured.
const RATE_WINDOW: Duration = Duration::from_millis(1000);

/// A layer must carry this much more than the one a viewer plays before automatic choice
/// moves the viewer up to it (and this much less to move it down): measured rates move with
/// keyframes, and a viewer should not flap between layers of about the same rate.
const HYSTERESIS: f64 = 1.25;

/// Bytes over fixed windows: the last whole window's rate, and the current window's bytes.
#[derive(Debug, Default, Clone)]
pub struct RateMeter {
    window_start: Option<Instant>,
    bytes: u64,
    /// Bits per second over the last whole window; `None` before one ended.
    rate: Option<u64>,
}

impl RateMeter {
    pub fn add(&mut self, now: Instant, bytes: usize) {
        let start = *self.window_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= RATE_WINDOW {
            self.rate = Some((self.bytes * 8 * 1000) / elapsed.as_millis().max(1) as u64);
            self.bytes = 0;
            self.window_start = Some(now);
        }
        self.bytes += bytes as u64;
    }

    /// Bits per second over the last whole window.
    pub fn rate(&self) -> Option<u64> {
        self.rate
    }

    /// For ranking before a window ended: the rate if known, else the bytes so far.
    fn rank(&self) -> u64 {
        self.rate.unwrap_or(self.bytes * 8)
    }
}

/// One layer of a stream as a shard sees it.
#[derive(Debug)]
pub struct Layer {
    pub rid: Option<Rid>,
    pub cache: StreamCache,
    pub meter: RateMeter,
}

/// The layers of one stream on one shard, indexed by layer number.
#[derive(Debug)]
pub struct Layers {
    layers: Vec<Layer>,
    keep_gop: bool,
    max_packets: usize,
    /// The publisher the layers are of: a new one starts from nothing.
    publisher: Option<SessionId>,
}

impl Layers {
    pub fn new(keep_gop: bool, max_packets: usize) -> Layers {
        Layers {
            layers: Vec::new(),
            keep_gop,
            max_packets,
            publisher: None,
        }
    }

    /// The publisher whose layers these are, if any packet came.
    pub fn publisher(&self) -> Option<SessionId> {
        self.publisher
    }

    /// Forgets everything: the publisher left, the next one starts from its own keyframe.
    pub fn reset(&mut self) {
        self.layers.clear();
        self.publisher = None;
    }

    /// Caches and measures a video packet in its layer.
    pub fn push(&mut self, pkt: Arc<MediaPacket>) -> Pushed {
        if self.publisher != Some(pkt.publisher) {
            self.reset();
            self.publisher = Some(pkt.publisher);
        }
        let index = usize::from(pkt.layer);
        while self.layers.len() <= index {
            self.layers.push(Layer {
                rid: None,
                cache: StreamCache::new(self.keep_gop, self.max_packets),
                meter: RateMeter::default(),
            });
        }
        let layer = &mut self.layers[index];
        layer.rid = pkt.rid;
        layer.meter.add(pkt.received, pkt.payload.len());
        layer.cache.push(pkt)
    }

    pub fn get(&self, layer: u8) -> Option<&Layer> {
        self.layers.get(usize::from(layer))
    }

    pub fn iter(&self) -> impl Iterator<Item = (u8, &Layer)> {
        self.layers.iter().enumerate().map(|(i, l)| (i as u8, l))
    }

    pub fn len(&self) -> usize {
        self.layers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// The cached GOP of `layer`, if it holds a keyframe.
    pub fn gop(&self, layer: u8) -> Option<&[Arc<MediaPacket>]> {
        self.get(layer).and_then(|l| l.cache.gop())
    }

    /// Every layer's cached packets, for a shard that subscribes.
    pub fn all(&self) -> impl Iterator<Item = &Arc<MediaPacket>> {
        self.layers.iter().flat_map(|l| l.cache.all())
    }

    /// The layer with the most bits per second.
    pub fn best(&self) -> Option<u8> {
        self.iter()
            .max_by_key(|(_, l)| l.meter.rank())
            .map(|(i, _)| i)
    }

    /// The layer named `rid`.
    pub fn by_rid(&self, rid: &Rid) -> Option<u8> {
        self.iter()
            .find(|(_, l)| l.rid.as_ref() == Some(rid))
            .map(|(i, _)| i)
    }

    /// Where automatic choice puts a viewer that plays `current`: the best layer, unless
    /// it is not clearly better than the current one ([`HYSTERESIS`]).
    pub fn auto_choice(&self, current: Option<u8>) -> Option<u8> {
        let best = self.best()?;
        let Some(current) = current.filter(|c| self.get(*c).is_some()) else {
            return Some(best);
        };
        let rate = |l: u8| self.get(l).map_or(0, |l| l.meter.rank()) as f64;
        if rate(best) > rate(current) * HYSTERESIS {
            Some(best)
        } else {
            Some(current)
        }
    }
}

/// What a viewer does with a video packet of some layer ([`LayerChoice::on_video`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Take {
    /// The layer it plays: the usual path.
    Forward,
    /// The first packet of a keyframe of the layer it waits for: it starts on that
    /// keyframe's frame, with its sequence numbers and timestamps continuing its own.
    Start,
    /// Another layer's.
    Skip,
}

/// Which layer a viewer plays, and which it moves to at that layer's next keyframe.
#[derive(Debug, Default, Clone)]
pub struct LayerChoice {
    pub current: Option<u8>,
    pub target: Option<u8>,
    /// Chosen by the viewer (the WHEP layer extension); `None` for automatic choice.
    pub pinned: Option<Rid>,
}

impl LayerChoice {
    /// A video packet of `layer` came; `keyframe_start` if it starts a keyframe in the
    /// layer's cache.
    pub fn on_video(&mut self, layer: u8, keyframe_start: bool) -> Take {
        if self.current == Some(layer) {
            return Take::Forward;
        }
        let waited = match self.target {
            Some(t) => t == layer,
            // Not playing and nothing chosen yet (no layer was known at the join): the first
            // keyframe of any layer starts it; automatic choice moves it on from there.
            None => self.current.is_none(),
        };
        if waited && keyframe_start {
            self.current = Some(layer);
            self.target = None;
            return Take::Start;
        }
        Take::Skip
    }

    /// Starts playing `layer` now (from the GOP cache).
    pub fn start_on(&mut self, layer: u8) {
        self.current = Some(layer);
        self.target = None;
    }

    /// Moves to `layer` at its next keyframe; true if that is a change to ask a keyframe for.
    pub fn aim(&mut self, layer: u8) -> bool {
        if self.current == Some(layer) {
            self.target = None;
            return false;
        }
        let changed = self.target != Some(layer);
        self.target = Some(layer);
        changed
    }

    /// The publisher changed: its layers are new.
    pub fn reset(&mut self) {
        self.current = None;
        self.target = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_move_waits_for_the_target_layers_keyframe() {
        let mut c = LayerChoice::default();
        // Nothing known at the join: the first keyframe of any layer starts it.
        assert_eq!(c.on_video(1, false), Take::Skip);
        assert_eq!(c.on_video(1, true), Take::Start);
        assert_eq!(c.current, Some(1));
        assert!(c.aim(0));
        assert!(!c.aim(0), "asked once");
        assert_eq!(
            c.on_video(1, false),
            Take::Forward,
            "plays on until the switch"
        );
        assert_eq!(c.on_video(0, false), Take::Skip, "not on a delta frame");
        assert_eq!(
            c.on_video(2, true),
            Take::Skip,
            "not another layer's keyframe"
        );
        assert_eq!(c.on_video(0, true), Take::Start);
        assert_eq!((c.current, c.target), (Some(0), None));
        assert_eq!(c.on_video(1, true), Take::Skip);
    }

    fn packet(layer: u8, at: Instant, bytes: usize) -> Arc<MediaPacket> {
        let params = *str0m::format::CodecConfig::new_with_defaults()
            .find(|p| p.spec().codec == str0m::format::Codec::Vp8)
            .expect("VP8 in str0m's defaults");
        Arc::new(MediaPacket {
            publisher: SessionId(1),
            kind: crate::sdp::Kind::Video,
            layer,
            rid: Some(Rid::from(["h", "l"][usize::from(layer)])),
            params,
            seq: 0,
            time: 0,
            marker: false,
            keyframe: false,
            payload: vec![0u8; bytes].into(),
            received: at,
        })
    }

    #[test]
    fn layers_rank_by_measured_rate_with_hysteresis() {
        let mut layers = Layers::new(true, 100);
        let t0 = Instant::now();
        // Layer 0 ("h") carries 1000 bytes per 100 ms, layer 1 ("l") 1100: "l" is best by
        // its rate, whatever its name says.
        for i in 0..=10u64 {
            let at = t0 + Duration::from_millis(100 * i);
            layers.push(packet(0, at, 1000));
            layers.push(packet(1, at, 1100));
        }
        assert_eq!(layers.get(0).and_then(|l| l.meter.rate()), Some(80_000));
        assert_eq!(layers.best(), Some(1));
        assert_eq!(layers.by_rid(&Rid::from("h")), Some(0));
        assert_eq!(layers.auto_choice(None), Some(1), "a start takes the best");
        assert_eq!(
            layers.auto_choice(Some(0)),
            Some(0),
            "10 % more is not worth a move"
        );
        // Layer 0 grows to twice layer 1: a viewer on layer 1 moves up.
        for i in 11..=21u64 {
            let at = t0 + Duration::from_millis(100 * i);
            layers.push(packet(0, at, 2200));
            layers.push(packet(1, at, 1100));
        }
        assert_eq!(layers.auto_choice(Some(1)), Some(0));
        // A new publisher's packets start from nothing.
        let mut other = packet(0, t0, 10);
        Arc::make_mut(&mut other).publisher = SessionId(2);
        layers.push(other);
        assert_eq!(layers.len(), 1);
    }
}
