//! Keyframe requests: viewers' PLI/FIR and joins become PLIs to the publisher, wherever it is,
//! at most one per `media.keyframe_request_interval_ms`.

use super::*;

/// How long after a viewer's start a keyframe request of its own may be about the start
/// (see `Engine::on_keyframe_request`).
const START_WINDOW: Duration = Duration::from_secs(2);

/// Least time between two requests for one simulcast layer's keyframe: short, because a
/// viewer moving to the layer waits for it, and the request names one layer's encoder only.
pub(super) const LAYER_KEYFRAME_INTERVAL: Duration = Duration::from_millis(100);

/// When a PLI has had no keyframe after it, one more request may go this soon after it, if
/// the configured interval is longer. Until the keyframe comes viewers show a broken
/// picture, and on a lossy uplink the PLI or the keyframe is lost now and then: a retry only
/// after the configured interval (500 ms) put recovery past a second. 300 ms is also the
/// least interval libwebrtc's encoders allow between two requested keyframes
/// (`kMinKeyframeSendIntervalMs` in its `encoder_rtcp_feedback.cc`), so an earlier retry
/// would be ignored by browsers. One retry only: a publisher that answers none is asked no
/// more often than configured.
const OVERDUE_KEYFRAME_RETRY: Duration = Duration::from_millis(300);

impl Engine {
    /// A viewer asked for a keyframe (PLI or FIR).
    ///
    /// Usually the publisher is asked. Right after a start the viewer may instead have failed
    /// to decode the start itself, and then the GOP cache can serve it better:
    /// - the gateway was the DTLS server (the viewer offered `a=setup:active`) and its last
    ///   flight was lost: the gateway's side was done and media flowed while the viewer had
    ///   no keys, and a receiver never asks for packets older than the first it decrypted.
    ///   The gateway sees the viewer send its flight again (`Session::keys_late`);
    /// - it did not start on a whole GOP from the cache (`Session::start_whole`): it started
    ///   on a live keyframe, whose first packet may have been lost on the publisher's leg
    ///   (the repair then comes too late for it), or on a GOP with such a hole.
    ///
    /// Then, if the cache's GOP is whole now, the viewer starts again on it, as if a new
    /// publisher began, with sequence numbers and timestamps continuing its own. That costs
    /// the other viewers nothing. Once per viewer.
    ///
    /// A loss after a good start is closed by the encoder's next keyframe instead: a restart
    /// then resends the frames the viewer already showed, 500 and more packets into a lossy
    /// path, and one loss upstream in the first seconds sent such a burst to every viewer.
    pub(super) fn on_keyframe_request(&mut self, now: Instant, id: SessionId) {
        let Some(s) = self.sessions.get(&id) else {
            return;
        };
        let stream = s.stream.clone();
        let start_failed = s.role == Role::Play
            && (s.keys_late || !s.start_whole)
            && !s.restarted
            && s.video_started
                .is_some_and(|t| now.saturating_duration_since(t) < START_WINDOW);
        let layer = s.layer.current.unwrap_or(0);
        let gop = start_failed
            .then(|| self.streams.get(&stream).and_then(|l| l.layers.gop(layer)))
            .flatten()
            .filter(|g| StreamCache::is_whole(g))
            .map(|g| g.to_vec());
        match gop {
            Some(gop) => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    s.restarted = true;
                    s.backlog.clear();
                    for (_, t) in &mut s.tracks {
                        if t.kind == Kind::Video {
                            t.publisher_left();
                        }
                    }
                }
                self.counters.gop_cache_hits += 1;
                tracing::debug!(session = %id, packets = gop.len(), "keyframe request: restart from the GOP cache");
                self.start_from_cache(now, id, gop);
            }
            None => {
                tracing::debug!(session = %id, "keyframe request: asking the publisher");
                self.ask_keyframe(now, &stream)
            }
        }
    }

    /// Routes a keyframe request to the stream's publisher, wherever it is.
    pub(super) fn ask_keyframe(&mut self, now: Instant, stream: &Arc<str>) {
        if let Some(id) = self.local_publisher(stream) {
            self.request_keyframe(now, id);
            return;
        }
        // The publisher is on another shard: at most one request per interval goes there
        // (the control channel is never lossy, so it must not be floodable), and one early
        // retry when no keyframe answered the last; one inside the interval is held and sent
        // when it ends.
        let interval = Duration::from_millis(self.config.media.keyframe_request_interval_ms);
        let Some(local) = self.streams.get_mut(stream) else {
            return;
        };
        if !local.remote_keyframe.admit(now, interval) {
            return;
        }
        local.remote_keyframe.sent(now);
        self.outbox.hub.push(HubUpdate::KeyframeWanted {
            stream: stream.clone(),
            shard: self.index,
            layer: None,
        });
    }

    /// Routes a request for a keyframe of one simulcast layer (a viewer moves to it) to the
    /// publisher, wherever it is: at most one per layer per [`LAYER_KEYFRAME_INTERVAL`], shared
    /// by every viewer waiting for that layer; one inside the interval is held until it ends.
    pub(super) fn ask_layer_keyframe(&mut self, now: Instant, stream: &Arc<str>, layer: u8) {
        if let Some(id) = self.local_publisher(stream) {
            self.request_layer_keyframe(now, id, layer);
            return;
        }
        let Some(local) = self.streams.get_mut(stream) else {
            return;
        };
        let limiter = layer_slot(&mut local.remote_layer_keyframe, layer);
        if !limiter.admit(now, LAYER_KEYFRAME_INTERVAL) {
            return;
        }
        limiter.sent(now);
        self.outbox.hub.push(HubUpdate::KeyframeWanted {
            stream: stream.clone(),
            shard: self.index,
            layer: Some(layer),
        });
    }

    /// Publisher `id`: a PLI for `layer`'s stream alone, at most one per layer per
    /// [`LAYER_KEYFRAME_INTERVAL`]; one inside the interval is held until it ends
    /// (`Engine::housekeeping`). The other layers' encoders are not disturbed.
    pub(super) fn request_layer_keyframe(&mut self, now: Instant, id: SessionId, layer: u8) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let limiter = layer_slot(&mut s.layer_plis, layer);
        if !limiter.admit(now, LAYER_KEYFRAME_INTERVAL) {
            return;
        }
        let ssrcs: Vec<Ssrc> = s
            .ssrcs
            .iter()
            .filter(|i| i.kind == Kind::Video && i.layer == layer)
            .map(|i| i.ssrc)
            .collect();
        if ssrcs.is_empty() {
            // Not received yet: asked again on the next housekeeping round.
            limiter.pending = s.connected;
            return;
        }
        limiter.sent(now);
        let mut api = s.rtc.direct_api();
        for ssrc in ssrcs {
            if let Some(rx) = api.stream_rx(&ssrc) {
                rx.request_keyframe(KeyframeRequestKind::Pli);
            }
        }
        tracing::debug!(session = %id, layer, "PLI to the publisher for one layer");
        self.counters.keyframe_requests_sent += 1;
        self.drive(now, id);
    }

    /// Sends the held requests for remote publishers whose interval has ended, and the held
    /// requests for one layer's keyframe, wherever the publisher is.
    pub(super) fn flush_remote_keyframe_requests(&mut self, now: Instant) {
        let mut due: Vec<Arc<str>> = self
            .streams
            .iter()
            .filter(|(_, l)| l.remote_keyframe.pending)
            .map(|(name, _)| name.clone())
            .collect();
        due.sort();
        for stream in due {
            self.ask_keyframe(now, &stream);
        }
        let mut layers: Vec<(Arc<str>, u8)> = self
            .streams
            .iter()
            .flat_map(|(name, l)| {
                l.remote_layer_keyframe
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| l.pending)
                    .map(move |(i, _)| (name.clone(), i as u8))
            })
            .collect();
        layers.sort();
        for (stream, layer) in layers {
            self.ask_layer_keyframe(now, &stream, layer);
        }
    }

    /// Sends a PLI to publisher `id`, at most one per configured interval, except for one
    /// retry [`OVERDUE_KEYFRAME_RETRY`] after a PLI no keyframe answered; a request inside the
    /// interval is held and sent when it ends.
    pub(super) fn request_keyframe(&mut self, now: Instant, id: SessionId) {
        let interval = Duration::from_millis(self.config.media.keyframe_request_interval_ms);
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        if !s.pli.admit(now, interval) {
            return;
        }
        if !s.mids.iter().any(|(_, k)| *k == Kind::Video) {
            s.pli.pending = false;
            return;
        }
        // No video has arrived yet: try again on the next housekeeping round. (A stream
        // declared by the offer's a=ssrc exists before its first packet, but a PLI sent then
        // can reach an encoder that has not started and be lost on it.)
        let video: Vec<Ssrc> = s
            .ssrcs
            .iter()
            .filter(|i| i.kind == Kind::Video)
            .map(|i| i.ssrc)
            .collect();
        if video.is_empty() {
            s.pli.pending = s.connected;
            return;
        }
        let mut api = s.rtc.direct_api();
        // Every layer of a simulcast publisher is asked: a viewer that joins or moves may
        // want any of them, and the interval bounds what the publisher's uplink pays for it.
        for ssrc in video {
            if let Some(rx) = api.stream_rx(&ssrc) {
                rx.request_keyframe(KeyframeRequestKind::Pli);
            }
        }
        tracing::debug!(session = %id, "PLI to the publisher");
        s.pli.sent(now);
        // After a loss that was not repaired, ask again each interval until the keyframe
        // comes: the PLI or the keyframe may be lost as well.
        s.pli.pending = s.keyframe_after.is_some();
        self.counters.keyframe_requests_sent += 1;
        self.drive(now, id);
    }
}

