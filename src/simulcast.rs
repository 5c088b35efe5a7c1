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

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::media::Rid;

use crate::fanout::{MediaPacket, Pushed, StreamCache};
use crate::session::SessionId;
use crate::twcc::Usage;

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
    /// Width and height, from its latest keyframe that says (see `crate::picture`).
    pub size: Option<(u32, u32)>,
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
                size: None,
            });
        }
        let layer = &mut self.layers[index];
        layer.rid = pkt.rid;
        layer.meter.add(pkt.received, pkt.payload.len());
        if pkt.keyframe || crate::picture::may_say_size(pkt.params.spec().codec, &pkt.payload) {
            if let Some(size) = crate::picture::size(pkt.params.spec().codec, &pkt.payload) {
                layer.size = Some(size);
            }
        }
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

    /// Where automatic choice puts a viewer that plays `current` on a path that carries
    /// `budget` bits per second (`None`: no limit known): the largest layer that fits, or the
    /// smallest if none does.
    pub fn choose(&self, current: Option<u8>, budget: Option<u64>) -> Option<u8> {
        let Some(budget) = budget else {
            return self.auto_choice(current);
        };
        let fits = self
            .iter()
            .filter(|(_, l)| l.meter.rank() <= budget)
            .max_by_key(|(_, l)| l.meter.rank());
        let smallest = self.iter().min_by_key(|(_, l)| l.meter.rank());
        fits.or(smallest).map(|(i, _)| i)
    }

    /// Bits per second of `layer`, as measured.
    pub fn rate(&self, layer: u8) -> u64 {
        self.get(layer).map_or(0, |l| l.meter.rank())
    }

    /// The largest layer's rate.
    pub fn ceiling(&self) -> u64 {
        self.best().map_or(0, |b| self.rate(b))
    }

    /// The rates a viewer playing `current` has its estimate go by.
    pub fn rates(&self, current: u8) -> LayerRates {
        LayerRates {
            current: self.rate(current),
            smallest: self.iter().map(|(_, l)| l.meter.rank()).min().unwrap_or(0),
            largest: self.ceiling(),
        }
    }

    /// Where automatic choice puts a viewer that plays `current` on a path without a known
    /// limit: the best layer, unless it is not clearly better than the current one
    /// ([`HYSTERESIS`]).
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

/// Report loss above which a viewer's path is taken to be full (as GCC's loss-based
/// controller does, draft-ietf-rmcat-gcc-02 §6).
const LOSS_HIGH: f32 = 0.10;
/// Report loss under which the path is taken to have room.
const LOSS_LOW: f32 = 0.02;
/// How fast the estimate grows while reports show no loss: per second.
const GROWTH_PER_SEC: f64 = 0.25;
/// The wait before trying a larger layer again after a move up that lost; it doubles with
/// each such failure, up to [`MAX_PROBE_BACKOFF`].
const PROBE_BACKOFF: Duration = Duration::from_secs(4);
const MAX_PROBE_BACKOFF: Duration = Duration::from_secs(16);
/// Loss this soon after a move up counts against the move.
const PROBE_WINDOW: Duration = Duration::from_secs(3);
/// On delay over-use the estimate becomes this much of the rate that arrived, as GCC's
/// rate controller does (draft-ietf-rmcat-gcc-02 §6: beta 0.85).
const DELAY_BACKOFF: f64 = 0.85;
/// Least time between two cuts for delay: a cut moves the viewer down only at the smaller
/// layer's next keyframe, and the queue drains after that; the over-use the viewer's feedback
/// shows meanwhile is the same queue.
const CUT_INTERVAL: Duration = Duration::from_secs(1);
/// No growth this long after the delay last showed a queue growing or draining.
const DELAY_HOLD: Duration = Duration::from_secs(1);
/// What was sent is measured over at least this much, back from a report: browsers send a
/// receiver report with each NACK, so under loss reports come tens of milliseconds apart,
/// and the bytes sent between two of them say little of a rate (a frame or none).
const SENT_WINDOW: Duration = Duration::from_secs(1);

/// The layers' measured rates, as a viewer's estimate needs them (bits per second): the
/// layer it plays, the smallest and the largest.
#[derive(Debug, Clone, Copy)]
pub struct LayerRates {
    pub current: u64,
    pub smallest: u64,
    pub largest: u64,
}

