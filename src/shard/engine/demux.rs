//! Which session a datagram belongs to: by the remote address once learned, else by the ufrag
//! of a STUN request that passes the session's ICE credentials (RFC 8445 §7.3).

use super::*;

/// The shard's index from a datagram's source to its session.
#[derive(Debug, Default)]
pub(super) struct Demux {
    by_addr: HashMap<SocketAddr, SessionId>,
    by_ufrag: HashMap<String, SessionId>,
    /// Remote addresses that a session still connecting has sent ICE checks to. The answers
    /// come from there and carry no ufrag of ours, and may arrive before the peer's own check
    /// has taught `by_addr` the address. Consulted only when `by_addr` misses, and an answer
    /// is only let through when it passes that session's STUN integrity check, so an offer
    /// that lists someone else's address cannot capture their traffic.
    checked: HashMap<SocketAddr, SessionId>,
}

/// Where a datagram goes.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Route {
    /// From a learned address of this session.
    Known(SessionId),
    /// Perhaps this session's: it must pass the session's ICE check to teach its address.
    Unlearned(SessionId),
    /// Nobody's.
    Unknown,
}

impl Demux {
    pub(super) fn route(&self, source: SocketAddr, data: &[u8]) -> Route {
        let by_ufrag = stun::local_ufrag(data).and_then(|u| self.by_ufrag.get(u));
        if let Some(id) = self.by_addr.get(&source) {
            // A request for another session from a learned address: a new client on the
            // address of one that vanished (a reused port, a NAT mapping kept). The old session
            // must not swallow the new one's checks until its consent expires.
            return match by_ufrag {
                Some(other) if other != id => Route::Unlearned(*other),
                _ => Route::Known(*id),
            };
        }
        by_ufrag
            .or_else(|| self.checked.get(&source))
            .map_or(Route::Unknown, |id| Route::Unlearned(*id))
    }

    pub(super) fn learn(&mut self, source: SocketAddr, id: SessionId) {
        self.by_addr.insert(source, id);
    }

    pub(super) fn forget_addr(&mut self, source: SocketAddr) {
        self.by_addr.remove(&source);
    }

    /// Session `id`, still connecting, sent an ICE check to `destination`.
    pub(super) fn checking(&mut self, destination: SocketAddr, id: SessionId) {
        if !self.by_addr.contains_key(&destination) {
            self.checked.insert(destination, id);
        }
    }

    /// Session `id` connected: its peer's addresses are learned now.
    pub(super) fn connected(&mut self, id: SessionId) {
        self.checked.retain(|_, s| *s != id);
    }

    /// Session `id` answers to local ufrag `ufrag` (instead of `old`, after an ICE restart).
    pub(super) fn set_ufrag(&mut self, id: SessionId, old: Option<&str>, ufrag: String) {
        if let Some(old) = old {
            self.by_ufrag.remove(old);
        }
        self.by_ufrag.insert(ufrag, id);
    }

    /// Forgets session `id`, its addresses `addrs` and its ufrag; an address another session
    /// has learned since stays that session's.
    pub(super) fn remove(&mut self, id: SessionId, addrs: &[SocketAddr], ufrag: &str) {
        for a in addrs {
            if self.by_addr.get(a) == Some(&id) {
                self.by_addr.remove(a);
            }
        }
        self.checked.retain(|_, s| *s != id);
        if self.by_ufrag.get(ufrag) == Some(&id) {
            self.by_ufrag.remove(ufrag);
        }
    }
}

