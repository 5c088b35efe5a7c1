//! The VP8 payload descriptor (RFC 7741 §4.2), and the rewrite that keeps a viewer's picture
//! numbering continuous when it moves to another simulcast layer or another publisher.
//!
//! Each layer is its own encoder, numbering its pictures (PictureID), its base-layer frames
//! (TL0PICIDX) and its temporal key frames (KEYIDX) from its own start. A receiver tracks
//! frames and their references by these numbers (libwebrtc's VP8 reference finder), so a
//! viewer's stream must continue them across a move as it continues sequence numbers and
//! timestamps. Per epoch of a viewer's track (see [`crate::fanout::TrackRewriter`]) a fixed
//! [`Offsets`] is added to each field, in the field's own width, in place: the payload's
//! length never changes, so the rewrite happens in the datagram the payload is copied into.
//!
//! ```text
//!        0 1 2 3 4 5 6 7
//!       +-+-+-+-+-+-+-+-+
//!       |X|R|N|S|R| PID |  always
//!       +-+-+-+-+-+-+-+-+
//!  X:   |I|L|T|K| RSV   |
//!       +-+-+-+-+-+-+-+-+
//!  I:   |M| PictureID   |  and 8 more bits of PictureID when M is set
//!       +-+-+-+-+-+-+-+-+
//!  L:   |   TL0PICIDX   |
//!       +-+-+-+-+-+-+-+-+
//!  T/K: |TID|Y| KEYIDX  |  KEYIDX means something only when K is set
//!       +-+-+-+-+-+-+-+-+
//! ```
//!
//! Everything here reads untrusted bytes: a descriptor that does not fit its payload is left
//! as it is and gives `None`, never a panic.

/// X in the first byte: the extension byte follows.
const X: u8 = 0x80;
/// In the extension byte: PictureID, TL0PICIDX, TID and KEYIDX present.
const I: u8 = 0x80;
const L: u8 = 0x40;
const T: u8 = 0x20;
const K: u8 = 0x10;
/// M in PictureID's first byte: the 15-bit form.
const M: u8 = 0x80;
const KEYIDX_MASK: u8 = 0x1f;
const LONG_MASK: u16 = 0x7fff;

/// The fields of a VP8 payload descriptor that number pictures, as a packet carries them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Descriptor {
    pub picture_id: Option<PictureId>,
    pub tl0picidx: Option<u8>,
    /// Present when the K bit is set; 5 bits.
    pub keyidx: Option<u8>,
}

/// A PictureID and its width on the wire, which a rewrite keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PictureId {
    pub value: u16,
    /// The 15-bit form (M set); else 7 bits.
    pub long: bool,
}

impl PictureId {
    /// `self + n`, wrapping in its own width.
    fn plus(self, n: u16) -> PictureId {
        let mask = if self.long { LONG_MASK } else { 0x7f };
        PictureId {
            value: self.value.wrapping_add(n) & mask,
            long: self.long,
        }
    }
}

/// What an epoch adds to each numbering field of its packets. Zero leaves a packet as the
/// publisher wrote it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offsets {
    /// Added modulo 2^15, or 2^7 in a packet with the 7-bit form.
    pub picture_id: u16,
    /// Added modulo 2^8.
    pub tl0picidx: u8,
    /// Added modulo 2^5.
    pub keyidx: u8,
}

impl Offsets {
    /// The offsets under which `first`, the first packet of a new epoch, continues from
    /// `last`, the newest descriptor the viewer was sent: each field one past the last one.
    /// A field missing on either side is left alone (offset 0).
    pub fn continuing(last: &Descriptor, first: &Descriptor) -> Offsets {
        let picture_id = match (last.picture_id, first.picture_id) {
            // Modulo 2^15 also serves the 7-bit form: 2^7 divides it.
            (Some(l), Some(f)) => l.value.wrapping_add(1).wrapping_sub(f.value) & LONG_MASK,
            _ => 0,
        };
        let tl0picidx = match (last.tl0picidx, first.tl0picidx) {
            (Some(l), Some(f)) => l.wrapping_add(1).wrapping_sub(f),
            _ => 0,
        };
        let keyidx = match (last.keyidx, first.keyidx) {
            (Some(l), Some(f)) => l.wrapping_add(1).wrapping_sub(f) & KEYIDX_MASK,
            _ => 0,
        };
        Offsets {
            picture_id,
            tl0picidx,
            keyidx,
        }
    }

    pub fn is_zero(&self) -> bool {
        *self == Offsets::default()
    }

    /// `d` as [`rewrite`] writes it under these offsets.
    pub fn apply(&self, d: Descriptor) -> Descriptor {
        Descriptor {
            picture_id: d.picture_id.map(|p| p.plus(self.picture_id)),
            tl0picidx: d.tl0picidx.map(|t| t.wrapping_add(self.tl0picidx)),
            keyidx: d.keyidx.map(|k| k.wrapping_add(self.keyidx) & KEYIDX_MASK),
        }
    }
}

