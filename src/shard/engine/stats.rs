//! Per-session figures for the API, from str0m's statistics events and the gateway's own
//! counts.

use super::*;

impl Engine {
    /// str0m's statistics events: the session's figures for the API, and the feedback
    /// counters moved by what str0m counted since the previous event.
    pub(super) fn on_stats(&mut self, id: SessionId, event: Event) {
        match event {
            Event::PeerStats(p) => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    if let Some(pair) = &p.selected_candidate_pair {
                        // Only a change of str0m's pair moves the media: the viewer's RTCP
                        // may have moved it since, to where the viewer really is.
                        let tcp = pair.protocol == Protocol::Tcp;
                        let selected = (tcp, pair.local.addr, pair.remote.addr);
                        if s.selected_pair != Some(selected) {
                            s.selected_pair = Some(selected);
                            s.move_media(selected, p.timestamp);
                        }
                    }
                    s.stats.rtt_ms = p.rtt.map(|d| d.as_secs_f64() * 1000.0);
                    s.stats.loss_in = p.ingress_loss_fraction;
                    s.stats.loss_out = p.egress_loss_fraction;
                    s.stats.bytes_in = p.peer_bytes_rx;
                    // What the gateway's own egress sent never went through str0m.
                    let tx = p.peer_bytes_tx + s.sender.as_ref().map_or(0, |e| e.bytes);
                    s.stats.bytes_out = tx;
                    // Bit rates over the interval since the previous event (or creation).
                    let (then, rx, sent) = s.rate_sample;
                    let secs = p.timestamp.saturating_duration_since(then).as_secs_f64();
                    if secs > 0.0 {
                        let rate = |now: u64, before: u64| {
                            (now.saturating_sub(before) as f64 * 8.0 / secs).round() as u64
                        };
                        s.stats.bitrate_in = rate(p.peer_bytes_rx, rx);
                        s.stats.bitrate_out = rate(tx, sent);
                        s.rate_sample = (p.timestamp, p.peer_bytes_rx, tx);
                    }
                }
            }
            Event::MediaIngressStats(m) => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    // Video only: jitter is in RTP clock units, which differ between tracks.
                    if s.mids
                        .iter()
                        .any(|(mid, k)| *mid == m.mid && *k == Kind::Video)
                    {
                        s.stats.jitter = Some(m.jitter);
                    }
                    let report = TrackReport {
                        mid: m.mid,
                        packets: m.packets,
                        nacks: m.nacks,
                        plis: m.plis,
                        lost: 0,
                    };
                    let (nacks, plis) = TrackReport::update(&mut s.ingress, report);
                    self.counters.nacks_sent += nacks;
                    self.counters.plis_sent += plis;
                }
            }
            Event::MediaEgressStats(m) => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    // Only media str0m sent has these: not a viewer's on the gateway's own
                    // egress (see `session_stats`).
                    let report = TrackReport {
                        mid: m.mid,
                        packets: m.packets,
                        nacks: m.nacks,
                        plis: m.plis,
                        lost: m.remote.as_ref().map_or(0, |r| r.packets_lost),
                    };
                    let (nacks, plis) = TrackReport::update(&mut s.egress, report);
                    self.counters.nacks_received += nacks;
                    self.counters.plis_received += plis;
                    // Packets still queued in str0m make this low for a moment, never high:
                    // it only moves forward.
                    let sent: u64 = s.egress.iter().map(|t| t.packets).sum();
                    let resent = sent.saturating_sub(s.packets_written);
                    if resent > s.stats.packets_retransmitted {
                        self.counters.packets_retransmitted +=
                            resent - s.stats.packets_retransmitted;
                        s.stats.packets_retransmitted = resent;
                    }
                }
            }
            _ => {}
        }
    }

    /// A session as the API shows it, at `now`.
    pub(super) fn session_stats(&self, s: &Session, now: Instant) -> SessionStats {
        let sum = |list: &[TrackReport], f: fn(&TrackReport) -> u64| list.iter().map(f).sum();
        let (packets_in, nacks_in, plis_in) = (
            sum(&s.ingress, |t| t.packets),
            sum(&s.ingress, |t| t.nacks),
            sum(&s.ingress, |t| t.plis),
        );
        let (mut packets_out, mut nacks_out, mut plis_out, mut lost_out) = (
            sum(&s.egress, |t| t.packets),
            sum(&s.egress, |t| t.nacks),
            sum(&s.egress, |t| t.plis),
            sum(&s.egress, |t| t.lost),
        );
        let mut loss_out = s.stats.loss_out;
        if let Some(sender) = &s.sender {
            // str0m sent no media, so its figures for it are empty.
            let (packets, nacks, plis, lost) = sender.totals();
            (packets_out, nacks_out, plis_out, lost_out) = (packets, nacks, plis, lost);
            loss_out = sender.fraction_lost();
        }
        SessionStats {
            id: s.id.to_string(),
            kind: s.role.name(),
            shard: self.index,
            state: if s.connected {
                "connected"
            } else {
                "connecting"
            },
            remote: s.addrs.last().map(|a| a.to_string()),
            transport: s
                .addrs
                .last()
                .map(|_| if s.over_tcp { "tcp" } else { "udp" }),
            candidate: s.addrs.last().map(|a| path_candidate(s, *a)),
            duration_secs: now.saturating_duration_since(s.created).as_secs_f64(),
            packets_in,
            packets_out,
            packets_lost_in: s.ssrcs.iter().map(Incoming::lost).sum(),
            packets_lost_out: lost_out,
            loss_out,
            nacks: nacks_in + nacks_out,
            plis: plis_in + plis_out,
            connected_secs: s
                .connected_at
                .map(|t| now.saturating_duration_since(t).as_secs_f64()),
            ..s.stats.clone()
        }
    }
}

/// The type of the peer's candidate that media comes from: the offered or trickled candidate
/// at that address; for ICE-TCP, the peer's active candidate on that IP (its port is a
/// placeholder, RFC 6544 §4.5); otherwise `prflx`, an address learned from the peer's checks
/// (RFC 8445 §7.3.1.3), as a NAT's mapping is.
fn path_candidate(s: &Session, addr: std::net::SocketAddr) -> &'static str {
    let exact = s
        .peer_candidates
        .iter()
        .find(|(a, tcp, _)| *a == addr && *tcp == s.over_tcp);
    let tcp_active = || {
        s.peer_candidates
            .iter()
            .find(|(a, tcp, _)| s.over_tcp && *tcp && a.ip() == addr.ip())
    };
    exact.or_else(tcp_active).map_or("prflx", |c| c.2)
}
