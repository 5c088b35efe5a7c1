//! A trickle-ICE PATCH body (`application/trickle-ice-sdpfrag`, RFC 8840) on its way in: the
//! gateway's fragment parser, the restart offer built from it, and the PATCH in a real shard
//! engine (str0m's candidate parser, or its `accept_offer` for an ICE restart).
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use wishcast::peer::VideoCodec;
use wishcast::sdp::{restart_offer, Fragment, Offer};
use wishcast::session::{Role, SessionId};
use wishcast_fuzz::{offer, Shard};

struct State {
    shard: Shard,
    offer: String,
    session: SessionId,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(fresh());
}

/// A shard with one publisher session to PATCH.
fn fresh() -> State {
    let mut shard = Shard::new();
    let offer = offer(Role::Publish, Some(VideoCodec::Vp8), true);
    let (session, _) = shard
        .create(Role::Publish, "frag", &offer)
        .expect("the session is created");
    State {
        shard,
        offer,
        session,
    }
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the If-Match the PATCH carries; the rest is the body.
    let Some((&tag, body)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(body) else {
        return;
    };
    let Ok(fragment) = Fragment::parse(text) else {
        return;
    };
    STATE.with(|cell| {
        let mut state = cell.borrow_mut();
        // A restart offer keeps the original's shape: still an offer the gateway serves.
        let restarted = restart_offer(&state.offer, &fragment);
        let o = Offer::parse(&restarted).expect("a restart offer parses");
        assert_eq!(o.check(Role::Publish), Ok(()));
        let if_match = match tag % 3 {
            0 => None,
            1 => Some("*"),
            _ => Some("\"not-the-etag\""),
        };
        let session = state.session;
        let _ = state.shard.patch(session, fragment, if_match);
        assert_eq!(state.shard.engine.counters.panics, 0);
        assert_eq!(
            state.shard.engine.session_count(),
            1,
            "a PATCH never ends the session it patches"
        );
    });
});