/// What one viewer's path carries, from the loss in its receiver reports about the video it
/// is sent (RFC 3550 §6.4.1) and, where the viewer sends transport-wide feedback, from the
/// delay on its path ([`crate::twcc`]). The gateway sends that viewer what its layer
/// carries, so loss beyond a few percent means the layer is more than the path holds; what
/// arrived is what the path holds. A queue that grows says the same earlier, before loss.
/// Without loss or queueing the estimate grows until a larger layer fits; if that move loses
/// or queues, the next try waits longer.
#[derive(Debug, Clone)]
pub struct LinkEstimate {
    /// Bits per second the path is believed to carry; `None` while nothing limits it.
    budget: Option<f64>,
    last_report: Option<Instant>,
    /// Bytes sent to the viewer on the track when each report of about the last
    /// [`SENT_WINDOW`] came, oldest first.
    sent: VecDeque<(Instant, u64)>,
    /// What arrived over about the last second by the viewer's transport-wide feedback, and
    /// when it said so.
    acked: Option<(Instant, u64)>,
    /// Cuts so far, and how many there had been when the viewer last moved: a viewer moves
    /// down only for a cut after its last move, not because a layer's measured rate rose
    /// for a keyframe (the one its move asked for, say).
    cuts: u64,
    cuts_at_move: u64,
    moved_up: Option<Instant>,
    backoff: Duration,
    /// No growth before this: the last move up lost.
    hold_until: Option<Instant>,
    /// The last cut for delay, and no growth before `delay_hold`: a queue grew or drained.
    last_cut: Option<Instant>,
    delay_hold: Option<Instant>,
}

impl Default for LinkEstimate {
    fn default() -> Self {
        LinkEstimate {
            budget: None,
            last_report: None,
            sent: VecDeque::new(),
            acked: None,
            cuts: 0,
            cuts_at_move: 0,
            moved_up: None,
            backoff: PROBE_BACKOFF,
            hold_until: None,
            last_cut: None,
            delay_hold: None,
        }
    }
}

impl LinkEstimate {
    /// A report on the viewer's video: `fraction` lost since its last report. `sent`: bytes
    /// sent on the track so far, from which the rate sent over about the last second comes (a
    /// move to another layer inside it changes what the loss is a fraction of); without it,
    /// the current layer's. What arrived is that rate less the loss, or where the viewer's
    /// transport-wide feedback said lately what arrived, that. Past the largest layer's rate
    /// nothing limits the viewer.
    pub fn on_report(&mut self, now: Instant, fraction: f32, sent: Option<u64>, rates: LayerRates) {
        let since = self.last_report.map(|t| now.saturating_duration_since(t));
        let sending = sent
            .and_then(|bytes| {
                // The newest earlier report at least the window back, else the oldest kept.
                let (at, before) = self
                    .sent
                    .iter()
                    .rev()
                    .find(|(t, _)| now.saturating_duration_since(*t) >= SENT_WINDOW)
                    .or(self.sent.front())
                    .copied()?;
                let d = now.saturating_duration_since(at);
                (d >= Duration::from_millis(100))
                    .then(|| (bytes.saturating_sub(before) * 8) as f64 / d.as_secs_f64())
            })
            .unwrap_or(rates.current as f64);
        if let Some(bytes) = sent {
            while self
                .sent
                .get(1)
                .is_some_and(|(t, _)| now.saturating_duration_since(*t) >= SENT_WINDOW)
            {
                self.sent.pop_front();
            }
            self.sent.push_back((now, bytes));
        }
        let elapsed = since.unwrap_or(Duration::ZERO).min(Duration::from_secs(5));
        self.last_report = Some(now);
        if fraction > LOSS_HIGH {
            let arrived = self
                .acked
                .filter(|(at, _)| now.saturating_duration_since(*at) < SENT_WINDOW)
                .map(|(_, bps)| bps as f64);
            let carried = arrived.unwrap_or(sending * f64::from(1.0 - fraction));
            self.cut(now, carried, rates.smallest);
        } else if fraction < LOSS_LOW {
            if self.hold_until.is_some_and(|t| now < t) || self.delay_hold.is_some_and(|t| now < t)
            {
                return;
            }
            if let Some(b) = self.budget {
                let grown = b * (1.0 + GROWTH_PER_SEC * elapsed.as_secs_f64());
                // Room for the largest layer and then some: nothing limits this viewer now.
                self.budget = (grown < rates.largest as f64 * 1.5).then_some(grown);
            }
            if self
                .moved_up
                .is_some_and(|t| now.saturating_duration_since(t) >= PROBE_WINDOW)
            {
                // The move held: the next failure starts from the shortest wait again.
                self.moved_up = None;
                self.backoff = PROBE_BACKOFF;
            }
        }
    }

    /// What the viewer's transport-wide feedback shows of the delay on its path: `usage`,
    /// and `acked` bits per second arrived over about the last second. `smallest`: the
    /// smallest layer's rate.
    pub fn on_delay(&mut self, now: Instant, usage: Usage, acked: Option<u64>, smallest: u64) {
        if let Some(bps) = acked {
            self.acked = Some((now, bps));
        }
        match usage {
            Usage::Normal => {}
            Usage::Under => self.delay_hold = Some(now + DELAY_HOLD),
            Usage::Over => {
                self.delay_hold = Some(now + DELAY_HOLD);
                let recent = self
                    .last_cut
                    .is_some_and(|t| now.saturating_duration_since(t) < CUT_INTERVAL);
                if let (false, Some(acked)) = (recent, acked) {
                    self.last_cut = Some(now);
                    self.cut(now, acked as f64 * DELAY_BACKOFF, smallest);
                }
            }
        }
    }

