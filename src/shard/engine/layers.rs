//! Which simulcast layer each viewer plays (see `crate::simulcast`): its own pick, or the
//! automatic one, checked every housekeeping round; a move waits for the new layer's
//! keyframe, which the publisher is asked for.

use str0m::media::Rid;

use super::*;

impl Engine {
    /// Aims each viewer of a stream with several layers at the layer it should play; asks the
    /// publisher for a keyframe where one must move.
    pub(super) fn choose_layers(&mut self, now: Instant) {
        let mut asks: Vec<Arc<str>> = Vec::new();
        for (name, local) in &self.streams {
            if local.layers.len() < 2 {
                continue;
            }
            let mut moved = false;
            for v in &local.viewers {
                let Some(s) = self.sessions.get_mut(v) else {
                    continue;
                };
                let pinned = s.layer.pinned.as_ref().and_then(|r| local.layers.by_rid(r));
                let Some(layer) = pinned.or_else(|| local.layers.auto_choice(s.layer.current))
                else {
                    continue;
                };
                moved |= s.layer.aim(layer);
            }
            if moved {
                asks.push(name.clone());
            }
        }
        // In name order, not the map's: a seed must replay the same run.
        asks.sort();
        for stream in asks {
            self.ask_keyframe(now, &stream);
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
            None => l.auto_choice(s.layer.current),
        });
        if let Some(layer) = wanted {
            if s.layer.aim(layer) {
                self.ask_keyframe(now, &stream);
            }
        }
        Ok(())
    }
}
