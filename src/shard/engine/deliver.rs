//! A publisher's packet to the viewers: into a [`MediaPacket`], to the other shards that
//! subscribed, into the GOP cache, and through each viewer's rewriter into its `Rtc`.

use str0m::media::Rid;

use super::*;
use crate::fanout::Source;
use crate::simulcast::Take;

impl Engine {
    pub(super) fn on_rtp(&mut self, now: Instant, id: SessionId, rtp: str0m::rtp::RtpPacket) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        if s.role != Role::Publish {
            return;
        }
        let ssrc = rtp.header.ssrc;
        let seq = *rtp.seq_no;
        let pt = rtp.header.payload_type;
        let Some(params) = s.rtc.codec_config().find(|p| p.pt() == pt).copied() else {
            self.counters.packets_no_codec += 1;
            return;
        };
        let known = s.ssrcs.iter().position(|x| x.ssrc == ssrc);
        let (kind, layer) = match known {
            Some(i) => (s.ssrcs[i].kind, (s.ssrcs[i].layer, s.ssrcs[i].rid)),
            None => {
                let Some((mid, rid)) = s
                    .rtc
                    .direct_api()
                    .stream_rx(&ssrc)
                    .map(|rx| (rx.mid(), rx.rid()))
                else {
                    return;
                };
                let Some(kind) = s.mids.iter().find(|(m, _)| *m == mid).map(|(_, k)| *k) else {
                    return;
                };
                let Some(layer) = layer_of(&mut s.layer_rids, kind, rid) else {
                    self.counters.packets_no_codec += 1;
                    return;
                };
                (kind, layer)
            }
        };
        let keyframe = kind == Kind::Video && is_keyframe(params.spec().codec, &rtp.payload);
        let unrepaired = match known {
            Some(i) => s.ssrcs[i].record(seq, keyframe, now),
            None => {
                s.ssrcs.push(Incoming::new(ssrc, kind, layer, seq));
                false
            }
        };
        if keyframe {
            s.pli.answered();
        }
        if keyframe && s.keyframe_after.is_none_or(|after| seq > after) {
            // A held or repeated request is answered: sending it now would cost a needless
            // keyframe.
            s.pli.pending = false;
            s.keyframe_after = None;
        }
        if unrepaired {
            // A frame the viewers cannot decode, and neither the frames after it: only a
            // keyframe ends that.
            let newest = s
                .ssrcs
                .iter()
                .filter(|x| x.kind == Kind::Video)
                .map(|x| x.max_seq)
                .max()
                .unwrap_or(seq);
            s.keyframe_after = Some(newest);
            self.counters.unrepaired_losses += 1;
        }
        let pkt = MediaPacket {
            publisher: id,
            kind,
            layer: layer.0,
            rid: layer.1,
            params,
            seq,
            time: rtp.header.timestamp,
            marker: rtp.header.marker,
            keyframe,
            capture: rtp.header.ext_vals.abs_capture_time,
            payload: rtp.payload,
            received: now,
        };
        let stream = s.stream.clone();
        let subscribers = self
            .streams
            .get(&stream)
            .map(|l| l.subscribers)
            .unwrap_or(0);
        for shard in crate::shard::shards_in(subscribers) {
            self.outbox.messages.push((
                shard,
                PeerMsg::Media {
                    stream: stream.clone(),
                    pkt: pkt.for_other_shard(),
                },
            ));
        }
        self.deliver(now, &stream, Arc::new(pkt));
        if unrepaired {
            self.request_keyframe(now, id);
        }
    }

    /// A packet of `stream` reaches this shard: cache it and write it to the local viewers.
    pub(super) fn deliver(&mut self, now: Instant, stream: &Arc<str>, pkt: Arc<MediaPacket>) {
        let Some(local) = self.streams.get_mut(stream) else {
            return;
        };
        local.publisher_sends(pkt.publisher);
        local.history.push(&pkt);
        if pkt.keyframe {
            local.remote_keyframe.answered();
        }
        let pushed = match pkt.kind {
            Kind::Video => local.layers.push(pkt.clone()),
            // Audio is not cached: a joiner's audio starts live. Replayed audio would be up to
            // a GOP stale, and inside a GOP burst it is lost for good when a receive buffer
            // overflows (audio has no retransmission; video is recovered by NACK).
            Kind::Audio => Pushed::Packet,
        };
        // Walk a copy: a viewer removed on the way (a failed write) must leave the stream's
        // list, which `remove` reads, as it really is. The buffer is reused, so no allocation.
        let mut viewers = std::mem::take(&mut self.viewer_scratch);
        viewers.clear();
        viewers.extend_from_slice(&local.viewers);
        let key_start = pushed == Pushed::KeyframeStart;
        let frame: Vec<Arc<MediaPacket>> = if key_start {
            local
                .layers
                .get(pkt.layer)
                .map(|l| l.cache.frame().to_vec())
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        // Each viewer plays one of several layers; with one, every viewer plays it, and the
        // session is not looked up once more per packet to say so.
        let layered = pkt.kind == Kind::Video && local.layers.len() > 1;
        for &v in &viewers {
            if layered {
                let Some(s) = self.sessions.get_mut(&v) else {
                    continue;
                };
                match s.layer.on_video(pkt.layer, key_start) {
                    Take::Forward => {}
                    Take::Skip => continue,
                    Take::Start => {
                        // Onto another layer, or a first start: from this keyframe's frame,
                        // with nothing of a replay of another layer before it.
                        s.backlog.clear();
                        s.lead_in = 0;
                        let video = frame.iter().filter(|p| p.kind == Kind::Video).cloned();
                        self.start_from_cache(now, v, video.collect());
                        continue;
                    }
                }
            }
            // Only a keyframe's first packet can start a waiting viewer; others go as they are.
            let starts_waiting = key_start
                && self
                    .sessions
                    .get(&v)
                    .and_then(|s| s.tracks.iter().find(|(_, t)| t.kind == pkt.kind))
                    .is_some_and(|(_, t)| t.waiting_keyframe);
            if starts_waiting {
                // Start on the whole keyframe, including its packets before this one (SPS/PPS),
                // through the replay path, which sends its first packet with care.
                let video = frame.iter().filter(|p| p.kind == Kind::Video).cloned();
                self.start_from_cache(now, v, video.collect());
            } else {
                self.forward(now, v, &pkt);
            }
        }
        self.viewer_scratch = viewers;
    }

    /// Writes a live packet to a viewer, or queues it behind the viewer's GOP replay.
    pub(super) fn forward(&mut self, now: Instant, id: SessionId, pkt: &Arc<MediaPacket>) {
        let limit = self.config.media.gop_cache_max_packets;
        if let Some(s) = self.sessions.get_mut(&id) {
            if !s.backlog.is_empty() {
                if s.backlog.len() >= limit {
                    // Not catching up: drop the replay, start again from the next keyframe.
                    s.backlog.clear();
                    for (_, t) in &mut s.tracks {
                        t.publisher_left();
                    }
                    return;
                }
                s.backlog.push_back(pkt.clone());
                return;
            }
        }
        self.write_to_viewer(now, id, pkt);
    }

    pub(super) fn start_track_with_next(&mut self, id: SessionId, kind: Kind) {
        if let Some(s) = self.sessions.get_mut(&id) {
            if let Some((_, t)) = s.tracks.iter_mut().find(|(_, t)| t.kind == kind) {
                t.start_with_next();
            }
        }
    }

    pub(super) fn write_to_viewer(&mut self, now: Instant, id: SessionId, pkt: &MediaPacket) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let Session {
            stream,
            rtc,
            tracks,
            tx_ssrcs,
            sender,
            media_path,
            ..
        } = &mut **s;
        let Some((mid, track)) = tracks.iter_mut().find(|(_, t)| t.kind == pkt.kind) else {
            return;
        };
        let mid = *mid;
        let pt = track.map_pt(&pkt.params, |params| {
            let remote = rtc.media(mid)?.remote_pts().to_vec();
            rtc.codec_config()
                .params()
                .iter()
                .filter(|p| remote.contains(&p.pt()))
                .filter(|p| p.spec().codec == params.spec().codec)
                .filter(|p| takes_packetization(p, params))
                .max_by_key(|p| fmtp_score(p, params))
                .map(|p| p.pt())
        });
        let Some(pt) = pt else {
            self.counters.packets_no_codec += 1;
            return;
        };
        // A new epoch of VP8 continues the picture numbering of the newest packet sent, found
        // again in the stream's history (the own egress) or its layers' caches (str0m's path).
        // Looked up only then: other packets pay nothing for it.
        let streams = &self.streams;
        let sent = |source: Source, seq: u64| {
            let local = streams.get(stream)?;
            let found = |p: &&Arc<MediaPacket>| p.seq == seq && p.source() == source;
            local
                .history
                .find(Kind::Video, source, seq)
                .or_else(|| local.layers.all().find(found))
                .map(|p| &**p)
        };
        let Some((seq, time)) = track.rewrite(pkt, now, sent) else {
            return;
        };
        let vp8 = track.vp8();
        if let Some(sender) = sender {
            // Never through str0m once the egress has the keys: the same keys and SSRCs would
            // serve twice. Without a path yet (str0m's DTLS always leaves one first) nothing goes.
            let Some(path) = *media_path else {
                return;
            };
            // The gateway's own code, contained as str0m's write is: a panic costs the viewer.
            let buf = self.outbox.buffer();
            let written = self.faults.isolate(Site::Write, Some(id), || {
                sender.write(mid, *pt, seq, time, pkt, vp8, buf, now)
            });
            let Some(written) = written else {
                self.remove(now, id, PANIC);
                return;
            };
            if let Some(contents) = written {
                self.outbox.send_on(path, contents);
                // The session is at hand: no second lookup for the count.
                if let Some(secs) = s.count_written(now, pkt.kind) {
                    self.first_frames.push(secs);
                }
                self.counters.packets_forwarded += 1;
                self.counters.packets_direct += 1;
            }
            return;
        }
        let ssrc = tx_ssrcs.iter().find(|(m, _)| *m == mid).map(|(_, s)| *s);
        let mut api = rtc.direct_api();
        let tx = match ssrc {
            Some(ssrc) => api.stream_tx(&ssrc),
            None => api.stream_tx_by_mid(mid, None),
        };
        let Some(tx) = tx else {
            return;
        };
        let playout = self
            .config
            .media
            .playout_delay_max_ms
            .filter(|_| pkt.kind == Kind::Video)
            .map(|ms| str0m::media::MediaTime::from_hundredths(ms.min(40_950) / 10));
        let ext_vals = str0m::rtp::ExtensionValues {
            abs_capture_time: pkt.capture,
            play_delay_min: playout.map(|_| str0m::media::MediaTime::from_hundredths(0)),
            play_delay_max: playout,
            ..Default::default()
        };
        // str0m takes the payload as it is: a rewritten one is a copy.
        let payload = match vp8 {
            None => pkt.payload.clone(),
            Some(offsets) => {
                let mut copy: Arc<[u8]> = Arc::from(&pkt.payload[..]);
                if let Some(bytes) = Arc::get_mut(&mut copy) {
                    crate::vp8::rewrite(bytes, offsets);
                }
                copy
            }
        };
        let write = RtpWrite::new(pt, seq.into(), time, pkt.received, payload)
            .marker(pkt.marker)
            .ext_vals(ext_vals)
            .nackable(true);
        if self
            .faults
            .isolate(Site::Write, Some(id), || tx.write_rtp(write))
            .is_none()
        {
            self.remove(now, id, PANIC);
            return;
        }
        self.written(now, id, pkt.kind);
        self.drive(now, id);
    }

    /// Counts a packet written to viewer `id`, and its first video packet's time.
    fn written(&mut self, now: Instant, id: SessionId, kind: Kind) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        if let Some(secs) = s.count_written(now, kind) {
            self.first_frames.push(secs);
        }
        self.counters.packets_forwarded += 1;
    }
}

