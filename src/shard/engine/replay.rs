//! A viewer joining a stream: it starts on the cached GOP, paced so the burst does not overflow
//! its path, or on the next keyframe.

use str0m::rtp::Extension;

use super::*;

impl Engine {
    /// Shard `shard` has viewers of `stream` now: it gets the GOP cache, then every packet.
    pub(super) fn on_subscribe(&mut self, stream: Arc<str>, shard: usize) {
        let local = self.local_stream(&stream);
        if local.subscribers & (1 << shard) != 0 {
            return;
        }
        local.subscribers |= 1 << shard;
        let packets: Vec<MediaPacket> = local.layers.all().map(|p| p.for_other_shard()).collect();
        self.outbox
            .messages
            .push((shard, PeerMsg::Gop { stream, packets }));
    }

    /// The publisher's shard sent its GOP cache: it becomes this shard's, and viewers that
    /// wait for video start on it.
    pub(super) fn on_gop(&mut self, now: Instant, stream: Arc<str>, packets: Vec<MediaPacket>) {
        let Some(local) = self.streams.get_mut(&stream) else {
            return;
        };
        if let Some(p) = packets.first() {
            local.publisher_sends(p.publisher);
        }
        for p in packets {
            local.layers.push(Arc::new(p));
        }
        let waiting: Vec<SessionId> = local
            .viewers
            .iter()
            .copied()
            .filter(|v| {
                self.sessions.get(v).is_some_and(|s| {
                    s.tracks
                        .iter()
                        .any(|(_, t)| t.kind == Kind::Video && !t.started())
                })
            })
            .collect();
        for v in waiting {
            let Some(gop) = self.gop_for(&stream, v) else {
                continue;
            };
            self.counters.gop_cache_hits += 1;
            self.start_from_cache(now, v, gop);
        }
    }

    /// A connected viewer starts receiving: from the GOP cache if it has a keyframe, else from the
    /// next keyframe (which it asks the publisher for).
    pub(super) fn join(&mut self, now: Instant, id: SessionId, stream: &Arc<str>) {
        let index = self.index;
        let resend = self.config.media.resend_buffer_packets;
        let direct = self.config.media.direct_egress;
        let transport_cc = self.config.media.transport_cc;
        // In the extension's 10 ms units, 12 bits.
        let playout = self
            .config
            .media
            .playout_delay_max_ms
            .map(|ms| (ms / 10).min(0xfff) as u16);
        if let Some(session) = self.sessions.get_mut(&id) {
            session.joined = true;
            let mids: Vec<Mid> = session.tracks.iter().map(|(m, _)| *m).collect();
            let mut out = Vec::new();
            for mid in mids {
                let media = session.rtc.media(mid);
                let video = session
                    .tracks
                    .iter()
                    .any(|(m, t)| *m == mid && t.kind == Kind::Video);
                let id_of = |e| media.and_then(|m| m.remote_extmap().id_of(e));
                let ids = super::egress::ExtIds {
                    capture: id_of(Extension::AbsoluteCaptureTime),
                    transport: transport_cc
                        .then(|| id_of(Extension::TransportSequenceNumber))
                        .flatten(),
                    playout: playout
                        .filter(|_| video)
                        .and_then(|max| Some((id_of(Extension::PlayoutDelay)?, 0, max))),
                };
                if let Some(tx) = session.rtc.direct_api().stream_tx_by_mid(mid, None) {
                    tx.set_rtx_cache(resend, Duration::from_secs(3), None);
                    session.tx_ssrcs.push((mid, tx.ssrc()));
                    // RTX starts below the first rollover, as the media does.
                    let rtx = tx.rtx().map(|ssrc| (ssrc, self.rng.gen::<u16>() & 0x7fff));
                    out.push((mid, tx.ssrc(), rtx, ids));
                }
            }
            // Media leaves through the gateway's own egress once the keys are there (they
            // are: a viewer joins on DTLS done); without them, through str0m.
            if direct {
                if let Some(keys) = session.srtp_keys.take() {
                    let rtx_pts = session
                        .rtc
                        .codec_config()
                        .params()
                        .iter()
                        .filter_map(|p| Some((*p.pt(), *p.resend()?)))
                        .collect();
                    session.sender = super::egress::Egress::new(&keys, &out, rtx_pts, now);
                    if session.sender.is_none() {
                        session.span.in_scope(
                            || warn!(profile = ?keys.profile, "no own egress for these keys"),
                        );
                    }
                }
            }
        }
        let local = self.local_stream(stream);
        local.viewers.push(id);
        let need_subscribe = !local.subscribed;
        local.subscribed = true;
        let gop = self.gop_for(stream, id);
        if need_subscribe {
            self.outbox.hub.push(HubUpdate::Watch {
                stream: stream.clone(),
                shard: index,
                wants: true,
            });
        }
        match gop {
            Some(packets) => {
                self.counters.gop_cache_hits += 1;
                self.start_from_cache(now, id, packets);
            }
            None => {
                // The layer it waits for, if the stream has layers; else any keyframe.
                let layered = self.streams.get(stream).is_some_and(|l| l.layers.len() > 1);
                match self.sessions.get(&id).and_then(|s| s.layer.target) {
                    Some(layer) if layered => self.ask_layer_keyframe(now, stream, layer),
                    _ => self.ask_keyframe(now, stream),
                }
            }
        }
    }

