//! A VP8 packet on its way to a viewer after a move to another simulcast layer: any RTP
//! payload's descriptor read and rewritten in place, under offsets taken from the input.
//!
//! What must hold: no panic; the length and every byte outside the numbering fields stay;
//! the rewritten descriptor reads back as the offsets applied to the original; a payload
//! without a whole descriptor is left as it is.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wishcast::vp8;

fuzz_target!(|data: &[u8]| {
    let Some((head, payload)) = data.split_first_chunk::<4>() else {
        return;
    };
    let offsets = vp8::Offsets {
        picture_id: u16::from_be_bytes([head[0], head[1]]) & 0x7fff,
        tl0picidx: head[2],
        keyidx: head[3] & 0x1f,
    };
    let before = vp8::parse(payload);
    let mut out = payload.to_vec();
    vp8::rewrite(&mut out, offsets);
    assert_eq!(out.len(), payload.len());
    match before {
        None => assert_eq!(out, payload),
        Some(d) => {
            assert_eq!(vp8::parse(&out), Some(offsets.apply(d)));
            // Only bytes 2-5 (picture id, TL0PICIDX, KEYIDX) can change.
            assert_eq!(out.get(..2), payload.get(..2));
            assert_eq!(out.get(6..), payload.get(6..));
        }
    }
});