impl Engine {
    /// One datagram from `source`, received on the shard's socket with destination IP `dst_ip`
    /// (when the socket reports it).
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        dst_ip: Option<IpAddr>,
        data: &[u8],
    ) {
        // On a dual-stack socket an IPv4 peer appears as ::ffff:a.b.c.d, and so does the
        // address it sent to. Its candidates, str0m's pairs, the demux and the figures all
        // know it by its IPv4 address.
        let source = canonical(source);
        let dst_ip = dst_ip.map(|ip| ip.to_canonical());
        let destination = announced(&self.candidates, dst_ip, source).unwrap_or(self.candidates[0]);
        self.receive(now, Protocol::Udp, source, destination, data);
    }

    /// One RFC 4571 frame from the ICE-TCP connection of `source`, which reached the node
    /// at `local`.
    pub fn handle_tcp(&mut self, now: Instant, source: SocketAddr, local: SocketAddr, data: &[u8]) {
        let source = canonical(source);
        let local = canonical(local);
        let destination =
            announced(&self.tcp_candidates, Some(local.ip()), source).unwrap_or(local);
        self.receive(now, Protocol::Tcp, source, destination, data);
    }

    fn receive(
        &mut self,
        now: Instant,
        proto: Protocol,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) {
        self.counters.datagrams_in += 1;
        let parsed = self.faults.isolate(Site::Parse, None, || {
            Receive::new(proto, source, destination, data)
        });
        let receive = match parsed {
            Some(Ok(r)) => r,
            Some(Err(_)) => {
                self.counters.datagrams_invalid += 1;
                return;
            }
            None => {
                // No session is involved yet: the datagram alone is lost.
                self.counters.panics += 1;
                self.counters.datagrams_invalid += 1;
                return;
            }
        };
        let input = Input::Receive(now, receive);
        let (id, learned) = match self.demux.route(source, data) {
            Route::Known(id) => (id, false),
            Route::Unlearned(id) => (id, true),
            Route::Unknown => {
                self.counters.datagrams_unknown_source += 1;
                return;
            }
        };
        let Some(session) = self.sessions.get_mut(&id) else {
            self.demux.forget_addr(source);
            self.counters.datagrams_unknown_source += 1;
            return;
        };
        if learned {
            // Only a request that passes the session's ICE credentials teaches an address.
            let rtc = &session.rtc;
            match self
                .faults
                .isolate(Site::Accepts, Some(id), || rtc.accepts(&input))
            {
                Some(true) => {}
                Some(false) => {
                    self.counters.datagrams_unknown_source += 1;
                    return;
                }
                None => {
                    self.counters.datagrams_invalid += 1;
                    self.remove(now, id, PANIC);
                    return;
                }
            }
            session.addrs.push(source);
            session.over_tcp = proto == Protocol::Tcp;
            self.demux.learn(source, id);
        }
        session.last_rx = now;
        // ChangeCipherSpec or handshake (RFC 7983: 20 and 22) once connected: a flight sent
        // again because the gateway's answer to it was lost.
        if session.connected && matches!(data.first(), Some(20 | 22)) {
            session.keys_late = true;
        }
        if session.media_path.is_some_and(|p| p.2 == source) {
            session.path_heard = now;
        }
        // The viewer's RTCP reaches str0m too (its PLIs become keyframe requests there); what
        // str0m counts only for media it sent, and the NACKs, are taken here. RTCP that passes
        // the viewer's keys also shows where the viewer is: when nothing came from where its
        // media goes for `PATH_SILENCE` (a NAT's new mapping, a move to another network),
        // media follows its next report there.
        let feedback = session.sender.as_mut().and_then(|s| s.on_rtcp(now, data));
        if let Some(feedback) = feedback {
            let here = (proto == Protocol::Tcp, destination, source);
            let silent = now.saturating_duration_since(session.path_heard) >= PATH_SILENCE;
            if session.media_path.is_none() || silent {
                session.move_media(here, now);
            }
            let path = session.media_path.unwrap_or(here);
            self.counters.nacks_received += feedback.nacks;
            self.counters.twcc_malformed += feedback.malformed;
            self.counters.plis_received += feedback.plis;
            let history = self.streams.get(&session.stream).map(|l| &l.history);
            let resent = super::egress::answer_nacks(
                session,
                history,
                feedback.wanted,
                &mut self.outbox,
                path,
                now,
            );
            self.counters.packets_retransmitted += resent;
            session.stats.packets_retransmitted += resent;
            let layers = self.streams.get(&session.stream).map(|l| &l.layers);
            if let (Some((usage, acked)), Some(layers)) = (feedback.delay, layers) {
                if layers.len() > 1 {
                    let smallest = layers.rates(0).smallest;
                    session.estimate.on_delay(now, usage, acked, smallest);
                }
            }
            for (mid, fraction) in feedback.reports {
                let video = session
                    .tracks
                    .iter()
                    .any(|(m, t)| *m == mid && t.kind == Kind::Video);
                let (Some(layers), Some(current)) = (layers, session.layer.current) else {
                    continue;
                };
                if video && layers.len() > 1 {
                    // What was sent over the report's interval, which may have been another
                    // layer's rate: the layer played now is the fallback before two reports.
                    let sent = session.sender.as_ref().and_then(|s| s.sent_bytes(mid));
                    let rates = layers.rates(current);
                    session.estimate.on_report(now, fraction, sent, rates);
                }
            }
        }
        let rtc = &mut session.rtc;
        let received = self.faults.isolate(Site::Receive, Some(id), || {
            crate::dtls::keys_during(|| rtc.handle_input(input))
        });
        let received = received.map(|(r, keys)| {
            if keys.is_some() {
                session.srtp_keys = keys;
            }
            r
        });
        match received {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                session
                    .span
                    .in_scope(|| debug!(error = %e, "datagram rejected"));
                self.counters.datagrams_invalid += 1;
            }
            None => {
                self.counters.datagrams_invalid += 1;
                self.remove(now, id, PANIC);
                return;
            }
        }
        if !session.held_candidates.is_empty() {
            self.release_candidates(now, id);
        }
        self.drive(now, id);
    }
}

