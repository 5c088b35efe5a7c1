//! Containing panics in the WebRTC stack: a str0m call that panics costs its session, never
//! the shard. Every call that sees untrusted input (datagrams, SDP and candidates from HTTP
//! bodies) or mutates an `Rtc` runs through [`Faults::isolate`], which tests can also make
//! panic at a chosen [`Site`] to prove the containment.

use crate::session::SessionId;

/// A kind of str0m call the engine makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Site {
    /// `Receive::new`: a datagram's first parse, before any session is known.
    Parse,
    /// `Rtc::accepts`: the ICE check of a datagram from an address not yet learned.
    Accepts,
    /// `Rtc::handle_input` with a datagram.
    Receive,
    /// `Rtc::handle_input` with a timeout.
    Timeout,
    /// `Rtc::poll_output`.
    Poll,
    /// A write of an RTP packet to a viewer.
    Write,
    /// `SdpOffer::from_sdp_string` and `accept_offer` on an offer from HTTP.
    Offer,
    /// `Candidate::from_sdp_string` on a trickled candidate from HTTP.
    Candidate,
}

/// Panics to inject, for tests: each fires once, at its site, for its session (or any).
#[derive(Debug, Default)]
pub struct Faults {
    armed: Vec<(Site, Option<SessionId>)>,
}

impl Faults {
    /// Makes the next call at `site` (for `session`, or for any session) panic.
    pub fn arm(&mut self, site: Site, session: Option<SessionId>) {
        self.armed.push((site, session));
    }

    fn fire(&mut self, site: Site, session: Option<SessionId>) -> bool {
        if self.armed.is_empty() {
            return false;
        }
        let hit = self.armed.iter().position(|(s, id)| {
            *s == site && (id.is_none() || session.is_none() || *id == session)
        });
        hit.map(|i| self.armed.swap_remove(i)).is_some()
    }

    /// Runs one str0m call for `session` at `site`, catching a panic: `None` means it
    /// panicked and the caller must not touch that session's `Rtc` again. `Rtc` shares no
    /// state with other sessions, so the others are unaffected.
    pub fn isolate<T>(
        &mut self,
        site: Site,
        session: Option<SessionId>,
        f: impl FnOnce() -> T,
    ) -> Option<T> {
        let inject = self.fire(site, session);
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if inject {
                panic!("injected panic at {site:?}");
            }
            f()
        }))
        .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_armed_site_panics_once_and_only_there() {
        let mut faults = Faults::default();
        let id = SessionId(7);
        faults.arm(Site::Write, Some(id));
        assert_eq!(faults.isolate(Site::Poll, Some(id), || 1), Some(1));
        assert_eq!(
            faults.isolate(Site::Write, Some(SessionId(8)), || 2),
            Some(2)
        );
        assert_eq!(faults.isolate(Site::Write, Some(id), || 3), None);
        assert_eq!(faults.isolate(Site::Write, Some(id), || 4), Some(4));
    }
}
