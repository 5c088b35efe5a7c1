//! Deterministic synthetic encoded frames.
//!
//! The frames are not decodable pictures; they only have to look right to an
//! RTP packetizer, a keyframe detector and a forwarding gateway. Every frame
//! carries its `index` at a fixed, codec specific position so a receiver can
//! check order and completeness after a trip through the gateway.
//!
//! All filler bytes are non-zero: an H.264 payload then never contains a start
//! code emulation, so packetize → depacketize returns the exact same bytes.

use str0m::format::Codec;

use super::VideoCodec;

/// Marks the embedded index, so a random byte run is not mistaken for one.
const MAGIC: [u8; 2] = [0x57, 0x43];
/// Base-255 digits needed for any `u64` (255^8 < 2^64 <= 255^9).
const DIGITS: usize = 9;
/// Bytes taken by the embedded index: magic plus digits.
pub const INDEX_LEN: usize = MAGIC.len() + DIGITS;

/// Annex-B start code used by every generated H.264 NAL unit.
const START_CODE: [u8; 4] = [0, 0, 0, 1];
/// Default picture size written into VP8/VP9 keyframe headers.
const WIDTH: u16 = 640;
const HEIGHT: u16 = 360;

/// Generate a frame of `codec`; dispatches to the per-codec generators.
pub fn video_frame(codec: VideoCodec, index: u64, keyframe: bool, size: usize) -> Vec<u8> {
    match codec {
        VideoCodec::H264 => h264_frame(index, keyframe, size),
        VideoCodec::Vp8 => vp8_frame(index, keyframe, size),
        VideoCodec::Vp9 => vp9_frame(index, keyframe, size),
        VideoCodec::Av1 => av1_frame(index, keyframe, size),
    }
}

/// H.264 Annex-B access unit with 4-byte start codes.
///
/// Keyframe: SPS (7) + PPS (8) + IDR slice (5). Otherwise one non-IDR slice (1).
/// The slice starts with the embedded index right after its NAL header.
pub fn h264_frame(index: u64, keyframe: bool, size: usize) -> Vec<u8> {
    let mut rng = Rng::new(index ^ 0x4832_3634);
    let mut out = Vec::with_capacity(size.max(64));
    if keyframe {
        // SPS: Constrained Baseline (0x42, constraints 0xe0), level 3.1 (0x1f).
        out.extend_from_slice(&START_CODE);
        out.extend_from_slice(&[0x67, 0x42, 0xe0, 0x1f]);
        rng.fill_nonzero(&mut out, 8);
        // PPS
        out.extend_from_slice(&START_CODE);
        out.extend_from_slice(&[0x68, 0xce, 0x3c, 0x80]);
        out.extend_from_slice(&START_CODE);
        out.push(0x65); // nal_ref_idc 3, IDR slice
    } else {
        out.extend_from_slice(&START_CODE);
        out.push(0x41); // nal_ref_idc 2, non-IDR slice
    }
    put_index(&mut out, index);
    let fill = size.saturating_sub(out.len()).max(1);
    rng.fill_nonzero(&mut out, fill);
    out
}

/// VP8 frame: 3-byte frame tag, keyframe start code and 640x360, then payload.
pub fn vp8_frame(index: u64, keyframe: bool, size: usize) -> Vec<u8> {
    let mut rng = Rng::new(index ^ 0x5650_3800);
    let header = if keyframe { 10 } else { 3 };
    let total = size.max(header + INDEX_LEN + 1);
    // First partition size: a plausible share of the payload, within 19 bits.
    let first_part = (((total - header) / 4).max(1) as u32).min(0x7_ffff);
    let key_bit = u32::from(!keyframe);
    let show_frame = 1u32 << 4;
    let tag = key_bit | show_frame | (first_part << 5);
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&tag.to_le_bytes()[..3]);
    if keyframe {
        out.extend_from_slice(&[0x9d, 0x01, 0x2a]);
        out.extend_from_slice(&WIDTH.to_le_bytes());
        out.extend_from_slice(&HEIGHT.to_le_bytes());
    }
    put_index(&mut out, index);
    let fill = total - out.len();
    rng.fill_nonzero(&mut out, fill);
    out
}

