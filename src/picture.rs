//! The picture size a keyframe's RTP payload announces, so a layer can be labelled by its
//! resolution (the WHEP `layers` event, the player's layer menu) without decoding anything:
//! VP8's key frame header (RFC 6386 §9.1) and H264's sequence parameter set (ITU-T H.264
//! §7.3.2.1.1). Other codecs, and payloads where the size is not in this packet, give `None`.
//! Everything here reads untrusted bytes: out-of-range reads give `None`, never a panic.

use str0m::format::Codec;

/// Width and height in pixels, if this packet's payload carries them.
pub fn size(codec: Codec, payload: &[u8]) -> Option<(u32, u32)> {
    match codec {
        Codec::Vp8 => vp8(payload),
        Codec::H264 => h264(payload),
        _ => None,
    }
}

/// Whether a packet not flagged as a keyframe may still carry the size: an H264 SPS alone
/// or aggregated, which browsers send in a packet of its own before a large IDR. A check of
/// one byte, for every packet.
pub fn may_say_size(codec: Codec, payload: &[u8]) -> bool {
    codec == Codec::H264 && matches!(payload.first().map(|b| b & 0x1f), Some(7 | 24))
}

/// A VP8 RTP payload (RFC 7741 §4.2) that starts a key frame.
fn vp8(p: &[u8]) -> Option<(u32, u32)> {
    let b0 = *p.first()?;
    let (start, partition) = (b0 & 0x10 != 0, b0 & 0x07);
    if !start || partition != 0 {
        return None;
    }
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let x = *p.get(i)?;
        i += 1;
        if x & 0x80 != 0 {
            // Picture id: 15 bits when its first bit is set, else 7.
            i += if *p.get(i)? & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            i += 1; // TID, Y, KEYIDX
        }
    }
    let h = p.get(i..i + 10)?;
    // Frame tag bit 0 is 0 for a key frame, followed by its start code.
    if h[0] & 0x01 != 0 || h[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let width = u32::from(u16::from_le_bytes([h[6], h[7]]) & 0x3fff);
    let height = u32::from(u16::from_le_bytes([h[8], h[9]]) & 0x3fff);
    (width > 0 && height > 0).then_some((width, height))
}

/// An H264 RTP payload (RFC 6184 §5.6-5.7) that is, or aggregates, a sequence parameter set.
fn h264(p: &[u8]) -> Option<(u32, u32)> {
    match *p.first()? & 0x1f {
        7 => sps(p),
        // STAP-A: 16-bit sizes, each followed by a NAL unit.
        24 => {
            let mut rest = p.get(1..)?;
            while rest.len() > 2 {
                let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                let nal = rest.get(2..2 + len)?;
                if nal.first().is_some_and(|b| b & 0x1f == 7) {
                    return sps(nal);
                }
                rest = &rest[2 + len..];
            }
            None
        }
        _ => None,
    }
}