/// How long nothing may come from where a viewer's media goes before the media follows the
/// viewer's authenticated RTCP elsewhere. str0m checks a working pair at least every second
/// and the viewer answers, so three missed answers mean the viewer is no longer there; sooner
/// would pull media onto a path the viewer only sends on (a relay in one direction, as in
/// `tests/loss.rs`).
pub(super) const PATH_SILENCE: Duration = Duration::from_secs(3);

/// The announced candidate (of `candidates`) a datagram from `source` was sent to, having
/// reached the local IP `dst_ip`: str0m only accepts STUN addressed to one of its host
/// candidates, so behind NAT the public address stands in for the local one, the first of the
/// source's address family.
fn announced(
    candidates: &[SocketAddr],
    dst_ip: Option<IpAddr>,
    source: SocketAddr,
) -> Option<SocketAddr> {
    let exact = dst_ip.and_then(|ip| candidates.iter().find(|c| c.ip() == ip));
    let same_family = || candidates.iter().find(|c| c.is_ipv4() == source.is_ipv4());
    exact.or_else(same_family).copied()
}

/// `addr` with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) as the IPv4 address it stands for.
pub(super) fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_found_by_ufrag_then_by_its_learned_address() {
        let mut d = Demux::default();
        let (id, peer) = (SessionId(1), "192.0.2.1:5000".parse().expect("addr"));
        d.set_ufrag(id, None, "ours".into());
        assert_eq!(
            d.route(peer, &stun::binding_request("ours:theirs")),
            Route::Unlearned(id)
        );
        assert_eq!(d.route(peer, b"\x80media"), Route::Unknown);
        d.learn(peer, id);
        assert_eq!(d.route(peer, b"\x80media"), Route::Known(id));
        d.remove(id, &[peer], "ours");
        assert_eq!(
            d.route(peer, &stun::binding_request("ours:theirs")),
            Route::Unknown
        );
    }

    #[test]
    fn a_new_session_on_a_vanished_peers_address_gets_its_checks() {
        let mut d = Demux::default();
        let peer = "192.0.2.4:5000".parse().expect("addr");
        let (old, new) = (SessionId(4), SessionId(5));
        d.set_ufrag(old, None, "old".into());
        d.learn(peer, old);
        d.set_ufrag(new, None, "new".into());
        assert_eq!(d.route(peer, b"\x80media"), Route::Known(old));
        assert_eq!(
            d.route(peer, &stun::binding_request("old:x")),
            Route::Known(old)
        );
        assert_eq!(
            d.route(peer, &stun::binding_request("new:y")),
            Route::Unlearned(new)
        );
        d.learn(peer, new);
        // The old session expiring does not take the address from the new one.
        d.remove(old, &[peer], "old");
        assert_eq!(d.route(peer, b"\x80media"), Route::Known(new));
    }

    #[test]
    fn checked_addresses_count_only_while_connecting() {
        let mut d = Demux::default();
        let (id, peer) = (SessionId(2), "192.0.2.2:5000".parse().expect("addr"));
        d.checking(peer, id);
        assert_eq!(d.route(peer, b"answer"), Route::Unlearned(id));
        d.connected(id);
        assert_eq!(d.route(peer, b"answer"), Route::Unknown);
    }

    #[test]
    fn mapped_addresses_are_their_ipv4_addresses() {
        let mapped: SocketAddr = "[::ffff:192.0.2.5]:5000".parse().expect("addr");
        assert_eq!(canonical(mapped), "192.0.2.5:5000".parse().expect("addr"));
        let v6: SocketAddr = "[2001:db8::5]:5000".parse().expect("addr");
        assert_eq!(canonical(v6), v6);
    }

    #[test]
    fn an_ice_restart_moves_the_ufrag() {
        let mut d = Demux::default();
        let (id, peer) = (SessionId(3), "192.0.2.3:5000".parse().expect("addr"));
        d.set_ufrag(id, None, "old".into());
        d.set_ufrag(id, Some("old"), "new".into());
        assert_eq!(
            d.route(peer, &stun::binding_request("old:x")),
            Route::Unknown
        );
        assert_eq!(
            d.route(peer, &stun::binding_request("new:x")),
            Route::Unlearned(id)
        );
    }
}