/// VP9 profile 0 frame: uncompressed header start (frame marker, frame type,
/// sync code and 640x360 on keyframes), then payload.
pub fn vp9_frame(index: u64, keyframe: bool, size: usize) -> Vec<u8> {
    let mut rng = Rng::new(index ^ 0x5650_3900);
    let mut out = Vec::with_capacity(size.max(32));
    if keyframe {
        // frame_marker=2, profile 0, show_existing=0, frame_type=KEY, show_frame=1.
        out.extend_from_slice(&[0x82, 0x49, 0x83, 0x42]);
        // color_space(3)=BT.709, color_range(1)=0, width-1(16), height-1(16),
        // render_and_frame_size_different(1)=0, padded to whole bytes.
        let bits: u64 =
            (0b010u64 << 37) | (u64::from(WIDTH - 1) << 20) | (u64::from(HEIGHT - 1) << 4);
        out.extend_from_slice(&bits.to_be_bytes()[3..]);
    } else {
        // frame_type=NON_KEY, show_frame=1.
        out.push(0x86);
    }
    put_index(&mut out, index);
    let fill = size.saturating_sub(out.len()).max(1);
    rng.fill_nonzero(&mut out, fill);
    out
}

/// AV1 temporal unit in low-overhead format (every OBU has a size field).
///
/// Keyframe: sequence header OBU + frame OBU; otherwise one frame OBU.
/// The frame OBU payload starts with the embedded index.
pub fn av1_frame(index: u64, keyframe: bool, size: usize) -> Vec<u8> {
    let mut rng = Rng::new(index ^ 0x4156_3100);
    let mut out = Vec::with_capacity(size.max(32));
    if keyframe {
        let mut seq = Vec::new();
        rng.fill_nonzero(&mut seq, 12);
        push_obu(&mut out, 1, &seq);
    }
    let mut frame = Vec::new();
    put_index(&mut frame, index);
    // Reserve room for OBU header and a two-byte size field.
    let fill = size.saturating_sub(out.len() + frame.len() + 3).max(1);
    rng.fill_nonzero(&mut frame, fill);
    push_obu(&mut out, 6, &frame);
    out
}

/// Opus packet: TOC (CELT fullband 20 ms, one frame) plus 59-159 bytes.
pub fn opus_frame(index: u64) -> Vec<u8> {
    let mut rng = Rng::new(index ^ 0x4f50_5553);
    let len = 60 + (rng.next() % 101) as usize;
    let mut out = Vec::with_capacity(len);
    out.push(31 << 3);
    put_index(&mut out, index);
    let fill = len - out.len();
    rng.fill_nonzero(&mut out, fill);
    out
}

/// Read back the index embedded by the generators; `None` if `data` is not one
/// of our frames.
pub fn frame_index(codec: impl Into<Codec>, data: &[u8]) -> Option<u64> {
    match codec.into() {
        Codec::H264 => {
            let nal =
                h264_nals(data).find(|n| matches!(n.first().map(|b| b & 0x1f), Some(1 | 5)))?;
            read_index(nal.get(1..)?)
        }
        Codec::Vp8 => {
            let off = if data.first()? & 1 == 0 { 10 } else { 3 };
            read_index(data.get(off..)?)
        }
        Codec::Vp9 => {
            let off = if vp9_is_keyframe(data) { 9 } else { 1 };
            read_index(data.get(off..)?)
        }
        Codec::Av1 => {
            let (_, payload) = av1_obus(data).find(|(t, _)| *t == 6)?;
            read_index(payload)
        }
        Codec::Opus => read_index(data.get(1..)?),
        _ => None,
    }
}