    /// The path holds about `carried` bits per second: the estimate goes no higher, and a
    /// recent move up failed. Never below `smallest`, the smallest layer's rate: the viewer
    /// plays that layer anyway, and growth towards the next would start further down.
    fn cut(&mut self, now: Instant, carried: f64, smallest: u64) {
        let carried = carried.max(smallest as f64);
        self.budget = Some(self.budget.map_or(carried, |b| b.min(carried)));
        self.cuts += 1;
        if self
            .moved_up
            .take()
            .is_some_and(|t| now.saturating_duration_since(t) < PROBE_WINDOW)
        {
            self.hold_until = Some(now + self.backoff);
            self.backoff = (self.backoff * 2).min(MAX_PROBE_BACKOFF);
        }
    }

    /// Bits per second the viewer's path carries, if something limits it.
    pub fn budget(&self) -> Option<u64> {
        self.budget.map(|b| b.round() as u64)
    }

    /// The viewer was moved to another layer at `now`, a larger one if `up`: loss or
    /// queueing soon after a move up counts against it.
    pub fn moved(&mut self, now: Instant, up: bool) {
        self.cuts_at_move = self.cuts;
        if up {
            self.moved_up = Some(now);
        }
    }

    /// Whether the estimate was cut since the viewer's last move: what a move down for the
    /// estimate waits for.
    pub fn cut_since_move(&self) -> bool {
        self.cuts > self.cuts_at_move
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
            capture: None,
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

    #[test]
    fn loss_sets_what_the_path_carries_and_a_lost_move_up_waits_longer() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let on = |current| LayerRates {
            current,
            smallest: 100_000,
            largest: 2_000_000,
        };
        let mut e = LinkEstimate::default();
        e.on_report(at(0), 0.0, None, on(2_000_000));
        assert_eq!(e.budget(), None, "nothing limits a viewer without loss");
        assert!(!e.cut_since_move());
        // 60 % lost of 2 Mbit/s: the path carried 800 kbit/s.
        e.on_report(at(1), 0.6, None, on(2_000_000));
        assert_eq!(e.budget(), Some(800_000));
        assert!(e.cut_since_move(), "a cut: the viewer may move down");
        e.moved(at(1), false);
        assert!(!e.cut_since_move());
        // Some loss: held.
        e.on_report(at(2), 0.05, None, on(500_000));
        assert_eq!(e.budget(), Some(800_000));
        // Clean reports grow it by a quarter per second.
        e.on_report(at(3), 0.0, None, on(500_000));
        assert_eq!(e.budget(), Some(1_000_000));
        // A move up that loses at once: back down, and no growth for the backoff.
        e.moved(at(3), true);
        e.on_report(at(4), 0.5, None, on(2_000_000));
        assert_eq!(e.budget(), Some(1_000_000));
        e.on_report(at(5), 0.0, None, on(500_000));
        assert_eq!(e.budget(), Some(1_000_000), "held after a lost move up");
        e.on_report(at(9), 0.0, None, on(500_000));
        assert!(
            e.budget() > Some(1_000_000),
            "grows again after the backoff"
        );
        // Far past the largest layer: no limit.
        for s in 10..30 {
            e.on_report(at(s), 0.0, None, on(500_000));
        }
        assert_eq!(e.budget(), None);
        // Nearly all lost: the estimate stops at the smallest layer's rate.
        e.on_report(at(31), 0.99, None, on(500_000));
        assert_eq!(e.budget(), Some(100_000));
    }

    #[test]
    fn loss_is_a_fraction_of_what_was_sent_over_the_reports_interval() {
        let t0 = Instant::now();
        let rates = LayerRates {
            current: 500_000,
            smallest: 100_000,
            largest: 2_000_000,
        };
        let mut e = LinkEstimate::default();
        e.on_report(t0, 0.0, Some(0), rates);
        // 250,000 bytes in the second: 2 Mbit/s went out, on the larger layer the viewer has
        // just left; half of it arrived. The 500 kbit/s it plays now is not what was lost from.
        let t1 = t0 + Duration::from_secs(1);
        e.on_report(t1, 0.5, Some(250_000), rates);
        assert_eq!(e.budget(), Some(1_000_000));
        // Reports 20 ms apart under loss (with NACKs): 500 bytes went out in the last 20 ms,
        // but the rate is measured over the second back, 250,500 bytes in 1.02 s.
        let t2 = t1 + Duration::from_millis(20);
        e.on_report(t2, 0.5, Some(250_500), rates);
        assert_eq!(e.budget(), Some(982_353));
        // What the viewer's transport-wide feedback says arrived counts over that.
        e.on_delay(t2, Usage::Normal, Some(900_000), rates.smallest);
        e.on_report(t2 + Duration::from_millis(20), 0.5, Some(251_000), rates);
        assert_eq!(e.budget(), Some(900_000));
    }
}