/// One sender of keyframe requests to one publisher (or one of its layers): at most one
/// request per interval, one inside it held (`pending`) for when it ends, and after a
/// request no keyframe answered, one retry as soon as [`OVERDUE_KEYFRAME_RETRY`].
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Limiter {
    last: Option<Instant>,
    /// A request waits for the interval's end (`Engine::housekeeping` sends it).
    pub(super) pending: bool,
    /// Requests sent since a keyframe last came.
    unanswered: u8,
}

impl Limiter {
    /// Whether a request may go at `now`, `interval` after the last; if not, it is held.
    pub(super) fn admit(&mut self, now: Instant, interval: Duration) -> bool {
        let interval = match self.unanswered {
            1 => interval.min(OVERDUE_KEYFRAME_RETRY),
            _ => interval,
        };
        let inside = self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < interval);
        self.pending |= inside;
        !inside
    }

    /// A request went at `now`.
    pub(super) fn sent(&mut self, now: Instant) {
        self.last = Some(now);
        self.pending = false;
        self.unanswered = self.unanswered.saturating_add(1);
    }

    /// A keyframe came: the next request waits the whole interval again.
    pub(super) fn answered(&mut self) {
        self.unanswered = 0;
    }
}

/// Layer `layer`'s limiter in a per-layer list, made if new.
fn layer_slot(list: &mut Vec<Limiter>, layer: u8) -> &mut Limiter {
    let i = usize::from(layer);
    if list.len() <= i {
        list.resize(i + 1, Limiter::default());
    }
    &mut list[i]
}
