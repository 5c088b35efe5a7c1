//! A WHIP/WHEP POST body on its whole way in: the Opus completion, the gateway's own offer
//! checks, registration in the hub, and negotiation in a real shard engine (str0m's SDP parser
//! and `accept_offer`), as a publisher and as a viewer of a live stream.
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use wishcast::peer::VideoCodec;
use wishcast::sdp::{complete_opus_rtpmap, Offer};
use wishcast::session::Role;
use wishcast_fuzz::{offer, CreateError, Shard};

thread_local! {
    static SHARD: RefCell<Shard> = RefCell::new(live_shard());
}

/// A shard with a live publisher on stream `live` (H264 + Opus), so viewers' offers meet the
/// codec checks against a publisher as well.
fn live_shard() -> Shard {
    let mut shard = Shard::new();
    let publisher = offer(Role::Publish, Some(VideoCodec::H264), true);
    shard
        .create(Role::Publish, "live", &publisher)
        .expect("the live publisher is created");
    shard
}

fuzz_target!(|data: &[u8]| {
    let Ok(sdp) = std::str::from_utf8(data) else {
        return;
    };
    let completed = complete_opus_rtpmap(sdp);
    // The completion only appends "/2" to rtpmap values: it never makes an offer readable or
    // unreadable.
    assert!(completed.len() >= sdp.len());
    let parsed = Offer::parse(&completed);
    assert_eq!(parsed.is_ok(), Offer::parse(sdp).is_ok());
    if let Ok(o) = &parsed {
        let _ = (o.check(Role::Publish), o.check(Role::Play), o.h264_mode1());
    }
    SHARD.with(|cell| {
        let mut shard = cell.borrow_mut();
        let before = shard.hub.session_count();
        for (role, stream) in [(Role::Publish, "fuzz"), (Role::Play, "live")] {
            match shard.create(role, stream, sdp) {
                Ok((id, created)) => {
                    // What the gateway answers is SDP its own reader accepts.
                    let answer = Offer::parse(&created.answer).expect("the answer parses");
                    assert!(!answer.sections.is_empty());
                    // RFC 8843 §7.3: the answer has a BUNDLE group exactly when the offer had.
                    if let Ok(o) = &parsed {
                        assert_eq!(answer.bundled, o.bundled, "BUNDLE group in the answer");
                    }
                    shard.delete(id).expect("a created session can be deleted");
                }
                Err(CreateError::Admit(_)) | Err(CreateError::Shard(_)) => {}
                Err(CreateError::NoReply) => panic!("the shard did not answer a Create"),
            }
        }
        assert_eq!(
            shard.hub.session_count(),
            before,
            "every refused or deleted session left the hub"
        );
        assert_eq!(shard.engine.counters.panics, 0);
    });
});
