//! VP8 picture numbering in the test kit ([`crate::vp8`]): a publisher sends the payload
//! descriptor an encoder's packetizer writes (RFC 7741 §4.2), which str0m's packetizer does
//! not, and a viewer logs the descriptors that arrive, per frame, to check what the gateway
//! made of them.

use std::collections::VecDeque;

use crate::vp8::{self, Descriptor};

/// Bytes of a frame per packet: with the descriptor, RTP header, extensions and SRTP tag,
/// well below any path's MTU.
const CHUNK: usize = 1100;
/// RTP timestamps a viewer's log holds descriptors for until their frame completes.
const PENDING_FRAMES: usize = 256;

/// One stream's numbering, as its own encoder keeps it: each simulcast layer has one.
#[derive(Debug)]
pub(super) struct Numbering {
    pub(super) rid: Option<String>,
    /// The next RTP sequence number.
    seq: u64,
    picture_id: u16,
    tl0picidx: u8,
    keyidx: u8,
}

impl Numbering {
    /// Starts at random values, as separate encoders' numberings are unrelated.
    pub(super) fn new(rid: Option<&str>) -> Numbering {
        Numbering {
            rid: rid.map(String::from),
            seq: fastrand::u64(1..1 << 15),
            picture_id: fastrand::u16(..1 << 15),
            tl0picidx: fastrand::u8(..),
            keyidx: fastrand::u8(..32),
        }
    }

    /// The RTP payloads of one frame and their sequence numbers. Every packet carries the
    /// whole descriptor, as libwebrtc writes it: the 15-bit picture id, TL0PICIDX, TID 0 with
    /// Y set, and KEYIDX, which counts keyframes; the first also the start bit. Every frame
    /// is a base-layer frame: TL0PICIDX counts them all.
    pub(super) fn packetize(&mut self, frame: &[u8], keyframe: bool) -> Vec<(u64, Vec<u8>)> {
        if keyframe {
            self.keyidx = (self.keyidx + 1) & 0x1f;
        }
        let [high, low] = (self.picture_id | 0x8000).to_be_bytes();
        let mut out = Vec::new();
        for (i, chunk) in frame.chunks(CHUNK).enumerate() {
            let start = if i == 0 { 0x10 } else { 0 };
            let mut p = Vec::with_capacity(6 + chunk.len());
            p.extend_from_slice(&[
                0x80 | start,
                0xf0,
                high,
                low,
                self.tl0picidx,
                0x20 | self.keyidx,
            ]);
            p.extend_from_slice(chunk);
            out.push((self.seq, p));
            self.seq += 1;
        }
        self.picture_id = (self.picture_id + 1) & 0x7fff;
        self.tl0picidx = self.tl0picidx.wrapping_add(1);
        out
    }
}

/// A viewer's VP8 descriptors by RTP timestamp, until str0m hands out their frame (its
/// packets' raw copies come first).
#[derive(Debug, Default)]
pub(super) struct Log {
    pending: VecDeque<(u32, Vec<Descriptor>)>,
}

impl Log {
    /// A received packet of RTP time `time` with VP8 payload `payload`.
    pub(super) fn packet(&mut self, time: u32, payload: &[u8]) {
        let Some(d) = vp8::parse(payload) else {
            return;
        };
        match self.pending.iter_mut().rev().find(|(t, _)| *t == time) {
            Some((_, list)) => list.push(d),
            None => {
                if self.pending.len() >= PENDING_FRAMES {
                    self.pending.pop_front();
                }
                self.pending.push_back((time, vec![d]));
            }
        }
    }

    /// The descriptors of the frame of RTP time `time`, in arrival order.
    pub(super) fn frame(&mut self, time: u32) -> Vec<Descriptor> {
        self.pending
            .iter()
            .position(|(t, _)| *t == time)
            .and_then(|i| self.pending.remove(i))
            .map(|(_, list)| list)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_numbered_once_across_its_packets_and_the_next_one_up() {
        let mut n = Numbering::new(Some("h"));
        let frame = vec![7u8; 2500];
        let first = n.packetize(&frame, true);
        assert_eq!(first.len(), 3);
        assert_eq!(first[1].0, first[0].0 + 1);
        let d: Vec<Descriptor> = first.iter().filter_map(|(_, p)| vp8::parse(p)).collect();
        assert_eq!(d.len(), 3);
        assert!(d.iter().all(|x| *x == d[0]), "{d:?}");
        assert_eq!(first[0].1[0], 0x90, "the start bit on the first only");
        assert_eq!(first[1].1[0], 0x80);
        let payload: Vec<u8> = first.iter().flat_map(|(_, p)| p[6..].to_vec()).collect();
        assert_eq!(payload, frame);
        let next = n.packetize(&frame[..10], false);
        let e = vp8::parse(&next[0].1).expect("a descriptor");
        let (a, b) = (d[0].picture_id.expect("id"), e.picture_id.expect("id"));
        assert!(a.long && b.value == (a.value + 1) & 0x7fff);
        assert_eq!(e.tl0picidx, d[0].tl0picidx.map(|t| t.wrapping_add(1)));
        assert_eq!(e.keyidx, d[0].keyidx, "no keyframe, same KEYIDX");
    }
}
