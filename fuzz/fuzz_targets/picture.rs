//! A simulcast layer's packets on their way to the picture-size reader: any RTP payload, as
//! H264 (an SPS alone or in a STAP-A, with emulation prevention and Exp-Golomb codes) and as
//! VP8 (the payload descriptor and key frame header).
//!
//! What must hold: no panic, and a size is never zero or beyond the largest the codecs allow.
#![no_main]

use libfuzzer_sys::fuzz_target;
use str0m::format::Codec;
use wishcast::picture;

fuzz_target!(|data: &[u8]| {
    for codec in [Codec::H264, Codec::Vp8] {
        let _ = picture::may_say_size(codec, data);
        if let Some((w, h)) = picture::size(codec, data) {
            assert!(w > 0 && h > 0 && w <= 16_384 && h <= 16_384, "{w}x{h}");
        }
    }
});