/// Where a descriptor's numbering fields sit in its payload.
#[derive(Clone, Copy, Debug, Default)]
struct Layout {
    /// Offset of PictureID's first byte, and whether it is the 15-bit form.
    picture_id: Option<(usize, bool)>,
    tl0picidx: Option<usize>,
    /// Offset of the TID/Y/KEYIDX byte when K is set.
    keyidx: Option<usize>,
}

/// The layout of `payload`'s descriptor, if the whole descriptor and at least one byte of
/// VP8 data after it are there: RFC 7741 has no packet without VP8 data.
fn layout(payload: &[u8]) -> Option<Layout> {
    let mut layout = Layout::default();
    let mut end = 1;
    if *payload.first()? & X != 0 {
        let x = *payload.get(1)?;
        end = 2;
        if x & I != 0 {
            let long = *payload.get(end)? & M != 0;
            layout.picture_id = Some((end, long));
            end += if long { 2 } else { 1 };
        }
        if x & L != 0 {
            layout.tl0picidx = Some(end);
            end += 1;
        }
        if x & (T | K) != 0 {
            if x & K != 0 {
                layout.keyidx = Some(end);
            }
            end += 1;
        }
    }
    (end < payload.len()).then_some(layout)
}

/// The numbering fields of `payload`'s descriptor; `None` for a payload too short for the
/// descriptor it announces.
pub fn parse(payload: &[u8]) -> Option<Descriptor> {
    let l = layout(payload)?;
    // `layout` checked every offset against the payload's length.
    Some(Descriptor {
        picture_id: l.picture_id.map(|(at, long)| PictureId {
            value: if long {
                u16::from_be_bytes([payload[at] & !M, payload[at + 1]])
            } else {
                u16::from(payload[at])
            },
            long,
        }),
        tl0picidx: l.tl0picidx.map(|at| payload[at]),
        keyidx: l.keyidx.map(|at| payload[at] & KEYIDX_MASK),
    })
}

