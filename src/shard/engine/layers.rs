//! Which simulcast layer each viewer plays (see `crate::simulcast`): its own pick, or the
//! automatic one, checked every housekeeping round; a move waits for the new layer's
//! keyframe, which the publisher is asked for.

use str0m::media::Rid;

use crate::hub::LayerInfo;
use crate::simulcast::LinkEstimate;

use super::*;

impl Engine {
    /// Aims each viewer of a stream with several layers at the layer it should play; asks the
    /// publisher for a keyframe where one must move.
    pub(super) fn choose_layers(&mut self, now: Instant) {
        let mut asks: Vec<(Arc<str>, u8)> = Vec::new();
        let cap = self.config.media.max_viewer_kbps;
        for (name, local) in &self.streams {
            if local.layers.len() < 2 {
                continue;
            }
            let mut wanted: Vec<u8> = Vec::new();
            for v in &local.viewers {
                let Some(s) = self.sessions.get_mut(v) else {
                    continue;
                };
                let pinned = s.layer.pinned.as_ref().and_then(|r| local.layers.by_rid(r));
                let auto = || {
                    local
                        .layers
                        .choose(s.layer.current, budget(cap, &s.estimate))
                };
                let Some(layer) = pinned.or_else(auto) else {
                    continue;
                };
                let rate = |l: u8| local.layers.rate(l);
                let (up, down) = match s.layer.current {
                    Some(c) => (rate(layer) > rate(c), rate(layer) < rate(c)),
                    None => (false, false),
                };
                // Automatic choice moves a viewer down for a cut of its estimate since its
                // last move (or for the configured cap), not because the layer it plays
                // measures more for a while: a keyframe (the one its move up asked for, say)
                // raises a layer's measured rate for a second.
                let capped = cap > 0 && s.layer.current.is_some_and(|c| rate(c) > cap * 1000);
                if pinned.is_none() && down && !s.estimate.cut_since_move() && !capped {
                    continue;
                }
                if s.layer.aim(layer) {
                    if !wanted.contains(&layer) {
                        wanted.push(layer);
                    }
                    if up || down {
                        s.estimate.moved(now, up);
                    }
                }
            }
            asks.extend(wanted.into_iter().map(|l| (name.clone(), l)));
        }
        // In name order, not the map's: a seed must replay the same run.
        asks.sort();
        for (stream, layer) in asks {
            self.ask_layer_keyframe(now, &stream, layer);
        }
    }
}

impl Engine {
    /// Pins viewer `id` to the layer named `rid`, or hands it back to automatic choice; the
    /// move starts at once (a keyframe of the new layer is asked for).
    pub(super) fn select_layer(
        &mut self,
        now: Instant,
        id: SessionId,
        media: Option<&str>,
        rid: Option<&str>,
    ) -> Result<(), SessionError> {
        let s = self
            .sessions
            .get_mut(&id)
            .filter(|s| s.role == Role::Play)
            .ok_or(SessionError::NotFound)?;
        let video = s
            .mids
            .iter()
            .position(|(_, k)| *k == Kind::Video)
            .map(|i| (i, s.mids[i].0));
        let Some((index, mid)) = video else {
            return Err(SessionError::Layer("the session has no video".into()));
        };
        if let Some(m) = media {
            if m != index.to_string() && m != mid.to_string() {
                return Err(SessionError::Layer(format!(
                    "mediaId {m:?} is not the video m-line (index {index}, mid {mid})"
                )));
            }
        }
        let stream = s.stream.clone();
        let cap = self.config.media.max_viewer_kbps;
        let pinned = rid.map(Rid::from);
        let layers = self.streams.get(&stream).map(|l| &l.layers);
        if let (Some(rid), Some(pin)) = (rid, pinned.as_ref()) {
            if layers.is_none_or(|l| l.by_rid(pin).is_none()) {
                let known: Vec<String> = layers
                    .map(|l| {
                        l.iter()
                            .filter_map(|(_, l)| l.rid)
                            .map(|r| r.to_string())
                            .collect()
                    })
                    .unwrap_or_default();
                return Err(SessionError::Layer(format!(
                    "no layer with rid {rid:?}; the stream has {known:?}"
                )));
            }
        }
        s.layer.pinned = pinned;
        let wanted = layers.and_then(|l| match &s.layer.pinned {
            Some(r) => l.by_rid(r),
            None => l.choose(s.layer.current, budget(cap, &s.estimate)),
        });
        if let Some(layer) = wanted {
            if s.layer.aim(layer) {
                self.ask_layer_keyframe(now, &stream, layer);
            }
        }
        Ok(())
    }
}

/// What automatic choice may give a viewer: its path's estimate, under the configured cap
/// (`media.max_viewer_kbps`, 0 for none).
pub(super) fn budget(cap_kbps: u64, estimate: &LinkEstimate) -> Option<u64> {
    let cap = (cap_kbps > 0).then(|| cap_kbps * 1000);
    match (estimate.budget(), cap) {
        (Some(b), Some(c)) => Some(b.min(c)),
        (b, c) => b.or(c),
    }
}

/// A layer's bitrate must move by this fraction of the last reported one before the
/// `layers` event is sent again: rates move with every keyframe.
const REPORT_CHANGE: f64 = 0.2;

impl Engine {
    /// Tells the hub the layers of each stream whose publisher is on this shard, when a layer
    /// came or went or a bitrate moved by more than [`REPORT_CHANGE`]. Only named (rid)
    /// layers are reported: the draft's layer object needs a rid or a layer id, and a stream
    /// without simulcast has nothing to choose from.
    pub(super) fn report_layers(&mut self) {
        let mut updates = Vec::new();
        for (name, local) in self.streams.iter_mut() {
            if local.publisher.is_none() {
                continue;
            }
            let now: Vec<LayerInfo> = local
                .layers
                .iter()
                .filter_map(|(_, l)| {
                    Some(LayerInfo {
                        rid: Some(l.rid?.to_string()),
                        bitrate: l.meter.rate(),
                        width: l.size.map(|s| s.0),
                        height: l.size.map(|s| s.1),
                        ..LayerInfo::default()
                    })
                })
                .collect();
            let moved = |a: &LayerInfo, b: &LayerInfo| {
                let (x, y) = (a.bitrate.unwrap_or(0) as f64, b.bitrate.unwrap_or(0) as f64);
                a.rid != b.rid
                    || a.width != b.width
                    || a.height != b.height
                    || (x - y).abs() > y * REPORT_CHANGE
            };
            let changed = now.len() != local.reported.len()
                || now.iter().zip(&local.reported).any(|(a, b)| moved(a, b));
            if changed {
                local.reported = now.clone();
                updates.push((name.clone(), now));
            }
        }
        // In name order, not the map's: a seed must replay the same run.
        updates.sort_by(|a, b| a.0.cmp(&b.0));
        self.outbox.hub.extend(
            updates
                .into_iter()
                .map(|(stream, layers)| HubUpdate::Layers { stream, layers }),
        );
    }
}
