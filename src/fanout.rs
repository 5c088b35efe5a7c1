//! Fan-out of one publisher's RTP packets to many viewers, without re-packetizing.
//!
//! - [`MediaPacket`]: one received RTP packet with what the viewers need to rewrite it; its payload
//!   is an `Arc<[u8]>` shared by every viewer on a shard.
//! - [`StreamCache`]: per stream and shard, the packets since the last keyframe (the GOP cache) so a
//!   joining viewer starts on a decodable frame at once.
//! - [`TrackRewriter`]: per viewer and track, the sequence-number and timestamp rebasing that keeps
//!   a viewer's stream continuous across publisher changes and starts below the first SRTP
//!   rollover (a new receiver assumes ROC 0); for VP8 also the picture numbering ([`crate::vp8`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use str0m::format::{Codec, PayloadParams};

use crate::sdp::Kind;
use crate::session::SessionId;
use crate::vp8;

/// One RTP packet from a publisher, as the fan-out sees it.
#[derive(Clone, Debug)]
pub struct MediaPacket {
    /// The publishing session: a change means a new publisher (rebase, wait for a keyframe).
    pub publisher: SessionId,
    pub kind: Kind,
    /// The video layer (simulcast) it belongs to, numbered by the publisher's shard; 0 for
    /// audio and for video without simulcast. See [`crate::simulcast`].
    pub layer: u8,
    /// That layer's rid, if the publisher named it.
    pub rid: Option<str0m::media::Rid>,
    /// The publisher's payload parameters for this packet's PT; viewers map them by codec.
    pub params: PayloadParams,
    /// Extended (64-bit) sequence number from the publisher's leg.
    pub seq: u64,
    pub time: u32,
    pub marker: bool,
    /// This packet carries (part of) a keyframe.
    pub keyframe: bool,
    pub payload: Arc<[u8]>,
    /// When the gateway received it, used as the RTP wallclock for sender reports.
    pub received: Instant,
    /// The publisher's abs-capture-time header extension, forwarded unchanged to viewers
    /// that negotiated it, so a player can tell the one-way delay from the capture.
    pub capture: Option<str0m::rtp::AbsCaptureTime>,
}

/// What a viewer's track follows: the publishing session and its video layer. Each is its
/// own sequence number and timestamp space.
pub type Source = (SessionId, u8);

impl MediaPacket {
    pub fn source(&self) -> Source {
        (self.publisher, self.layer)
    }

    /// A copy whose payload is a fresh allocation, for handing to another shard: sharing one
    /// `Arc` across cores would bounce its reference count between their caches per viewer.
    pub fn for_other_shard(&self) -> MediaPacket {
        MediaPacket {
            payload: Arc::from(&self.payload[..]),
            ..self.clone()
        }
    }
}

/// Whether an RTP payload of `codec` carries a keyframe (or its start), by codec rules:
/// H264 IDR, VP8 key frame tag, VP9 non-inter-predicted picture, AV1 new coded video sequence.
pub fn is_keyframe(codec: Codec, payload: &[u8]) -> bool {
    use str0m::format::{
        detect_av1_keyframe, detect_h264_keyframe, detect_vp8_keyframe, detect_vp9_keyframe,
    };
    match codec {
        Codec::H264 => detect_h264_keyframe(payload),
        Codec::Vp8 => detect_vp8_keyframe(payload),
        Codec::Vp9 => detect_vp9_keyframe(payload),
        Codec::Av1 => detect_av1_keyframe(payload),
        _ => false,
    }
}

/// What pushing a packet into a [`StreamCache`] means for waiting viewers.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    /// An ordinary packet: forward it to viewers already playing.
    Packet,
    /// The first keyframe packet of a frame: viewers waiting for a keyframe start with the cached
    /// packets of this frame (`StreamCache::frame`), which include this one.
    KeyframeStart,
}