/// Video layers one publisher may send; RFC 8853 puts no bound on an offer's rids, and
/// encoders send three. Packets of more are dropped.
const MAX_LAYERS: usize = 8;

/// The layer number of a publisher's new incoming stream: video layers are numbered by rid in
/// the order their first packets come; audio and video without simulcast are layer 0.
fn layer_of(
    rids: &mut Vec<Option<Rid>>,
    kind: Kind,
    rid: Option<Rid>,
) -> Option<(u8, Option<Rid>)> {
    if kind == Kind::Audio {
        return Some((0, None));
    }
    let index = match rids.iter().position(|r| *r == rid) {
        Some(i) => i,
        None if rids.len() < MAX_LAYERS => {
            rids.push(rid);
            rids.len() - 1
        }
        None => return None,
    };
    Some((u8::try_from(index).ok()?, rid))
}

/// Whether a viewer's payload type can carry the publisher's packets: an H264 receiver in
/// packetization mode 0 need not understand the FU-A and STAP-A packets of mode 1 (RFC 6184
/// §6.2), so mode-1 packets never go to a mode-0 payload type.
fn takes_packetization(
    viewer: &str0m::format::PayloadParams,
    publisher: &str0m::format::PayloadParams,
) -> bool {
    let mode = |p: &str0m::format::PayloadParams| p.spec().format.packetization_mode.unwrap_or(0);
    mode(viewer) >= mode(publisher)
}

/// How well the viewer's payload parameters fit the publisher's: same H264 profile and
/// packetization mode first.
fn fmtp_score(ours: &str0m::format::PayloadParams, theirs: &str0m::format::PayloadParams) -> u32 {
    let (a, b) = (ours.spec().format, theirs.spec().format);
    let mut score = 0;
    if a.packetization_mode == b.packetization_mode {
        score += 2;
    }
    if a.profile_level_id.map(|p| p >> 8) == b.profile_level_id.map(|p| p >> 8) {
        score += 1;
    }
    if a.profile_id == b.profile_id {
        score += 1;
    }
    score
}