/// Whether `data` is a keyframe (random access point) of `codec`.
///
/// H.264: has an IDR slice or SPS; VP8: bit 0 of the frame tag is 0;
/// VP9: frame_type KEY; AV1: starts a sequence; audio: always.
pub fn is_keyframe(codec: impl Into<Codec>, data: &[u8]) -> bool {
    match codec.into() {
        Codec::H264 => h264_nals(data).any(|n| matches!(n.first().map(|b| b & 0x1f), Some(5 | 7))),
        Codec::Vp8 => data.first().is_some_and(|b| b & 1 == 0),
        Codec::Vp9 => vp9_is_keyframe(data),
        Codec::Av1 => av1_obus(data).any(|(t, _)| t == 1),
        c => c.is_audio(),
    }
}

/// NAL unit payloads (header byte first) of an Annex-B stream.
pub fn h264_nals(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let ends: Vec<usize> = starts
        .iter()
        .skip(1)
        .map(|&s| {
            // The next start code may be 3 or 4 bytes long.
            let mut e = s - 3;
            if e > 0 && data[e - 1] == 0 {
                e -= 1;
            }
            e
        })
        .chain(std::iter::once(data.len()))
        .collect();
    starts
        .into_iter()
        .zip(ends)
        .filter(|(s, e)| s < e)
        .map(move |(s, e)| &data[s..e])
}

fn vp9_is_keyframe(data: &[u8]) -> bool {
    // Profile 0/1 layout only, which is all we generate.
    data.first()
        .is_some_and(|b| b & 0xc0 == 0x80 && b & 0x0c == 0)
}

fn push_obu(out: &mut Vec<u8>, obu_type: u8, payload: &[u8]) {
    out.push((obu_type << 3) | 0x02);
    let mut n = payload.len();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    out.extend_from_slice(payload);
}