/// The video packets of one stream since its last keyframe, kept by every shard that has viewers of it
/// (and by the publisher's shard, which hands it to shards that subscribe later).
///
/// Packets come in arrival order, which after a loss is not sequence order: a retransmission
/// arrives after packets sent later, and may be the keyframe's first packet. Frames are told
/// apart by RTP timestamp and ordered by sequence number, so a late packet neither splits the
/// frame it belongs to nor moves the start of the cache.
#[derive(Debug)]
pub struct StreamCache {
    packets: Vec<Arc<MediaPacket>>,
    /// Timestamp and first sequence number of the newest video frame (by sequence number).
    frame: Option<(u32, u64)>,
    /// The same for the frame before it: a late keyframe packet can belong to that one.
    previous_frame: Option<(u32, u64)>,
    /// The keyframe `packets` starts with: its timestamp and first sequence number.
    key: Option<(u32, u64)>,
    /// Highest video sequence number seen.
    max_seq: Option<u64>,
    /// Keep whole GOPs (the GOP cache) or only the frames a late keyframe packet may need.
    keep_gop: bool,
    max_packets: usize,
    pub publisher: Option<SessionId>,
}

impl StreamCache {
    pub fn new(keep_gop: bool, max_packets: usize) -> StreamCache {
        StreamCache {
            packets: Vec::new(),
            frame: None,
            previous_frame: None,
            key: None,
            max_seq: None,
            keep_gop,
            max_packets,
            publisher: None,
        }
    }

    /// Forgets everything: the publisher left, the next one starts from its own keyframe.
    pub fn reset(&mut self) {
        self.packets.clear();
        self.frame = None;
        self.previous_frame = None;
        self.key = None;
        self.max_seq = None;
        self.publisher = None;
    }

    pub fn push(&mut self, pkt: Arc<MediaPacket>) -> Pushed {
        if self.publisher != Some(pkt.publisher) {
            self.reset();
            self.publisher = Some(pkt.publisher);
        }
        if pkt.kind == Kind::Audio {
            // Audio is not cached: a joiner's audio starts live. Replayed audio would be up to a
            // GOP stale, and inside a GOP burst it is lost for good when a receive buffer
            // overflows (audio has no retransmission; video is recovered by NACK).
            return Pushed::Packet;
        }
        let newest = self.max_seq.is_none_or(|m| pkt.seq > m);
        if newest {
            self.max_seq = Some(pkt.seq);
            if self.frame.is_none_or(|(t, _)| t != pkt.time) {
                self.previous_frame = self.frame;
                self.frame = Some((pkt.time, pkt.seq));
                if !self.keep_gop || self.key.is_none() {
                    // Nothing before the previous frame can start a viewer: drop it.
                    if let Some((_, first)) = self.previous_frame {
                        self.packets.retain(|p| p.seq >= first);
                    }
                }
            }
        } else {
            // A late packet may be the new first packet of its frame.
            for (t, first) in [&mut self.frame, &mut self.previous_frame]
                .into_iter()
                .flatten()
            {
                if *t == pkt.time && pkt.seq < *first {
                    *first = pkt.seq;
                }
            }
        }
        if let Some((t, first)) = self.key {
            if pkt.seq < first {
                if t == pkt.time {
                    // The keyframe's own first packet, retransmitted: joiners start on it.
                    self.key = Some((t, pkt.seq));
                    self.packets.insert(0, pkt);
                }
                // Otherwise late, from before the cached keyframe: no joiner needs it.
                return Pushed::Packet;
            }
        }
        if self.packets.len() >= self.max_packets {
            // A GOP longer than the cache: stop caching until the next keyframe.
            self.packets.clear();
            self.key = None;
        }
        let starts_keyframe = pkt.kind == Kind::Video
            && pkt.keyframe
            && self
                .key
                .is_none_or(|(t, first)| t != pkt.time && pkt.seq > first);
        let time = pkt.time;
        self.packets.push(pkt);
        if starts_keyframe {
            // The frame starts at its lowest sequence number seen so far (an H264 SPS/PPS
            // packet precedes the IDR with the same timestamp).
            let first = self
                .packets
                .iter()
                .filter(|p| p.time == time)
                .map(|p| p.seq)
                .min()
                .unwrap_or(0);
            self.packets.retain(|p| p.seq >= first);
            self.packets.sort_by_key(|p| p.seq);
            self.key = Some((time, first));
            return Pushed::KeyframeStart;
        }
        Pushed::Packet
    }

    /// The cached packets from the last keyframe on, if the cache holds one (the GOP a new viewer
    /// starts with).
    pub fn gop(&self) -> Option<&[Arc<MediaPacket>]> {
        (self.key.is_some() && self.keep_gop).then_some(&self.packets[..])
    }