/// Adds `offsets` to the numbering fields of `payload`'s descriptor in place, each in its own
/// width; the M bit, TID and Y stay. A payload too short for the descriptor it announces is
/// left as it is.
pub fn rewrite(payload: &mut [u8], offsets: Offsets) {
    let Some(l) = layout(payload) else {
        return;
    };
    if let Some((at, long)) = l.picture_id {
        if long {
            let value = u16::from_be_bytes([payload[at] & !M, payload[at + 1]])
                .wrapping_add(offsets.picture_id)
                & LONG_MASK;
            let [high, low] = value.to_be_bytes();
            payload[at] = M | high;
            payload[at + 1] = low;
        } else {
            // Adding modulo 2^8 then masking is adding modulo 2^7; M stays 0.
            payload[at] = payload[at].wrapping_add(offsets.picture_id as u8) & 0x7f;
        }
    }
    if let Some(at) = l.tl0picidx {
        payload[at] = payload[at].wrapping_add(offsets.tl0picidx);
    }
    if let Some(at) = l.keyidx {
        let b = payload[at];
        payload[at] = (b & !KEYIDX_MASK) | (b.wrapping_add(offsets.keyidx) & KEYIDX_MASK);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A first packet of a frame with the extension byte's flags `ext` and the fields it
    /// names, then two bytes of VP8 data.
    fn packet(ext: u8, picture_id: Option<(u16, bool)>, tl0: u8, tk: u8) -> Vec<u8> {
        let mut p = vec![X | 0x10, ext];
        if let Some((v, long)) = picture_id {
            if long {
                p.extend_from_slice(&(v | 0x8000).to_be_bytes());
            } else {
                p.push(v as u8);
            }
        }
        if ext & L != 0 {
            p.push(tl0);
        }
        if ext & (T | K) != 0 {
            p.push(tk);
        }
        p.extend_from_slice(&[0x9d, 0x01]);
        p
    }

    #[test]
    fn every_combination_of_fields_is_found_and_rewritten_in_place() {
        let offsets = Offsets {
            picture_id: 0x7ffe,
            tl0picidx: 3,
            keyidx: 31,
        };
        for flags in 0..16u8 {
            let ext = flags << 4;
            for long in [false, true] {
                let pid = (ext & I != 0).then_some(if long { (0x1234, true) } else { (5, false) });
                // TID 2, Y set, KEYIDX 7.
                let mut p = packet(ext, pid, 0xff, 0b1010_0111);
                let before = parse(&p).expect("a whole descriptor");
                assert_eq!(
                    before.picture_id,
                    pid.map(|(value, long)| PictureId { value, long })
                );
                assert_eq!(before.tl0picidx, (ext & L != 0).then_some(0xff));
                assert_eq!(before.keyidx, (ext & K != 0).then_some(7));
                let len = p.len();
                let data = p[len - 2..].to_vec();
                rewrite(&mut p, offsets);
                assert_eq!(p.len(), len, "the length never changes");
                assert_eq!(p[len - 2..], data[..], "the VP8 data after it stays");
                let after = parse(&p).expect("still a whole descriptor");
                assert_eq!(after, offsets.apply(before), "ext {ext:#x} long {long}");
                if let Some(at) = (ext & (T | K) != 0).then_some(len - 3) {
                    assert_eq!(p[at] & 0xe0, 0b1010_0000, "TID and Y stay");
                }
            }
        }
    }

    #[test]
    fn each_field_wraps_in_its_own_width() {
        let offsets = Offsets {
            picture_id: 2,
            tl0picidx: 2,
            keyidx: 2,
        };
        let mut long = packet(I | L | K, Some((0x7fff, true)), 0xff, 0x1f);
        rewrite(&mut long, offsets);
        assert_eq!(long[2..6], [0x80, 0x01, 0x01, 0x01]);
        let mut short = packet(I, Some((0x7f, false)), 0, 0);
        rewrite(&mut short, offsets);
        assert_eq!(short[2], 0x01, "7 bits, M still clear");
        // A 15-bit offset on the 7-bit form: only its low 7 bits count.
        let mut short = packet(I, Some((0x10, false)), 0, 0);
        rewrite(
            &mut short,
            Offsets {
                picture_id: 0x4081,
                ..Offsets::default()
            },
        );
        assert_eq!(short[2], 0x11);
    }

    #[test]
    fn a_new_epoch_continues_each_field_one_past_the_last() {
        let last = Descriptor {
            picture_id: Some(PictureId {
                value: 0x7fff,
                long: true,
            }),
            tl0picidx: Some(255),
            keyidx: Some(31),
        };
        let first = Descriptor {
            picture_id: Some(PictureId {
                value: 1234,
                long: true,
            }),
            tl0picidx: Some(17),
            keyidx: Some(4),
        };
        let offsets = Offsets::continuing(&last, &first);
        let out = offsets.apply(first);
        assert_eq!(out.picture_id.map(|p| p.value), Some(0));
        assert_eq!((out.tl0picidx, out.keyidx), (Some(0), Some(0)));
        // The next frame of the new layer follows on.
        let next = Descriptor {
            picture_id: Some(PictureId {
                value: 1235,
                long: true,
            }),
            ..first
        };
        assert_eq!(offsets.apply(next).picture_id.map(|p| p.value), Some(1));
        // A 7-bit layer after a 15-bit one continues modulo 2^7.
        let short = Descriptor {
            picture_id: Some(PictureId {
                value: 100,
                long: false,
            }),
            ..first
        };
        let at = Offsets::continuing(&last, &short).apply(short);
        assert_eq!(
            at.picture_id,
            Some(PictureId {
                value: 0,
                long: false
            })
        );
        // Nothing to continue from, or nothing to continue: offset 0.
        let none = Offsets::continuing(&Descriptor::default(), &first);
        assert!(none.is_zero());
        assert!(Offsets::continuing(&last, &Descriptor::default()).is_zero());
    }

    #[test]
    fn a_descriptor_without_the_extension_has_no_fields() {
        let mut p = vec![0x10, 0x9d, 0x01, 0x2a];
        assert_eq!(parse(&p), Some(Descriptor::default()));
        rewrite(
            &mut p,
            Offsets {
                picture_id: 1,
                tl0picidx: 1,
                keyidx: 1,
            },
        );
        assert_eq!(p, [0x10, 0x9d, 0x01, 0x2a]);
    }

    #[test]
    fn truncated_and_garbage_payloads_are_left_alone_and_never_panic() {
        let offsets = Offsets {
            picture_id: 99,
            tl0picidx: 9,
            keyidx: 3,
        };
        // Every prefix of a full descriptor: up to the descriptor itself, none is whole.
        let full = packet(I | L | T | K, Some((300, true)), 1, 1);
        for cut in 0..=full.len() - 2 {
            let mut p = full[..cut].to_vec();
            assert_eq!(parse(&p), None, "cut at {cut}");
            rewrite(&mut p, offsets);
            assert_eq!(p, full[..cut], "cut at {cut}");
        }
        assert!(parse(&full[..full.len() - 1]).is_some(), "one byte of data");
        let mut seed = 11u64;
        for len in 0..64 {
            for _ in 0..64 {
                let mut p: Vec<u8> = (0..len)
                    .map(|_| {
                        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                        (seed >> 56) as u8
                    })
                    .collect();
                let before = parse(&p);
                let copy = p.clone();
                rewrite(&mut p, offsets);
                assert_eq!(p.len(), copy.len());
                match before {
                    None => assert_eq!(p, copy),
                    Some(d) => assert_eq!(parse(&p), Some(offsets.apply(d))),
                }
            }
        }
    }
}
