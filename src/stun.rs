//! Just enough STUN (RFC 8489) to route a binding request to its session before str0m sees it:
//! the local ufrag is the first half of the USERNAME attribute (RFC 8445 §7.2.2). And the
//! copies of ICE checks that the gateway and the test peers send until they connect
//! ([`CheckCopies`]).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const USERNAME: u16 = 0x0006;

/// Whether a datagram is STUN (first byte 0..=3 and the magic cookie, RFC 7983 demultiplexing).
pub fn is_stun(data: &[u8]) -> bool {
    data.len() >= 20 && data[0] < 4 && data[4..8] == MAGIC_COOKIE
}

/// Whether a datagram is a STUN binding request or success response (RFC 8489 §5: method
/// 0x001, classes request and success response), the two messages of an ICE check.
pub fn is_binding(data: &[u8]) -> bool {
    is_stun(data) && matches!(u16::from_be_bytes([data[0], data[1]]), 0x0001 | 0x0101)
}

/// The local (gateway) ufrag a STUN request is addressed to, if it has a USERNAME.
pub fn local_ufrag(data: &[u8]) -> Option<&str> {
    if !is_stun(data) {
        return None;
    }
    let len = u16::from_be_bytes([data[2], data[3]]) as usize;
    let body = data.get(20..20 + len)?;
    let mut at = 0;
    while at + 4 <= body.len() {
        let kind = u16::from_be_bytes([body[at], body[at + 1]]);
        let alen = u16::from_be_bytes([body[at + 2], body[at + 3]]) as usize;
        let value = body.get(at + 4..at + 4 + alen)?;
        if kind == USERNAME {
            let user = std::str::from_utf8(value).ok()?;
            return user.split(':').next();
        }
        at += 4 + alen.div_ceil(4) * 4;
    }
    None
}

/// Extra copies of each check datagram before a session connects.
pub const CHECK_COPIES: u32 = 2;
/// Time between copies: apart enough that a short burst of loss does not take them all.
pub const CHECK_COPY_SPACING: Duration = Duration::from_millis(10);
/// Most copies waiting at once; past it a check goes out once, as str0m sent it. A join storm
/// of thousands of sessions fits.
const CHECK_COPY_CAPACITY: usize = 16_384;

/// Copies of ICE checks, sent until a session connects.
///
/// The gateway is a full ICE agent, so a peer's nomination takes effect only once the
/// gateway's own check of that pair is answered (RFC 8445 §7.3.1.5). str0m's agent sends one
/// check when the nomination arrives and then retries on its backoff (100, 200, 400 ms, up to
/// the 1 s keepalive interval). It makes no triggered check when the peer's next request
/// arrives (RFC 8445 §7.3.1.4). At 20 % loss each way a check's round trip fails 36 % of the
/// time, and a few failures in a row on that backoff kept about one viewer in fifty waiting
/// 2.5 to 4.7 s for its first frame. A peer's nomination is one request on the same kind of
/// backoff.
///
/// So until it is connected, a session sends each binding request and success response
/// [`CHECK_COPIES`] more times, [`CHECK_COPY_SPACING`] apart: a STUN retransmission with the
/// same transaction id (RFC 8489 §6.2.1). The gateway copies only what goes to an address
/// the peer has sent a valid check from, so an unreachable or made-up candidate in an offer
/// gets no more from it than before. The other end answers each request that arrives,
/// and a client takes the first answer and ignores the rest. With two copies a check's round
/// trip at 20 % loss each way fails about 5 % of the time instead of 36 % (by arithmetic,
/// for independent losses). It costs a few small datagrams per session at connect time, and
/// nothing once media flows.
pub struct CheckCopies<K> {
    due: VecDeque<(Instant, CheckCopy<K>)>,
}

/// One copy of a check datagram, with the session (`K`) that sent it.
pub struct CheckCopy<K> {
    pub key: K,
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
}

impl<K> Default for CheckCopies<K> {
    fn default() -> Self {
        CheckCopies {
            due: VecDeque::new(),
        }
    }
}