    /// Whether `gop` (from [`StreamCache::gop`]) has every packet from its keyframe's first to its
    /// newest: a packet lost upstream and not repaired yet leaves a hole, and a viewer started
    /// on it cannot decode until the repair arrives.
    pub fn is_whole(gop: &[Arc<MediaPacket>]) -> bool {
        let mut seqs: Vec<u64> = gop.iter().map(|p| p.seq).collect();
        seqs.sort_unstable();
        seqs.dedup();
        match (seqs.first(), seqs.last()) {
            (Some(a), Some(b)) => b - a + 1 == seqs.len() as u64,
            _ => false,
        }
    }

    /// After [`Pushed::KeyframeStart`]: the keyframe so far, in sequence order, and any packet
    /// of a later frame that arrived before it.
    pub fn frame(&self) -> &[Arc<MediaPacket>] {
        &self.packets
    }

    /// Everything cached, for handing to a shard that subscribes.
    pub fn all(&self) -> &[Arc<MediaPacket>] {
        &self.packets
    }
}

/// A stream's newest packets of each kind on a shard, shared by its viewers' NACK answers. A
/// viewer's sequence numbers map back to the publisher's through its rewriter
/// ([`TrackRewriter::source`]), so no viewer keeps a list of what it was sent.
#[derive(Debug)]
pub struct History {
    video: VecDeque<Arc<MediaPacket>>,
    audio: VecDeque<Arc<MediaPacket>>,
    keep_video: usize,
    keep_audio: usize,
}

impl History {
    /// Keeps `keep_video` video packets and `keep_audio` audio packets.
    pub fn new(keep_video: usize, keep_audio: usize) -> History {
        History {
            video: VecDeque::new(),
            audio: VecDeque::new(),
            keep_video,
            keep_audio,
        }
    }

    pub fn push(&mut self, pkt: &Arc<MediaPacket>) {
        let (list, keep) = match pkt.kind {
            Kind::Video => (&mut self.video, self.keep_video),
            Kind::Audio => (&mut self.audio, self.keep_audio),
        };
        if keep == 0 {
            return;
        }
        if list.len() >= keep {
            list.pop_front();
        }
        list.push_back(pkt.clone());
    }

    /// The packet `seq` of `source`'s `kind` track, if still kept. Newest first: NACKs ask
    /// for recent packets, and a repaired packet comes late, out of order.
    pub fn find(&self, kind: Kind, source: Source, seq: u64) -> Option<&Arc<MediaPacket>> {
        let list = match kind {
            Kind::Video => &self.video,
            Kind::Audio => &self.audio,
        };
        list.iter()
            .rev()
            .find(|p| p.seq == seq && p.source() == source)
    }
}

/// Per viewer and track: rewrites sequence numbers and timestamps into the viewer's own
/// continuous space, and holds video back until a keyframe.
///
/// VP8 numbers its pictures too, per encoder, so each layer and publisher has its own
/// numbering: from the second epoch on, the epoch's [`vp8::Offsets`] continue the viewer's
/// picture ids, TL0PICIDX and KEYIDX from the newest packet it was sent. That packet is found
/// again when the epoch starts (in the stream's history or caches) rather than its descriptor
/// read on every packet, so a track pays nothing per packet for it until a move.
#[derive(Debug)]
pub struct TrackRewriter {
    pub kind: Kind,
    /// Video that has not yet had a keyframe since the viewer joined or the publisher changed.
    pub waiting_keyframe: bool,
    /// The source of the current epoch: a new publisher, or another layer, starts a new one.
    epoch: Option<Source>,
    /// The source of the epoch the newest packet sent (`last_out_seq`) belongs to; unlike
    /// `epoch` kept when the publisher leaves, for the next epoch to continue from.
    last_source: Option<Source>,
    /// What the current epoch adds to VP8 descriptors; `None` for none (not VP8, the first
    /// epoch, or offsets of 0).
    vp8: Option<vp8::Offsets>,
    /// First input sequence number of this epoch; older packets belong to a cut-off past.
    epoch_first_seq: u64,
    /// The output sequence number of `epoch_first_seq`.
    epoch_first_out: u64,
    seq_offset: i64,
    ts_offset: u32,
    last_out_seq: u64,
    last_out_ts: u32,
    last_out_at: Option<Instant>,
    clock_rate: u32,
    /// The next packet starts the track even without a keyframe flag: it is the first packet of
    /// a keyframe's frame (an H264 SPS/PPS packet precedes the IDR with the same timestamp).
    start_next: bool,
    /// Last (input params, output PT) mapping: the codec does not change per packet.
    pt_cache: Option<(PayloadParams, str0m::media::Pt)>,
    /// Where the first publisher's packets start in the viewer's sequence and timestamp
    /// space, drawn by the caller (RFC 3550 §5.1 wants a random start).
    random_start: (u16, u32),
}

