//! RTCP feedback as a peer logs it, for tests that check NACKs and keyframe requests on the wire.

use std::time::Instant;

use str0m::rtp::rtcp::{Rtcp, SenderInfo};

/// RTCP feedback a peer sent or received, decrypted (needs [`super::PeerOptions::raw_packets`]).
#[derive(Clone, Debug, Default)]
pub struct RtcpLog {
    /// Each NACK: when, the media SSRC, and the sequence numbers it asks for.
    pub nacks: Vec<(Instant, u32, Vec<u16>)>,
    pub plis: Vec<Instant>,
    /// Each PLI's media SSRC, with when: which stream (which simulcast layer) it asks for.
    pub pli_media: Vec<(Instant, u32)>,
    pub firs: Vec<Instant>,
    /// Each sender report: when, and what it says.
    pub sender_reports: Vec<(Instant, SenderInfo)>,
}

impl RtcpLog {
    /// Every sequence number asked for, in order of the NACKs.
    pub fn nacked_seqs(&self) -> Vec<u16> {
        self.nacks
            .iter()
            .flat_map(|(_, _, s)| s.iter().copied())
            .collect()
    }

    pub(super) fn record(&mut self, now: Instant, rtcp: &Rtcp) {
        match rtcp {
            Rtcp::Nack(n) => {
                let mut seqs = Vec::new();
                for e in n.reports.iter() {
                    seqs.push(e.pid);
                    for bit in 0..16u16 {
                        if e.blp & (1 << bit) != 0 {
                            seqs.push(e.pid.wrapping_add(bit + 1));
                        }
                    }
                }
                self.nacks.push((now, *n.ssrc, seqs));
            }
            Rtcp::Pli(p) => {
                self.plis.push(now);
                self.pli_media.push((now, *p.ssrc));
            }
            Rtcp::Fir(_) => self.firs.push(now),
            Rtcp::SenderReport(sr) => self.sender_reports.push((now, sr.sender_info)),
            _ => {}
        }
    }
}