    /// The cached GOP viewer `id` starts on: of the layer it waits for, or the one automatic
    /// choice (or its own pick) gives it. `None` if that layer's cache holds no keyframe; the
    /// viewer then waits for that layer.
    pub(super) fn gop_for(
        &mut self,
        stream: &Arc<str>,
        id: SessionId,
    ) -> Option<Vec<Arc<MediaPacket>>> {
        let layers = &self.streams.get(stream)?.layers;
        let cap = self.config.media.max_viewer_kbps;
        let s = self.sessions.get_mut(&id)?;
        let layer = match s.layer.target {
            Some(t) => t,
            None => {
                let pinned = s.layer.pinned.as_ref().and_then(|r| layers.by_rid(r));
                let auto = || layers.choose(None, super::layers::budget(cap, &s.estimate));
                let layer = pinned.or_else(auto)?;
                s.layer.aim(layer);
                layer
            }
        };
        layers.gop(layer).map(|g| g.to_vec())
    }

    /// Starts a viewer on the cached GOP: paced through its backlog, the keyframe first. It
    /// plays that GOP's layer from now on.
    pub(super) fn start_from_cache(
        &mut self,
        now: Instant,
        id: SessionId,
        gop: Vec<Arc<MediaPacket>>,
    ) {
        self.start_track_with_next(id, Kind::Video);
        let whole = StreamCache::is_whole(&gop);
        if let Some(s) = self.sessions.get_mut(&id) {
            if let Some(first) = gop.iter().find(|p| p.kind == Kind::Video) {
                s.layer.start_on(first.layer);
            }
            s.start_whole = whole;
            if s.backlog.is_empty() {
                s.lead_in = LEAD_IN;
            }
            s.backlog.extend(gop);
        }
        // The first share (the keyframe, as far as the budget goes) leaves now, the rest on
        // the replay ticks.
        if self.replay_share(now, id) && !self.replaying.contains(&id) {
            self.replaying.push(id);
            if self.next_replay.is_none() {
                self.next_replay = Some(now + REPLAY_TICK);
            }
        }
    }

    /// Sends each catching-up viewer its next share of the backlog.
    pub(super) fn replay(&mut self, now: Instant) {
        let ids = std::mem::take(&mut self.replaying);
        for id in ids {
            if self.replay_share(now, id) {
                self.replaying.push(id);
            }
        }
        self.next_replay = (!self.replaying.is_empty()).then(|| now + REPLAY_TICK);
    }

    /// Sends one tick's worth of `id`'s backlog; true if some is left.
    pub(super) fn replay_share(&mut self, now: Instant, id: SessionId) -> bool {
        let budget = (self.config.media.gop_replay_kbps as usize * 1000 / 8)
            * REPLAY_TICK.as_micros() as usize
            / 1_000_000;
        if let Some(s) = self.sessions.get_mut(&id) {
            if s.lead_in > 0 {
                s.lead_in -= 1;
                if let Some(first) = s.backlog.front().cloned() {
                    self.write_to_viewer(now, id, &first);
                    return true;
                }
            }
        }
        let mut sent = 0;
        while sent < budget.max(1) {
            let Some(pkt) = self
                .sessions
                .get_mut(&id)
                .and_then(|s| s.backlog.pop_front())
            else {
                break;
            };
            sent += pkt.payload.len();
            self.write_to_viewer(now, id, &pkt);
        }
        self.sessions
            .get(&id)
            .is_some_and(|s| !s.backlog.is_empty())
    }
}

/// How often paced GOP-cache replays send their next share.
const REPLAY_TICK: Duration = Duration::from_millis(5);

/// A viewer's first video packet goes out on this many replay ticks before the rest of its
/// start, which sends it once more. Its receiver counts sequence numbers from the first packet that
/// arrives and never asks for older ones: were that first packet lost, or overtaken by the
/// next, the keyframe (its SPS and PPS, say) would stay incomplete until the next one. A
/// copy repeats the same packet, sequence number and all, so a receiver drops the extras.
const LEAD_IN: u8 = 3;