/// The size a sequence parameter set NAL unit (header byte included) gives.
fn sps(nal: &[u8]) -> Option<(u32, u32)> {
    // Emulation prevention (§7.4.1): 00 00 03 stands for 00 00.
    let mut rbsp = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal.get(1..)? {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        rbsp.push(b);
    }
    let mut r = Bits::new(&rbsp);
    let profile = r.bits(8)?;
    r.bits(16)?; // constraint flags, level
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format = 1;
    if matches!(
        profile,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format = r.ue()?;
        if chroma_format == 3 {
            r.bits(1)?; // separate_colour_plane_flag
        }
        r.ue()?; // bit depths
        r.ue()?;
        r.bits(1)?;
        if r.bits(1)? == 1 {
            // Scaling matrices: rare in what encoders send for WebRTC; not worth reading.
            return None;
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?;
        }
        1 => {
            r.bits(1)?;
            r.se()?;
            r.se()?;
            for _ in 0..r.ue()?.min(255) {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.bits(1)?;
    let width_mbs = r.ue()?.checked_add(1)?;
    let height_units = r.ue()?.checked_add(1)?;
    let frame_mbs_only = r.bits(1)?;
    if frame_mbs_only == 0 {
        r.bits(1)?;
    }
    r.bits(1)?; // direct_8x8_inference_flag
    let (mut crop_x, mut crop_y) = (0, 0);
    if r.bits(1)? == 1 {
        let (left, right, top, bottom) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
        // Crop units (§7.4.2.1.1): chroma samples, and field pairs without frame_mbs_only.
        let (unit_x, unit_y) = match chroma_format {
            1 => (2, 2 * (2 - frame_mbs_only)),
            2 => (2, 2 - frame_mbs_only),
            _ => (1, 2 - frame_mbs_only),
        };
        crop_x = left.checked_add(right)?.checked_mul(unit_x)?;
        crop_y = top.checked_add(bottom)?.checked_mul(unit_y)?;
    }
    let width = width_mbs.checked_mul(16)?.checked_sub(crop_x)?;
    let height = (2 - frame_mbs_only)
        .checked_mul(height_units)?
        .checked_mul(16)?
        .checked_sub(crop_y)?;
    // Level 6.2's largest frame is 139,264 macroblocks; more is not a picture.
    (width > 0 && height > 0 && width <= 16_384 && height <= 16_384).then_some((width, height))
}

/// An MSB-first bit reader with Exp-Golomb codes (§9.1).
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Bits { data, pos: 0 }
    }

    fn bits(&mut self, n: u32) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = *self.data.get(self.pos / 8)?;
            v = (v << 1) | u32::from((byte >> (7 - self.pos % 8)) & 1);
            self.pos += 1;
        }
        Some(v)
    }

    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bits(1)? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let rest = self.bits(zeros)?;
        ((1u64 << zeros) - 1 + u64::from(rest)).try_into().ok()
    }

    fn se(&mut self) -> Option<i64> {
        let k = i64::from(self.ue()?);
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vp8_key_frame_names_its_size() {
        // Descriptor with X, I (15-bit picture id), then the key frame header of 640x360.
        let mut p = vec![0x90, 0x80, 0x81, 0x23];
        p.extend_from_slice(&[0x50, 0x2a, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01]);
        assert_eq!(size(Codec::Vp8, &p), Some((640, 360)));
        // The test kit's generator writes the same header.
        let frame = crate::peer::media::vp8_frame(1, true, 500);
        let mut rtp = vec![0x10];
        rtp.extend_from_slice(&frame);
        assert_eq!(size(Codec::Vp8, &rtp), Some((640, 360)));
        // A delta frame, or a packet after the first, says nothing.
        let delta = crate::peer::media::vp8_frame(2, false, 500);
        assert_eq!(size(Codec::Vp8, &[&[0x10][..], &delta].concat()), None);
        assert_eq!(size(Codec::Vp8, &[0x00, 1, 2, 3]), None);
    }

    /// Writes bits MSB first, with Exp-Golomb codes, the way an encoder writes an SPS.
    #[derive(Default)]
    struct Writer {
        bits: Vec<bool>,
    }

    impl Writer {
        fn u(&mut self, n: u32, v: u32) -> &mut Self {
            for i in (0..n).rev() {
                self.bits.push((v >> i) & 1 == 1);
            }
            self
        }
        fn ue(&mut self, v: u32) -> &mut Self {
            let x = v + 1;
            let len = 32 - x.leading_zeros();
            self.u(len - 1, 0).u(len, x)
        }
        /// The NAL unit: header, bytes with emulation prevention, stop bit.
        fn nal(&mut self) -> Vec<u8> {
            self.u(1, 1);
            while self.bits.len() % 8 != 0 {
                self.bits.push(false);
            }
            let bytes: Vec<u8> = self
                .bits
                .chunks(8)
                .map(|c| c.iter().fold(0u8, |a, b| (a << 1) | u8::from(*b)))
                .collect();
            let mut out = vec![0x67];
            let mut zeros = 0;
            for b in bytes {
                if zeros >= 2 && b <= 3 {
                    out.push(3);
                    zeros = 0;
                }
                zeros = if b == 0 { zeros + 1 } else { 0 };
                out.push(b);
            }
            out
        }
    }

    /// An SPS of `profile` for `mbs` macroblocks, cropped by `crop` (left, right, top,
    /// bottom) crop units.
    fn sps_for(profile: u32, mbs: (u32, u32), crop: Option<(u32, u32, u32, u32)>) -> Vec<u8> {
        let mut w = Writer::default();
        w.u(8, profile).u(8, 0).u(8, 40).ue(0);
        if profile == 100 {
            w.ue(1).ue(0).ue(0).u(1, 0).u(1, 0);
        }
        w.ue(0).ue(0).ue(4); // frame num, POC type 0 and its lsb length
        w.ue(1).u(1, 0); // one reference frame, no gaps
        w.ue(mbs.0 - 1).ue(mbs.1 - 1).u(1, 1).u(1, 1); // frame_mbs_only, direct 8x8
        match crop {
            Some((l, r, t, b)) => {
                w.u(1, 1).ue(l).ue(r).ue(t).ue(b);
            }
            None => {
                w.u(1, 0);
            }
        }
        w.u(1, 0); // no VUI
        w.nal()
    }

    #[test]
    fn an_h264_sps_names_its_size_alone_or_aggregated() {
        let sps = sps_for(66, (80, 45), None);
        assert_eq!(size(Codec::H264, &sps), Some((1280, 720)));
        // 1080 lines are 68 macroblocks cropped by 8 lines: 4 crop units of 2 in 4:2:0.
        let sps_1080 = sps_for(100, (120, 68), Some((0, 0, 0, 4)));
        assert_eq!(size(Codec::H264, &sps_1080), Some((1920, 1080)));
        let mut stap = vec![0x18, 0x00, sps.len() as u8];
        stap.extend_from_slice(&sps);
        stap.extend_from_slice(&[0x00, 0x04, 0x68, 0xce, 0x3c, 0x80]);
        assert_eq!(size(Codec::H264, &stap), Some((1280, 720)));
        // PPS first, then the SPS.
        let mut stap = vec![
            0x18,
            0x00,
            0x04,
            0x68,
            0xce,
            0x3c,
            0x80,
            0x00,
            sps.len() as u8,
        ];
        stap.extend_from_slice(&sps);
        assert_eq!(size(Codec::H264, &stap), Some((1280, 720)));
        assert!(may_say_size(Codec::H264, &sps) && may_say_size(Codec::H264, &stap));
        assert!(!may_say_size(Codec::H264, &[0x41, 0x9a]), "a slice");
        assert!(!may_say_size(Codec::Vp8, &sps));
    }

    #[test]
    fn hostile_payloads_give_nothing_and_never_panic() {
        let mut seed = 7u64;
        for len in 0..300 {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (seed >> 56) as u8
                })
                .collect();
            for first in [0x07u8, 0x18, 0x67, 0x10, 0x90] {
                let mut p = data.clone();
                if let Some(b) = p.first_mut() {
                    *b = first;
                }
                let _ = size(Codec::H264, &p);
                let _ = size(Codec::Vp8, &p);
            }
        }
        assert_eq!(
            size(Codec::H264, &[0x78, 0x00, 0x40]),
            None,
            "truncated STAP-A"
        );
    }
}