/// `(obu_type, payload)` of OBUs that carry a size field; stops at the first
/// malformed or size-less OBU.
fn av1_obus(data: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let mut rest = data;
    std::iter::from_fn(move || {
        let (&header, mut tail) = rest.split_first()?;
        if header & 0x02 == 0 {
            return None;
        }
        if header & 0x04 != 0 {
            tail = tail.get(1..)?;
        }
        let mut len: usize = 0;
        let mut used = 0;
        for (i, &b) in tail.iter().enumerate().take(8) {
            len |= usize::from(b & 0x7f) << (7 * i);
            used = i + 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        let body = tail.get(used..used.checked_add(len)?)?;
        rest = &tail[used + len..];
        Some(((header >> 3) & 0x0f, body))
    })
}

/// Append `index` as magic + nine base-255 digits, each stored as 1..=255.
fn put_index(out: &mut Vec<u8>, index: u64) {
    out.extend_from_slice(&MAGIC);
    let mut digits = [0u8; DIGITS];
    let mut v = index;
    for d in digits.iter_mut().rev() {
        *d = (v % 255) as u8 + 1;
        v /= 255;
    }
    out.extend_from_slice(&digits);
}

fn read_index(data: &[u8]) -> Option<u64> {
    let body = data.strip_prefix(&MAGIC)?.get(..DIGITS)?;
    body.iter().try_fold(0u64, |acc, &d| {
        let digit = u64::from(d.checked_sub(1)?);
        acc.checked_mul(255)?.checked_add(digit)
    })
}

/// SplitMix64: tiny, deterministic, good enough for filler bytes.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn fill_nonzero(&mut self, out: &mut Vec<u8>, n: usize) {
        let mut left = n;
        while left > 0 {
            let word = self.next();
            for b in word.to_le_bytes().iter().take(left) {
                // Map 0..=255 onto 1..=255 without a zero.
                out.push(if *b == 0 { 0xa5 } else { *b });
                left -= 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nal_types(data: &[u8]) -> Vec<u8> {
        h264_nals(data).map(|n| n[0] & 0x1f).collect()
    }

    #[test]
    fn h264_layout_and_no_emulation() {
        for index in [0u64, 1, 254, 255, 65_535, u64::MAX] {
            let key = h264_frame(index, true, 4000);
            assert_eq!(nal_types(&key), vec![7, 8, 5]);
            assert!((3990..=4010).contains(&key.len()), "len {}", key.len());
            let delta = h264_frame(index, false, 1500);
            assert_eq!(nal_types(&delta), vec![1]);
            assert_eq!(&delta[..5], &[0, 0, 0, 1, 0x41]);
            for frame in [&key, &delta] {
                // Only the start codes contain zero bytes.
                for nal in h264_nals(frame) {
                    assert!(!nal.contains(&0), "zero byte in NAL body");
                }
                let zeros = frame.iter().filter(|b| **b == 0).count();
                assert_eq!(zeros, 3 * h264_nals(frame).count());
                assert_eq!(frame_index(Codec::H264, frame), Some(index));
            }
            assert!(is_keyframe(Codec::H264, &key));
            assert!(!is_keyframe(Codec::H264, &delta));
        }
    }

    #[test]
    fn deterministic() {
        assert_eq!(h264_frame(7, false, 3000), h264_frame(7, false, 3000));
        assert_ne!(h264_frame(7, false, 3000), h264_frame(8, false, 3000));
        assert_eq!(vp8_frame(7, true, 3000), vp8_frame(7, true, 3000));
        assert_eq!(opus_frame(9), opus_frame(9));
    }

    #[test]
    fn vp8_tag() {
        let key = vp8_frame(42, true, 5000);
        assert_eq!(key.len(), 5000);
        assert_eq!(key[0] & 1, 0);
        assert_eq!(key[0] & 0x10, 0x10, "show_frame");
        assert_eq!(&key[3..6], &[0x9d, 0x01, 0x2a]);
        assert_eq!(u16::from_le_bytes([key[6], key[7]]), 640);
        assert_eq!(u16::from_le_bytes([key[8], key[9]]), 360);
        let tag = u32::from(key[0]) | u32::from(key[1]) << 8 | u32::from(key[2]) << 16;
        let first_part = (tag >> 5) as usize;
        assert!(first_part > 0 && first_part < key.len());
        let delta = vp8_frame(43, false, 800);
        assert_eq!(delta[0] & 1, 1);
        assert_eq!(frame_index(Codec::Vp8, &key), Some(42));
        assert_eq!(frame_index(Codec::Vp8, &delta), Some(43));
        assert!(is_keyframe(Codec::Vp8, &key));
        assert!(!is_keyframe(Codec::Vp8, &delta));
    }

    #[test]
    fn vp9_and_av1() {
        let key = vp9_frame(5, true, 3000);
        assert!(is_keyframe(Codec::Vp9, &key));
        let delta = vp9_frame(6, false, 3000);
        assert!(!is_keyframe(Codec::Vp9, &delta));
        assert_eq!(frame_index(Codec::Vp9, &key), Some(5));
        assert_eq!(frame_index(Codec::Vp9, &delta), Some(6));

        let key = av1_frame(10, true, 3000);
        let delta = av1_frame(11, false, 3000);
        assert!(is_keyframe(Codec::Av1, &key));
        assert!(!is_keyframe(Codec::Av1, &delta));
        assert_eq!(frame_index(Codec::Av1, &key), Some(10));
        assert_eq!(frame_index(Codec::Av1, &delta), Some(11));
        assert!((2990..=3010).contains(&delta.len()));
    }

    #[test]
    fn opus_shape() {
        for i in 0..200 {
            let f = opus_frame(i);
            assert!((60..=160).contains(&f.len()));
            assert_eq!(f[0], 0xf8);
            assert_eq!(frame_index(Codec::Opus, &f), Some(i));
        }
    }

    #[test]
    fn foreign_data_has_no_index() {
        assert_eq!(frame_index(Codec::H264, &[0, 0, 0, 1, 0x41, 1, 2, 3]), None);
        assert_eq!(frame_index(Codec::Vp8, &[]), None);
        assert_eq!(frame_index(Codec::Opus, &[0xf8; 20]), None);
    }
}