impl TrackRewriter {
    pub fn new(kind: Kind, random_start: (u16, u32)) -> TrackRewriter {
        TrackRewriter {
            random_start,
            kind,
            waiting_keyframe: kind == Kind::Video,
            epoch: None,
            last_source: None,
            vp8: None,
            epoch_first_seq: 0,
            epoch_first_out: 0,
            seq_offset: 0,
            ts_offset: 0,
            last_out_seq: 0,
            last_out_ts: 0,
            last_out_at: None,
            clock_rate: 90_000,
            start_next: false,
            pt_cache: None,
        }
    }

    /// Whether any packet of the current publisher was written (audio starts at once).
    pub fn started(&self) -> bool {
        self.epoch.is_some()
    }

    /// Starts the track with the next packet: the caller replays a keyframe's frame from its start.
    pub fn start_with_next(&mut self) {
        self.start_next = true;
    }

    /// The publisher is gone: the next packets come from a new one.
    pub fn publisher_left(&mut self) {
        self.epoch = None;
        self.waiting_keyframe = self.kind == Kind::Video;
    }

    /// Output (extended sequence number, RTP timestamp) for `pkt`, or `None` to drop it; the
    /// payload's VP8 rewrite is [`TrackRewriter::vp8`]. `sent` finds a packet sent before by
    /// its source and sequence number: a new epoch of VP8 continues the numbering of the
    /// newest one.
    pub fn rewrite<'h>(
        &mut self,
        pkt: &MediaPacket,
        now: Instant,
        sent: impl FnOnce(Source, u64) -> Option<&'h MediaPacket>,
    ) -> Option<(u64, u32)> {
        if self.epoch != Some(pkt.source()) {
            if self.kind == Kind::Video && !pkt.keyframe && !self.start_next {
                self.waiting_keyframe = true;
                return None;
            }
            self.vp8 = self.vp8_continuing(pkt, sent);
            self.clock_rate = pkt.params.spec().clock_rate.get();
            let (base_seq, base_ts) = match self.last_out_at {
                // First publisher this viewer sees: random start below 2^15, so the SRTP
                // rollover counter the viewer assumes (0) stays right for a long time.
                None => (self.random_start.0 as u64 & 0x7fff | 1, self.random_start.1),
                // A new publisher after another: continue where the last one stopped, with the
                // timestamp advanced by the wall time that passed.
                Some(at) => {
                    let gap = now.saturating_duration_since(at).as_secs_f64();
                    let ticks = (gap * self.clock_rate as f64) as u32;
                    (
                        self.last_out_seq + 1,
                        self.last_out_ts.wrapping_add(ticks.max(1)),
                    )
                }
            };
            self.epoch = Some(pkt.source());
            self.last_source = self.epoch;
            self.epoch_first_seq = pkt.seq;
            self.epoch_first_out = base_seq;
            self.seq_offset = base_seq as i64 - pkt.seq as i64;
            self.ts_offset = base_ts.wrapping_sub(pkt.time);
            self.pt_cache = None;
        }
        if self.waiting_keyframe {
            if !pkt.keyframe && !self.start_next {
                return None;
            }
            self.waiting_keyframe = false;
        }
        self.start_next = false;
        if pkt.seq < self.epoch_first_seq {
            return None;
        }
        let seq = (pkt.seq as i64 + self.seq_offset) as u64;
        let ts = pkt.time.wrapping_add(self.ts_offset);
        if seq > self.last_out_seq || self.last_out_at.is_none() {
            self.last_out_seq = seq;
            self.last_out_ts = ts;
        }
        self.last_out_at = Some(now);
        Some((seq, ts))
    }

    /// The VP8 descriptor rewrite of the current epoch, to apply to each payload as it is
    /// copied out; `None` for none.
    pub fn vp8(&self) -> Option<vp8::Offsets> {
        self.vp8
    }

    /// The VP8 offsets under which `pkt`, the first packet of a new epoch, continues the
    /// numbering of the newest packet sent before it (found by `sent`). `None` for the first
    /// epoch, for other codecs, and where that packet is gone or has no such fields: the new
    /// source's numbering then goes out as it is.
    fn vp8_continuing<'h>(
        &self,
        pkt: &MediaPacket,
        sent: impl FnOnce(Source, u64) -> Option<&'h MediaPacket>,
    ) -> Option<vp8::Offsets> {
        if self.kind != Kind::Video || pkt.params.spec().codec != Codec::Vp8 {
            return None;
        }
        self.last_out_at?;
        let first = vp8::parse(&pkt.payload)?;
        let seq = u64::try_from(self.last_out_seq as i64 - self.seq_offset).ok()?;
        let newest = sent(self.last_source?, seq)
            .filter(|p| p.kind == Kind::Video && p.params.spec().codec == Codec::Vp8)?;
        let last = self
            .vp8
            .unwrap_or_default()
            .apply(vp8::parse(&newest.payload)?);
        let offsets = vp8::Offsets::continuing(&last, &first);
        (!offsets.is_zero()).then_some(offsets)
    }

    /// Where output sequence number `out` came from, if it is of the current epoch and was
    /// sent: the source, its sequence number, the RTP time offset to add to the packet's,
    /// and the VP8 rewrite it went out with (a resend must carry the same descriptor). An
    /// older epoch's numbers map to nothing: its offsets are gone.
    pub fn source(&self, out: u64) -> Option<(Source, u64, u32, Option<vp8::Offsets>)> {
        let publisher = self.epoch?;
        if out < self.epoch_first_out || out > self.last_out_seq || self.last_out_at.is_none() {
            return None;
        }
        let seq = u64::try_from(out as i64 - self.seq_offset).ok()?;
        (seq >= self.epoch_first_seq).then_some((publisher, seq, self.ts_offset, self.vp8))
    }

    /// The viewer's PT for `params` as last mapped by [`TrackRewriter::map_pt`].
    pub fn mapped_pt(&self, params: &PayloadParams) -> Option<str0m::media::Pt> {
        self.pt_cache
            .as_ref()
            .filter(|(p, _)| p == params)
            .map(|(_, pt)| *pt)
    }

    /// The viewer's PT for the publisher's payload parameters, matched by codec and format.
    pub fn map_pt(
        &mut self,
        params: &PayloadParams,
        find: impl FnOnce(&PayloadParams) -> Option<str0m::media::Pt>,
    ) -> Option<str0m::media::Pt> {
        if let Some((p, pt)) = &self.pt_cache {
            if p == params {
                return Some(*pt);
            }
        }
        let pt = find(params)?;
        self.pt_cache = Some((*params, pt));
        Some(pt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::format::CodecConfig;

    fn params(kind: Kind) -> PayloadParams {
        let mut c = CodecConfig::new_with_defaults();
        let codec = if kind == Kind::Video {
            Codec::Vp8
        } else {
            Codec::Opus
        };
        c.retain_for_test(codec)
    }

    trait Pick {
        fn retain_for_test(&mut self, codec: Codec) -> PayloadParams;
    }
    impl Pick for CodecConfig {
        fn retain_for_test(&mut self, codec: Codec) -> PayloadParams {
            *self
                .find(|p| p.spec().codec == codec)
                .expect("codec in defaults")
        }
    }

    fn pkt(publisher: u128, kind: Kind, seq: u64, time: u32, keyframe: bool) -> Arc<MediaPacket> {
        Arc::new(MediaPacket {
            publisher: SessionId(publisher),
            kind,
            layer: 0,
            rid: None,
            params: params(kind),
            seq,
            time,
            marker: false,
            keyframe,
            payload: Arc::from(&[seq as u8][..]),
            received: Instant::now(),
            capture: None,
        })
    }

    /// For [`TrackRewriter::rewrite`]: no packet sent before is found.
    fn nothing_sent(_: Source, _: u64) -> Option<&'static MediaPacket> {
        None
    }

    #[test]
    fn a_viewers_sequence_numbers_map_back_to_the_publishers_within_the_epoch() {
        let mut r = TrackRewriter::new(Kind::Video, (1000, 5000));
        let now = Instant::now();
        let (first, ts) = r
            .rewrite(&pkt(1, Kind::Video, 40, 900, true), now, nothing_sent)
            .expect("key");
        let (second, _) = r
            .rewrite(&pkt(1, Kind::Video, 41, 900, false), now, nothing_sent)
            .expect("next");
        assert_eq!((first, second, ts), (1001, 1002, 5000));
        assert_eq!(
            r.source(1001),
            Some(((SessionId(1), 0), 40, 5000u32.wrapping_sub(900), None))
        );
        assert_eq!(r.source(1002).map(|s| s.1), Some(41));
        assert_eq!(r.source(1003), None, "not sent yet");
        assert_eq!(r.source(1000), None, "before the epoch");
        // A new publisher starts a new epoch: the old numbers map to nothing.
        r.rewrite(&pkt(2, Kind::Video, 7, 50, true), now, nothing_sent)
            .expect("new key");
        assert_eq!(r.source(1002), None);
        assert_eq!(
            r.source(1003).map(|s| (s.0, s.1)),
            Some(((SessionId(2), 0), 7))
        );
    }

    /// A VP8 packet of publisher 1's `layer` whose descriptor carries a 15-bit picture id,
    /// TL0PICIDX and KEYIDX (`ids`), then a frame tag.
    fn vp8_pkt(layer: u8, seq: u64, time: u32, keyframe: bool, ids: (u16, u8, u8)) -> MediaPacket {
        let (pid, tl0, keyidx) = (ids.0.to_be_bytes(), ids.1, ids.2);
        let payload = [
            0x90,
            0xf0,
            0x80 | pid[0],
            pid[1],
            tl0,
            keyidx,
            !keyframe as u8,
        ];
        MediaPacket {
            layer,
            payload: Arc::from(&payload[..]),
            ..(*pkt(1, Kind::Video, seq, time, keyframe)).clone()
        }
    }

    /// The picture id, TL0PICIDX and KEYIDX `pkt` goes out with under `offsets`.
    fn sent_as(pkt: &MediaPacket, offsets: Option<vp8::Offsets>) -> (u16, u8, u8) {
        let mut payload = pkt.payload.to_vec();
        if let Some(o) = offsets {
            vp8::rewrite(&mut payload, o);
        }
        let d = vp8::parse(&payload).expect("a descriptor");
        let pid = d.picture_id.expect("a picture id");
        assert!(pid.long, "the width stays");
        (
            pid.value,
            d.tl0picidx.expect("TL0PICIDX"),
            d.keyidx.expect("KEYIDX"),
        )
    }

    #[test]
    fn vp8_picture_numbering_continues_across_layers_from_the_newest_packet_sent() {
        let mut r = TrackRewriter::new(Kind::Video, (1000, 5000));
        let now = Instant::now();
        let mut sent: Vec<MediaPacket> = Vec::new();
        let send = |r: &mut TrackRewriter, p: MediaPacket, sent: &mut Vec<MediaPacket>| {
            let found = |source: Source, seq: u64| {
                sent.iter().find(|s| s.source() == source && s.seq == seq)
            };
            let (seq, _) = r.rewrite(&p, now, found).expect("sent");
            let out = sent_as(&p, r.vp8());
            assert_eq!(
                r.source(seq).map(|s| s.3),
                Some(r.vp8()),
                "a resend's rewrite"
            );
            sent.push(p);
            out
        };
        // The first epoch goes out as the publisher numbered it, at no cost.
        let a = vp8_pkt(0, 10, 0, true, (100, 7, 3));
        assert_eq!(send(&mut r, a, &mut sent), (100, 7, 3));
        assert_eq!(r.vp8(), None);
        send(&mut r, vp8_pkt(0, 11, 0, true, (100, 7, 3)), &mut sent);
        send(&mut r, vp8_pkt(0, 12, 3000, false, (101, 8, 3)), &mut sent);
        // Layer 1, its own encoder: one past the newest picture sent.
        let b = vp8_pkt(1, 500, 3000, true, (0x7ffe, 255, 31));
        assert_eq!(send(&mut r, b, &mut sent), (102, 9, 4));
        let b = vp8_pkt(1, 501, 6000, false, (0x7fff, 0, 31));
        assert_eq!(send(&mut r, b, &mut sent), (103, 10, 4));
        let b = vp8_pkt(1, 502, 9000, false, (0, 1, 31));
        assert_eq!(send(&mut r, b, &mut sent), (104, 11, 4));
        // Back to layer 0, from where layer 1 was rewritten to.
        let a = vp8_pkt(0, 20, 9000, true, (110, 16, 4));
        assert_eq!(send(&mut r, a, &mut sent), (105, 12, 5));
        assert_eq!(r.vp8().map(|o| o.picture_id), Some((1 << 15) + 105 - 110));
        // A new publisher whose numbering happens to continue already: nothing to rewrite.
        r.publisher_left();
        let c = MediaPacket {
            publisher: SessionId(2),
            ..vp8_pkt(0, 7, 0, true, (106, 13, 6))
        };
        assert_eq!(send(&mut r, c, &mut sent), (106, 13, 6));
        assert_eq!(r.vp8(), None);
        // The newest packet sent is gone: the next source's numbering goes out as it is.
        let d = vp8_pkt(1, 600, 0, true, (9, 9, 9));
        r.rewrite(&d, now, nothing_sent).expect("sent");
        assert_eq!(r.vp8(), None);
    }

    #[test]
    fn the_history_keeps_the_newest_packets_of_each_kind() {
        let mut h = History::new(2, 1);
        for seq in 1..=3 {
            h.push(&pkt(1, Kind::Video, seq, 0, false));
        }
        h.push(&pkt(1, Kind::Audio, 9, 0, false));
        let one = (SessionId(1), 0);
        assert!(h.find(Kind::Video, one, 1).is_none(), "pushed out");
        assert!(h.find(Kind::Video, one, 3).is_some());
        assert!(
            h.find(Kind::Video, (SessionId(2), 0), 3).is_none(),
            "another publisher's"
        );
        assert!(
            h.find(Kind::Video, (SessionId(1), 1), 3).is_none(),
            "another layer's"
        );
        assert!(h.find(Kind::Audio, one, 9).is_some());
        assert!(h.find(Kind::Video, one, 9).is_none(), "the audio track's");
    }

    #[test]
    fn a_gop_is_whole_until_a_packet_is_missing_and_again_once_it_is_repaired() {
        let mut c = StreamCache::new(true, 100);
        c.push(pkt(1, Kind::Video, 10, 200, true));
        c.push(pkt(1, Kind::Video, 11, 200, true));
        assert!(StreamCache::is_whole(c.gop().expect("gop")));
        // 12 lost upstream: 13 arrives first.
        c.push(pkt(1, Kind::Video, 13, 300, false));
        assert!(!StreamCache::is_whole(c.gop().expect("gop")));
        // The repair, and a duplicate of it.
        c.push(pkt(1, Kind::Video, 12, 300, false));
        c.push(pkt(1, Kind::Video, 12, 300, false));
        assert!(StreamCache::is_whole(c.gop().expect("gop")));
        assert!(!StreamCache::is_whole(&[]));
    }

    #[test]
    fn gop_cache_starts_at_the_frame_of_the_last_keyframe() {
        let mut c = StreamCache::new(true, 100);
        assert_eq!(c.push(pkt(1, Kind::Video, 1, 100, false)), Pushed::Packet);
        assert!(c.gop().is_none());
        // SPS in its own packet, then the IDR, same timestamp: the frame starts at the SPS.
        assert_eq!(c.push(pkt(1, Kind::Video, 2, 200, false)), Pushed::Packet);
        assert_eq!(c.push(pkt(1, Kind::Audio, 50, 9, false)), Pushed::Packet);
        assert_eq!(
            c.push(pkt(1, Kind::Video, 3, 200, true)),
            Pushed::KeyframeStart
        );
        assert_eq!(c.push(pkt(1, Kind::Video, 4, 200, true)), Pushed::Packet);
        assert_eq!(c.push(pkt(1, Kind::Video, 5, 300, false)), Pushed::Packet);
        let seqs: Vec<u64> = c.gop().expect("gop").iter().map(|p| p.seq).collect();
        assert_eq!(
            seqs,
            vec![2, 3, 4, 5],
            "video from the keyframe's frame on; no audio"
        );
        // A new publisher empties the cache.
        c.push(pkt(2, Kind::Video, 9, 1, false));
        assert!(c.gop().is_none());
    }

    #[test]
    fn without_gop_cache_only_the_last_two_frames_are_kept() {
        let mut c = StreamCache::new(false, 100);
        c.push(pkt(1, Kind::Video, 1, 100, true));
        c.push(pkt(1, Kind::Video, 2, 200, false));
        c.push(pkt(1, Kind::Video, 3, 300, false));
        assert!(c.gop().is_none());
        let seqs: Vec<u64> = c.all().iter().map(|p| p.seq).collect();
        assert_eq!(seqs, vec![2, 3]);
    }

    fn seqs(c: &StreamCache) -> Vec<u64> {
        c.gop().expect("gop").iter().map(|p| p.seq).collect()
    }

    #[test]
    fn a_late_packet_of_the_keyframe_joins_its_frame() {
        let mut c = StreamCache::new(true, 100);
        c.push(pkt(1, Kind::Video, 1, 100, true));
        // Frame 200: SPS (seq 2) lost, IDR start 3, rest 4; then frame 300 begins.
        c.push(pkt(1, Kind::Video, 3, 200, true));
        c.push(pkt(1, Kind::Video, 4, 200, false));
        c.push(pkt(1, Kind::Video, 5, 300, false));
        assert_eq!(seqs(&c), vec![3, 4, 5]);
        // The retransmitted SPS comes first for later joiners.
        assert_eq!(c.push(pkt(1, Kind::Video, 2, 200, false)), Pushed::Packet);
        assert_eq!(seqs(&c), vec![2, 3, 4, 5]);
        // A late packet of the GOP before is not cached.
        c.push(pkt(1, Kind::Video, 1, 100, false));
        assert_eq!(seqs(&c), vec![2, 3, 4, 5]);
    }

    #[test]
    fn a_retransmitted_keyframe_start_after_the_next_frame_keeps_the_whole_keyframe() {
        let mut c = StreamCache::new(true, 100);
        c.push(pkt(1, Kind::Video, 1, 100, true));
        c.push(pkt(1, Kind::Video, 2, 100, false));
        // Keyframe 200: SPS 3, IDR start 4 (lost), IDR rest 5; delta 300: 6, then the RTX of 4.
        c.push(pkt(1, Kind::Video, 3, 200, false));
        c.push(pkt(1, Kind::Video, 5, 200, false));
        c.push(pkt(1, Kind::Video, 6, 300, false));
        assert_eq!(
            c.push(pkt(1, Kind::Video, 4, 200, true)),
            Pushed::KeyframeStart
        );
        assert_eq!(seqs(&c), vec![3, 4, 5, 6], "from the SPS on, in order");
        assert_eq!(c.frame().first().map(|p| p.seq), Some(3));
        // A second IDR packet of the same frame does not start it again.
        assert_eq!(c.push(pkt(1, Kind::Video, 7, 200, true)), Pushed::Packet);
        c.push(pkt(1, Kind::Video, 8, 300, false));
        assert_eq!(seqs(&c), vec![3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn rewriter_waits_for_keyframe_and_rebases_across_publishers() {
        let now = Instant::now();
        let mut r = TrackRewriter::new(Kind::Video, (1234, 5678));
        assert_eq!(
            r.rewrite(&pkt(1, Kind::Video, 1000, 5, false), now, nothing_sent),
            None
        );
        let (s1, t1) = r
            .rewrite(&pkt(1, Kind::Video, 1001, 5, true), now, nothing_sent)
            .expect("key");
        assert!(s1 < 1 << 15, "starts below the first rollover: {s1}");
        let (s2, t2) = r
            .rewrite(&pkt(1, Kind::Video, 1003, 3005, false), now, nothing_sent)
            .expect("next");
        assert_eq!(s2, s1 + 2, "gaps are kept so NACKs line up");
        assert_eq!(t2.wrapping_sub(t1), 3000);
        // A new publisher with unrelated numbers continues the viewer's sequence.
        r.publisher_left();
        assert_eq!(
            r.rewrite(&pkt(2, Kind::Video, 7, 77, false), now, nothing_sent),
            None
        );
        let later = now + std::time::Duration::from_millis(100);
        let (s3, t3) = r
            .rewrite(&pkt(2, Kind::Video, 8, 77, true), later, nothing_sent)
            .expect("key");
        assert_eq!(s3, s2 + 1);
        assert_eq!(t3.wrapping_sub(t2), 9000, "100 ms at 90 kHz");
        // Older than the epoch's first packet: dropped.
        assert_eq!(
            r.rewrite(&pkt(2, Kind::Video, 6, 70, false), later, nothing_sent),
            None
        );
    }

    #[test]
    fn audio_starts_without_keyframe() {
        let mut r = TrackRewriter::new(Kind::Audio, (1234, 5678));
        assert!(r
            .rewrite(
                &pkt(1, Kind::Audio, 10, 0, false),
                Instant::now(),
                nothing_sent
            )
            .is_some());
    }
}