impl<K: Copy> CheckCopies<K> {
    /// Schedules the copies of a datagram that session `key` sends at `now`, if it is an ICE
    /// check.
    pub fn schedule(
        &mut self,
        now: Instant,
        key: K,
        source: SocketAddr,
        destination: SocketAddr,
        contents: &[u8],
    ) {
        if !is_binding(contents) || self.due.len() + CHECK_COPIES as usize > CHECK_COPY_CAPACITY {
            return;
        }
        for k in 1..=CHECK_COPIES {
            let at = now + CHECK_COPY_SPACING * k;
            // Mostly appends: copies are scheduled in time order, a fixed delay ahead.
            let i = self.due.partition_point(|(t, _)| *t <= at);
            let copy = CheckCopy {
                key,
                source,
                destination,
                contents: contents.to_vec(),
            };
            self.due.insert(i, (at, copy));
        }
    }

    /// When the next copy is due.
    pub fn next(&self) -> Option<Instant> {
        self.due.front().map(|(t, _)| *t)
    }

    /// The next copy due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<CheckCopy<K>> {
        if self.next()? > now {
            return None;
        }
        self.due.pop_front().map(|(_, c)| c)
    }

    /// Forgets the copies of session `key` (it is gone).
    pub fn forget(&mut self, key: K)
    where
        K: PartialEq,
    {
        self.due.retain(|(_, c)| c.key != key);
    }
}

/// A binding request with USERNAME `username` and no integrity, for tests of the routing.
#[cfg(test)]
pub(crate) fn binding_request(username: &str) -> Vec<u8> {
    let mut attrs = Vec::new();
    attrs.extend_from_slice(&0x8029u16.to_be_bytes()); // ICE-CONTROLLING
    attrs.extend_from_slice(&8u16.to_be_bytes());
    attrs.extend_from_slice(&[7; 8]);
    attrs.extend_from_slice(&USERNAME.to_be_bytes());
    attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
    attrs.extend_from_slice(username.as_bytes());
    while attrs.len() % 4 != 0 {
        attrs.push(0);
    }
    let mut msg = vec![0x00, 0x01];
    msg.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    msg.extend_from_slice(&MAGIC_COOKIE);
    msg.extend_from_slice(&[1; 12]);
    msg.extend_from_slice(&attrs);
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_checks_only_spaced_and_in_time_order() {
        let a: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let b: SocketAddr = "127.0.0.1:2".parse().expect("addr");
        let mut c = CheckCopies::default();
        let t0 = Instant::now();
        // DTLS and media are never copied.
        c.schedule(t0, 1u8, a, b, &[22; 100]);
        assert_eq!(c.next(), None);
        let check = binding_request("a:b");
        c.schedule(t0, 1u8, a, b, &check);
        c.schedule(t0 + Duration::from_millis(15), 2u8, a, b, &check);
        c.schedule(t0 + Duration::from_millis(16), 3u8, a, b, &check);
        c.forget(3);
        assert!(c.pop_due(t0 + Duration::from_millis(9)).is_none());
        let mut at = Vec::new();
        let mut now = t0;
        while c.next().is_some() {
            now += Duration::from_millis(1);
            while let Some(copy) = c.pop_due(now) {
                assert_eq!((copy.source, copy.destination), (a, b));
                assert_eq!(copy.contents, check);
                at.push(((now - t0).as_millis(), copy.key));
            }
        }
        assert_eq!(at, vec![(10, 1), (20, 1), (25, 2), (35, 2)]);
    }

    #[test]
    fn tells_binding_checks_from_other_stun() {
        let mut m = binding_request("a:b");
        assert!(is_binding(&m));
        m[0] = 0x01; // success response
        assert!(is_binding(&m));
        m[1] = 0x11; // error response
        assert!(!is_binding(&m));
        m[0] = 0x00;
        m[1] = 0x11; // binding indication
        assert!(!is_binding(&m));
        assert!(!is_binding(&[0; 19]));
    }

    #[test]
    fn finds_the_local_ufrag() {
        assert_eq!(local_ufrag(&binding_request("srv1:cli9")), Some("srv1"));
    }

    #[test]
    fn truncated_or_non_stun_is_none() {
        let mut m = binding_request("abc:def");
        m.truncate(30);
        assert_eq!(local_ufrag(&m), None);
        assert_eq!(local_ufrag(&[0x80, 0, 0, 0]), None);
        assert!(!is_stun(&[0x16; 40]));
    }
}
