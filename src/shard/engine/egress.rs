//! Forwarded media to a viewer without str0m's send path: the header written, the packet
//! protected with the session's own SRTP keys, and the datagram queued, per packet per viewer.
//!
//! str0m's write path queues each packet, paces it, writes its header extensions, copies it
//! into the stream's resend buffer and protects it into a fresh buffer: per viewer that cost
//! several times the SRTP itself, and its resend buffer was most of a viewer's memory.
//! Forwarded media needs none of that: it is already packetized, paced by the publisher and
//! the same for every viewer. So once DTLS hands out the keys ([`crate::dtls::keys_during`])
//! a viewer's media goes out from here, on the ICE pair its DTLS and RTCP use, and str0m
//! keeps ICE, DTLS and the viewer's RTCP (PLIs, receiver reports, statistics).
//!
//! What str0m did for those packets is done here instead:
//! - **Sender reports** (RFC 3550 §6.4.1), so players can line audio up with video: str0m's
//!   are turned off for viewers (it would report RTP time 0, having sent nothing).
//! - **NACKs** (RFC 4585 §6.2.1): the viewer's SRTCP is read beside str0m, and the engine
//!   finds each lost packet in the stream's shared history (`fanout::History`) through the
//!   viewer's rewriter, which maps its sequence numbers back to the publisher's: a viewer
//!   keeps no list of what it was sent. The packet goes again as RTX (RFC 4588) where the
//!   viewer's answer has an RTX stream for the track, as str0m would send it, else as it was
//!   sent first.
//! - **The figures** str0m keeps only for what it sent: NACKs, PLIs and FIRs, and the loss the
//!   viewer's receiver reports give, counted from the same RTCP.
//! - **Transport-wide sequence numbers** where the viewer negotiated them, and its
//!   transport-wide feedback read for the delay on its path ([`crate::twcc`]).
//!
//! The header extensions written are the gateway's own (abs-capture-time forwarded,
//! playout-delay, transport-wide sequence number): the gateway's answer binds each SSRC to
//! its m-line (`a=ssrc`), and the ingest's extension values must not reach viewers.
//!
//! `media.direct_egress` turns it on (the default).
//!
//! str0m holds the same keys: it must never send RTP on a track's SSRCs while this egress
//! does (nothing is written to str0m for such a viewer, and it has no BWE probes or padding),
//! and its RTCP index counts in a range of its own (`RTCP_INDEX_START`).

use std::time::SystemTime;

use str0m::rtp::AbsCaptureTime;

use super::session::MediaPath;
use super::*;
use crate::dtls::SrtpKeys;
use crate::srtp::{Profile, SrtcpReceiver, SrtpSender};
use crate::twcc::{DelayDetector, Usage};
use crate::vp8;

/// Sender reports go out this often per track (str0m's video default; audio's 5 s is longer
/// than a player should wait to line up the first seconds).
const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Packets sent again per RTCP datagram at most: a NACK's bitmasks can ask for many.
const MAX_RESENDS_PER_RTCP: usize = 128;
/// Where this egress's SRTCP index starts. str0m keeps the same keys and may send RTCP on
/// the same SSRCs (a BYE at the end), counting its index up from 0: a GCM nonce or CM
/// keystream must never serve twice, so the two counts keep a billion apart. (A browser's
/// replay window would drop str0m's late BYE, not seen in a test; the DTLS close_notify still
/// ends the session.)
const RTCP_INDEX_START: u32 = 1 << 30;
/// Seconds between 1900 (NTP's epoch) and 1970 (Unix's).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// A viewer's media egress: its SRTP keys, and per track what was sent.
pub(super) struct Egress {
    srtp: SrtpSender,
    /// Media payload type to its RTX payload type, as negotiated.
    rtx_pts: Vec<(u8, u8)>,
    rtcp_in: SrtcpReceiver,
    tracks: Vec<OutTrack>,
    next_report: Instant,
    /// The viewer's latest receiver reference time (RFC 3611 §4.4): its SSRC, the middle 32
    /// bits of its NTP time, and when it came. Answered once with a DLRR beside the next
    /// sender report, from which the viewer learns its round-trip time.
    rrtr: Option<(u32, u32, Instant)>,
    /// Decrypted RTCP, reused.
    plain: Vec<u8>,
    /// What was sent under transport-wide sequence numbers and the delay trend the viewer's
    /// feedback shows: made with the first packet numbered (see [`numbering`]).
    twcc: Option<Box<DelayDetector>>,
    /// Bytes of the datagrams made here (media, resends, reports), for the session's figures
    /// beside what str0m sent.
    pub(super) bytes: u64,
}

struct OutTrack {
    mid: Mid,
    ssrc: u32,
    /// The ids the viewer gave the header extensions the egress writes.
    ids: ExtIds,
    /// The track's RTX SSRC, and the next extended sequence number on it.
    rtx: Option<(u32, u64)>,
    /// 0 until the first packet tells it.
    clock_rate: u32,
    packets: u32,
    octets: u32,
    /// Bytes of media sent, never wrapping: what a receiver report's interval carried.
    sent_bytes: u64,
    /// Packets sent again for NACKs.
    resent: u64,
    nacks: u64,
    plis: u64,
    /// From the viewer's latest receiver report about this track: cumulative packets lost,
    /// and the fraction lost since the report before (RFC 3550 §6.4.1).
    lost: u64,
    fraction_lost: Option<f32>,
    /// RTP time and arrival of the newest packet sent: what a sender report extrapolates from.
    last: Option<(u32, Instant)>,
    /// The highest extended sequence number sent: a NACK's 16 bits are extended from it.
    highest: u64,
}

impl OutTrack {
    /// The header of `pkt` on this track as rewritten (`pt`, extended `seq`, `time`), with the
    /// header extensions the viewer negotiated; sent at `now` (its transport-wide sequence
    /// number is taken from `twcc`).
    fn header(
        &self,
        pt: u8,
        seq: u64,
        time: u32,
        pkt: &MediaPacket,
        twcc: Option<&mut DelayDetector>,
        now: Instant,
    ) -> Header {
        let capture = self.ids.capture.zip(pkt.capture);
        // What the datagram will weigh, for the rate that arrived: header, extensions and
        // SRTP tag at most, the RTX prefix aside.
        let size = pkt.payload.len() + 12 + 36 + 16;
        let transport = self
            .ids
            .transport
            .zip(twcc)
            .map(|(id, d)| (id, d.sent(now, size)));
        Header {
            ssrc: self.ssrc,
            pt,
            marker: pkt.marker,
            seq,
            time,
            capture,
            playout: self.ids.playout,
            transport,
        }
    }
}

/// A viewer's track as the egress is set up with it: its mid, send SSRC, RTX SSRC with the
/// RTX stream's first sequence number, and the header extensions' ids.
pub(super) type TrackSetup = (Mid, Ssrc, Option<(Ssrc, u16)>, ExtIds);

/// The ids a viewer negotiated for the header extensions the egress writes on a track.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct ExtIds {
    /// abs-capture-time, forwarded from the publisher.
    pub(super) capture: Option<u8>,
    /// playout-delay, with the delays (10 ms units, 12 bits) to send: video only, and only
    /// when `media.playout_delay_max_ms` is set.
    pub(super) playout: Option<(u8, u16, u16)>,
    /// The transport-wide sequence number, when `media.transport_cc` is on.
    pub(super) transport: Option<u8>,
}

/// What [`Egress::on_rtcp`] found in one RTCP datagram.
#[derive(Default)]
pub(super) struct Feedback {
    /// The packets its NACKs ask for: the track and the extended sequence number as sent.
    pub(super) wanted: Vec<(Mid, u64)>,
    /// NACK packets (not the sequence numbers they name), as str0m counts them.
    pub(super) nacks: u64,
    /// PLIs and FIRs.
    pub(super) plis: u64,
    /// The fraction lost in each report block about one of the viewer's tracks.
    pub(super) reports: Vec<(Mid, f32)>,
    /// The delay trend the last transport-wide feedback showed, and the bits per second
    /// that arrived over about the last second.
    pub(super) delay: Option<(Usage, Option<u64>)>,
    /// Transport-wide feedback that did not parse.
    pub(super) malformed: u64,
}

impl Egress {
    /// A viewer's egress from its DTLS keys, for its tracks, with `rtx_pts` mapping media
    /// payload types to RTX ones.
    /// None for keying material that does not fit its profile.
    pub(super) fn new(
        keys: &SrtpKeys,
        tracks: &[TrackSetup],
        rtx_pts: Vec<(u8, u8)>,
        now: Instant,
    ) -> Option<Egress> {
        let profile = Profile::from_str0m(keys.profile)?;
        let srtp = SrtpSender::new(profile, &keys.material, keys.local_is_client)
            .ok()?
            .starting_rtcp_index(RTCP_INDEX_START);
        let rtcp_in = SrtcpReceiver::new(profile, &keys.material, keys.local_is_client).ok()?;
        Some(Egress {
            twcc: None,
            srtp,
            rtcp_in,
            rtx_pts,
            tracks: tracks
                .iter()
                .map(|&(mid, ssrc, rtx, ids)| OutTrack {
                    mid,
                    ssrc: *ssrc,
                    ids,
                    rtx: rtx.map(|(ssrc, seq)| (*ssrc, seq as u64)),
                    clock_rate: 0,
                    packets: 0,
                    octets: 0,
                    sent_bytes: 0,
                    resent: 0,
                    nacks: 0,
                    plis: 0,
                    lost: 0,
                    fraction_lost: None,
                    last: None,
                    highest: 0,
                })
                .collect(),
            next_report: now + REPORT_INTERVAL,
            rrtr: None,
            plain: Vec::new(),
            bytes: 0,
        })
    }

    /// The SRTP datagram for one forwarded packet on track `mid`, already rewritten to the
    /// viewer's `pt`, `seq` (extended: its top bits are the rollover counter) and `time`, its
    /// VP8 descriptor rewritten by `vp8` if any, written into `buf` (an empty buffer to
    /// reuse), to be sent at `now`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn write(
        &mut self,
        mid: Mid,
        pt: u8,
        seq: u64,
        time: u32,
        pkt: &MediaPacket,
        vp8: Option<vp8::Offsets>,
        buf: Vec<u8>,
        now: Instant,
    ) -> Option<Vec<u8>> {
        let track = self.tracks.iter_mut().find(|t| t.mid == mid)?;
        if track.clock_rate == 0 {
            track.clock_rate = pkt.params.spec().clock_rate.get();
        }
        let twcc = numbering(&mut self.twcc, &track.ids, pkt, now);
        let header = track.header(pt, seq, time, pkt, twcc, now);
        let datagram = protect(buf, &self.srtp, header, &[], &pkt.payload, vp8);
        track.packets = track.packets.wrapping_add(1);
        track.octets = track.octets.wrapping_add(pkt.payload.len() as u32);
        track.sent_bytes += pkt.payload.len() as u64;
        track.last = Some((time, pkt.received));
        track.highest = track.highest.max(seq);
        self.bytes += datagram.len() as u64;
        Some(datagram)
    }

    /// Sender reports for the tracks that sent media, when they are due: one SRTCP datagram
    /// per track. The first also answers the viewer's latest receiver reference time with
    /// a DLRR (RFC 3611 §4.5), as str0m's sender does: a receiver without its round-trip time
    /// assumes one (str0m 100 ms) and spaces its NACKs by it, and under 20 % loss that left
    /// about three times the frames unrepaired.
    pub(super) fn reports(&mut self, now: Instant, wallclock: SystemTime) -> Vec<Vec<u8>> {
        if now < self.next_report {
            return Vec::new();
        }
        self.next_report = now + REPORT_INTERVAL;
        let mut rrtr = self.rrtr.take();
        let mut out = Vec::new();
        for t in &self.tracks {
            let Some((time, at)) = t.last else {
                continue;
            };
            // The RTP time of `now` on the track's clock, from its newest packet.
            let since = now.saturating_duration_since(at);
            let ticks = (since.as_nanos() * t.clock_rate as u128 / 1_000_000_000) as u32;
            let mut sr = sender_report(
                t.ssrc,
                ntp(wallclock),
                time.wrapping_add(ticks),
                t.packets,
                t.octets,
            );
            if let Some((ssrc, lrr, at)) = rrtr.take() {
                let delay = now.saturating_duration_since(at);
                let dlrr = (delay.as_micros() * 65_536 / 1_000_000).min(u32::MAX as u128) as u32;
                sr.extend_from_slice(&extended_report_dlrr(t.ssrc, ssrc, lrr, dlrr));
            }
            self.srtp.protect_rtcp(&mut sr);
            self.bytes += sr.len() as u64;
            out.push(sr);
        }
        out
    }

    /// A datagram from the viewer that may be SRTCP: what its feedback asks for and says.
    /// Anything else, or RTCP that fails authentication, is None.
    pub(super) fn on_rtcp(&mut self, now: Instant, datagram: &[u8]) -> Option<Feedback> {
        if !is_rtcp(datagram) || !self.rtcp_in.unprotect_rtcp(datagram, &mut self.plain) {
            return None;
        }
        let mut feedback = Feedback::default();
        let mut wanted: Vec<(u32, u16)> = Vec::new();
        let tracks = &mut self.tracks;
        let rrtr = &mut self.rrtr;
        let twcc = &mut self.twcc;
        for_each_feedback(&self.plain, |item| match item {
            Item::TransportFeedback(fci) => {
                if let Some(d) = twcc.as_deref_mut() {
                    match d.on_feedback(fci) {
                        Ok(usage) => feedback.delay = Some((usage, d.acked_bps())),
                        Err(_) => feedback.malformed += 1,
                    }
                }
            }
            Item::ReferenceTime { ssrc, lrr } => *rrtr = Some((ssrc, lrr, now)),
            Item::Nack { ssrc, seqs } => {
                if let Some(t) = tracks.iter_mut().find(|t| t.ssrc == ssrc) {
                    t.nacks += 1;
                    feedback.nacks += 1;
                }
                for seq in seqs {
                    if wanted.len() < MAX_RESENDS_PER_RTCP {
                        wanted.push((ssrc, seq));
                    }
                }
            }
            Item::KeyframeRequest { ssrc } => {
                if let Some(t) = tracks.iter_mut().find(|t| t.ssrc == ssrc) {
                    t.plis += 1;
                    feedback.plis += 1;
                }
            }
            Item::Report {
                ssrc,
                fraction,
                lost,
            } => {
                if let Some(t) = tracks.iter_mut().find(|t| t.ssrc == ssrc) {
                    t.lost = lost;
                    t.fraction_lost = Some(fraction as f32 / 256.0);
                    feedback.reports.push((t.mid, fraction as f32 / 256.0));
                }
            }
        });
        for (ssrc, seq) in wanted {
            let Some(track) = self.tracks.iter().find(|t| t.ssrc == ssrc) else {
                continue;
            };
            // The sent sequence number with these low 16 bits at or below the highest sent.
            let mut ext = (track.highest & !0xffff) | seq as u64;
            if ext > track.highest {
                let Some(lower) = ext.checked_sub(1 << 16) else {
                    continue;
                };
                ext = lower;
            }
            feedback.wanted.push((track.mid, ext));
        }
        Some(feedback)
    }

    /// The datagram that sends `pkt` again on track `mid` as it was sent, with payload type
    /// `pt`, sequence number `seq`, RTP time `time` and VP8 rewrite `vp8`, written into `buf`
    /// to go at `now`: as RTX (RFC 4588 §4: the original sequence number, then the original
    /// payload) where the track has an RTX stream and `pt` an RTX payload type, else as the
    /// packet itself. It takes a new transport-wide sequence number: it is another packet on
    /// the path.
    #[allow(clippy::too_many_arguments)]
    fn resend(
        &mut self,
        mid: Mid,
        pt: u8,
        seq: u64,
        time: u32,
        pkt: &MediaPacket,
        vp8: Option<vp8::Offsets>,
        buf: Vec<u8>,
        now: Instant,
    ) -> Option<Vec<u8>> {
        let track = self.tracks.iter_mut().find(|t| t.mid == mid)?;
        let rtx_pt = self.rtx_pts.iter().find(|(p, _)| *p == pt).map(|r| r.1);
        let twcc = numbering(&mut self.twcc, &track.ids, pkt, now);
        let mut header = track.header(pt, seq, time, pkt, twcc, now);
        let original = (seq as u16).to_be_bytes();
        let mut prefix = &[][..];
        if let (Some((rtx_ssrc, next)), Some(rtx_pt)) = (track.rtx.as_mut(), rtx_pt) {
            header = Header {
                ssrc: *rtx_ssrc,
                pt: rtx_pt,
                seq: *next,
                ..header
            };
            *next += 1;
            prefix = &original;
        }
        let datagram = protect(buf, &self.srtp, header, prefix, &pkt.payload, vp8);
        self.bytes += datagram.len() as u64;
        track.resent += 1;
        Some(datagram)
    }

    /// Packets sent, resends included; NACKs, PLIs and FIRs received; packets the viewer
    /// reports lost: over all tracks, for the API.
    pub(super) fn totals(&self) -> (u64, u64, u64, u64) {
        self.tracks.iter().fold((0, 0, 0, 0), |a, t| {
            (
                a.0 + t.packets as u64 + t.resent,
                a.1 + t.nacks,
                a.2 + t.plis,
                a.3 + t.lost,
            )
        })
    }

    /// Bytes of media sent on track `mid` so far.
    pub(super) fn sent_bytes(&self, mid: Mid) -> Option<u64> {
        self.tracks
            .iter()
            .find(|t| t.mid == mid)
            .map(|t| t.sent_bytes)
    }

    /// The fraction of packets lost in the viewer's latest report, the largest over tracks.
    pub(super) fn fraction_lost(&self) -> Option<f32> {
        self.tracks
            .iter()
            .filter_map(|t| t.fraction_lost)
            .reduce(f32::max)
    }
}

/// The delay detector that numbers `pkt`, made if it is the first, where the viewer
/// negotiated transport-wide sequence numbers and `pkt` is a simulcast layer's: only a
/// viewer with layers to choose from has use for the delay on its path, and numbering every
/// packet of a single-layer stream measured 9-13 % more CPU per packet per viewer
/// (BENCHMARKS.md), which its viewers no longer pay.
fn numbering<'a>(
    twcc: &'a mut Option<Box<DelayDetector>>,
    ids: &ExtIds,
    pkt: &MediaPacket,
    now: Instant,
) -> Option<&'a mut DelayDetector> {
    ids.transport?;
    pkt.rid?;
    Some(twcc.get_or_insert_with(|| Box::new(DelayDetector::new(now))))
}

/// Sends again what a viewer's NACKs asked for (`wanted`, from [`Egress::on_rtcp`]), each
/// packet found in the stream's `history` through the viewer's rewriter, on `path`. Returns
/// how many went.
pub(super) fn answer_nacks(
    session: &mut Session,
    history: Option<&History>,
    wanted: Vec<(Mid, u64)>,
    outbox: &mut Outbox,
    path: MediaPath,
    now: Instant,
) -> u64 {
    let (Some(history), Some(sender)) = (history, session.sender.as_mut()) else {
        return 0;
    };
    let mut resent = 0;
    for (mid, seq) in wanted {
        let Some((_, track)) = session.tracks.iter().find(|(m, _)| *m == mid) else {
            continue;
        };
        let found = track
            .source(seq)
            .and_then(|(source, source_seq, ts_offset, vp8)| {
                let pkt = history.find(track.kind, source, source_seq)?;
                let pt = track.mapped_pt(&pkt.params)?;
                Some((pkt, pt, pkt.time.wrapping_add(ts_offset), vp8))
            });
        let Some((pkt, pt, time, vp8)) = found else {
            continue;
        };
        if let Some(contents) = sender.resend(mid, *pt, seq, time, pkt, vp8, outbox.buffer(), now) {
            outbox.send_on(path, contents);
            resent += 1;
        }
    }
    resent
}

/// An RTP header as the egress writes it: no CSRCs; the one header extension forwarded.
#[derive(Clone, Copy)]
struct Header {
    ssrc: u32,
    pt: u8,
    marker: bool,
    /// Extended: the bits above 16 are the rollover counter.
    seq: u64,
    time: u32,
    /// The publisher's abs-capture-time, with the id the viewer negotiated for it.
    capture: Option<(u8, AbsCaptureTime)>,
    /// playout-delay: id, min and max (10 ms units).
    playout: Option<(u8, u16, u16)>,
    /// The transport-wide sequence number, with its id.
    transport: Option<(u8, u16)>,
}

/// Header, `prefix` and payload of one packet, SRTP-protected, written into `buf` (its
/// contents replaced). The prefix is an RTX packet's original sequence number, or empty.
/// The payload's VP8 descriptor is rewritten by `vp8` in `buf`, before encryption: no
/// copy beyond the one every packet takes.
fn protect(
    mut buf: Vec<u8>,
    srtp: &SrtpSender,
    h: Header,
    prefix: &[u8],
    payload: &[u8],
    vp8: Option<vp8::Offsets>,
) -> Vec<u8> {
    buf.clear();
    buf.reserve(32 + prefix.len() + payload.len() + srtp.profile().rtp_overhead());
    let extended = h.capture.is_some() || h.playout.is_some() || h.transport.is_some();
    buf.push(if extended { 0x90 } else { 0x80 });
    buf.push(((h.marker as u8) << 7) | (h.pt & 0x7f));
    buf.extend_from_slice(&(h.seq as u16).to_be_bytes());
    buf.extend_from_slice(&h.time.to_be_bytes());
    buf.extend_from_slice(&h.ssrc.to_be_bytes());
    if extended {
        write_extensions(&mut buf, h.capture, h.playout, h.transport);
    }
    let header_len = buf.len();
    buf.extend_from_slice(prefix);
    buf.extend_from_slice(payload);
    if let Some(offsets) = vp8 {
        vp8::rewrite(&mut buf[header_len + prefix.len()..], offsets);
    }
    srtp.protect_rtp(&mut buf, header_len, (h.seq >> 16) as u32);
    buf
}

/// Appends a header extension block (RFC 8285) with the elements given: the one-byte form
/// when every id is 1-14, else the two-byte form.
/// - abs-capture-time: 8 bytes of NTP capture time, 16 with the clock offset
///   (<http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time>);
/// - playout-delay: 12 bits each of min and max, in 10 ms units
///   (<http://www.webrtc.org/experiments/rtp-hdrext/playout-delay>);
/// - transport-wide sequence number: 16 bits
///   (<http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01>).
fn write_extensions(
    buf: &mut Vec<u8>,
    capture: Option<(u8, AbsCaptureTime)>,
    playout: Option<(u8, u16, u16)>,
    transport: Option<(u8, u16)>,
) {
    let mut elements: [(u8, [u8; 16], usize); 3] = [(0, [0; 16], 0); 3];
    let mut n = 0;
    if let Some((id, t)) = capture {
        let mut value = [0u8; 16];
        value[..8].copy_from_slice(&ntp(t.capture_time).to_be_bytes());
        let len = match t.clock_offset {
            Some(offset) => {
                value[8..].copy_from_slice(&offset.to_be_bytes());
                16
            }
            None => 8,
        };
        elements[n] = (id, value, len);
        n += 1;
    }
    if let Some((id, min, max)) = playout {
        let (min, max) = (min.min(0xfff), max.min(0xfff));
        let mut value = [0u8; 16];
        value[0] = (min >> 4) as u8;
        value[1] = ((min << 4) as u8) | (max >> 8) as u8;
        value[2] = max as u8;
        elements[n] = (id, value, 3);
        n += 1;
    }
    if let Some((id, seq)) = transport {
        let mut value = [0u8; 16];
        value[..2].copy_from_slice(&seq.to_be_bytes());
        elements[n] = (id, value, 2);
        n += 1;
    }
    let elements = &elements[..n];
    let one_byte = elements.iter().all(|(id, _, _)| (1..=14).contains(id));
    let start = buf.len();
    if one_byte {
        buf.extend_from_slice(&[0xbe, 0xde, 0, 0]);
    } else {
        buf.extend_from_slice(&[0x10, 0x00, 0, 0]);
    }
    for (id, value, len) in elements {
        if one_byte {
            buf.push((id << 4) | (*len as u8 - 1));
        } else {
            buf.extend_from_slice(&[*id, *len as u8]);
        }
        buf.extend_from_slice(&value[..*len]);
    }
    while (buf.len() - start) % 4 != 0 {
        buf.push(0);
    }
    let words = ((buf.len() - start - 4) / 4) as u16;
    buf[start + 2..start + 4].copy_from_slice(&words.to_be_bytes());
}

/// RTCP by RFC 5761 §4: version 2 and a packet type of 192-223 in the second byte.
fn is_rtcp(d: &[u8]) -> bool {
    d.len() >= 8 && d[0] >> 6 == 2 && (192..=223).contains(&d[1])
}

/// One piece of a viewer's feedback about the gateway's media.
enum Item<'a> {
    /// A generic NACK (RFC 4585 §6.2.1: PT 205, FMT 1) and the sequence numbers it names.
    Nack { ssrc: u32, seqs: Vec<u16> },
    /// A PLI (PT 206, FMT 1) or FIR (PT 206, FMT 4, RFC 5104 §4.3.1).
    KeyframeRequest { ssrc: u32 },
    /// A report block about one of our SSRCs, in a receiver or sender report.
    Report { ssrc: u32, fraction: u8, lost: u64 },
    /// A receiver reference time block (RFC 3611 §4.4) in an extended report from `ssrc`:
    /// the middle 32 bits of its NTP timestamp.
    ReferenceTime { ssrc: u32, lrr: u32 },
    /// Transport-wide feedback (RTPFB, FMT 15): its FCI, after the two SSRCs.
    TransportFeedback(&'a [u8]),
}

/// Calls `f` for each piece of feedback in a compound RTCP packet. A malformed length ends
/// the walk.
fn for_each_feedback<'a>(mut rtcp: &'a [u8], mut f: impl FnMut(Item<'a>)) {
    let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    while rtcp.len() >= 4 {
        let words = u16::from_be_bytes([rtcp[2], rtcp[3]]) as usize;
        let len = (words + 1) * 4;
        if rtcp[0] >> 6 != 2 || len > rtcp.len() {
            return;
        }
        let (packet, rest) = rtcp.split_at(len);
        let count = (packet[0] & 0x1f) as usize;
        match packet[1] {
            // SR (after its 20 bytes of sender info) and RR: report blocks of 24 bytes.
            pt @ (200 | 201) => {
                let start = if pt == 200 { 28 } else { 8 };
                let blocks = packet.get(start..).unwrap_or_default();
                for b in blocks.chunks_exact(24).take(count) {
                    let lost = u32::from_be_bytes([0, b[5], b[6], b[7]]);
                    f(Item::Report {
                        ssrc: be32(&b[0..4]),
                        fraction: b[4],
                        lost: lost as u64,
                    });
                }
            }
            205 if count == 15 && packet.len() >= 20 => f(Item::TransportFeedback(&packet[12..])),
            205 if count == 1 && packet.len() >= 12 => {
                let mut seqs = Vec::new();
                for fci in packet[12..].chunks_exact(4) {
                    let pid = u16::from_be_bytes([fci[0], fci[1]]);
                    let blp = u16::from_be_bytes([fci[2], fci[3]]);
                    seqs.push(pid);
                    seqs.extend(
                        (0..16)
                            .filter(|b| blp & (1 << b) != 0)
                            .map(|b| pid.wrapping_add(b + 1)),
                    );
                }
                f(Item::Nack {
                    ssrc: be32(&packet[8..12]),
                    seqs,
                });
            }
            // XR (RFC 3611 §3): blocks of a type byte, a byte, and a length in words.
            207 if packet.len() >= 8 => {
                let ssrc = be32(&packet[4..8]);
                let mut blocks = &packet[8..];
                while blocks.len() >= 4 {
                    let len = 4 + 4 * u16::from_be_bytes([blocks[2], blocks[3]]) as usize;
                    let Some(block) = blocks.get(..len) else {
                        break;
                    };
                    if block[0] == 4 && len == 12 {
                        f(Item::ReferenceTime {
                            ssrc,
                            lrr: be32(&block[6..10]),
                        });
                    }
                    blocks = &blocks[len..];
                }
            }
            206 if count == 1 && packet.len() >= 12 => f(Item::KeyframeRequest {
                ssrc: be32(&packet[8..12]),
            }),
            // FIR names its SSRCs in its entries (RFC 5104 §4.3.1.1), not in the header.
            206 if count == 4 => {
                for entry in packet.get(12..).unwrap_or_default().chunks_exact(8) {
                    f(Item::KeyframeRequest {
                        ssrc: be32(&entry[0..4]),
                    });
                }
            }
            _ => {}
        }
        rtcp = rest;
    }
}

/// A sender report with no report blocks (RFC 3550 §6.4.1).
fn sender_report(ssrc: u32, ntp: u64, rtp_time: u32, packets: u32, octets: u32) -> Vec<u8> {
    let mut sr = Vec::with_capacity(28 + 32);
    sr.extend_from_slice(&[0x80, 200, 0, 6]);
    sr.extend_from_slice(&ssrc.to_be_bytes());
    sr.extend_from_slice(&ntp.to_be_bytes());
    sr.extend_from_slice(&rtp_time.to_be_bytes());
    sr.extend_from_slice(&packets.to_be_bytes());
    sr.extend_from_slice(&octets.to_be_bytes());
    sr
}

/// An extended report from `sender` with one DLRR block (RFC 3611 §4.5) for `receiver`:
/// its last reference time `lrr` and the delay since, in 1/65536 s.
fn extended_report_dlrr(sender: u32, receiver: u32, lrr: u32, dlrr: u32) -> [u8; 24] {
    let mut xr = [0; 24];
    xr[..4].copy_from_slice(&[0x80, 207, 0, 5]);
    xr[4..8].copy_from_slice(&sender.to_be_bytes());
    xr[8..12].copy_from_slice(&[5, 0, 0, 3]);
    xr[12..16].copy_from_slice(&receiver.to_be_bytes());
    xr[16..20].copy_from_slice(&lrr.to_be_bytes());
    xr[20..24].copy_from_slice(&dlrr.to_be_bytes());
    xr
}

/// A wallclock time as a 64-bit NTP timestamp (seconds since 1900 and a binary fraction).
fn ntp(t: SystemTime) -> u64 {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() + NTP_UNIX_OFFSET;
    let frac = ((d.subsec_nanos() as u64) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The walk's findings as text, to compare.
    fn walk(rtcp: &[u8]) -> Vec<String> {
        let mut got = Vec::new();
        for_each_feedback(rtcp, |item| {
            got.push(match item {
                Item::Nack { ssrc, seqs } => format!("nack {ssrc:x} {seqs:?}"),
                Item::KeyframeRequest { ssrc } => format!("key {ssrc:x}"),
                Item::Report {
                    ssrc,
                    fraction,
                    lost,
                } => format!("report {ssrc:x} {fraction} {lost}"),
                Item::ReferenceTime { ssrc, lrr } => format!("rrtr {ssrc:x} {lrr:x}"),
                Item::TransportFeedback(fci) => format!("twcc {fci:02x?}"),
            })
        });
        got
    }

    #[test]
    fn feedback_is_read_from_each_packet_of_a_compound() {
        // RR with one block (SSRC 0xabcd, fraction 64, 300 lost), a NACK for 65535 with bits
        // 0 and 2 of its mask set (so also 0 and 2), a PLI and a FIR naming 0xbeef.
        let mut rtcp = vec![0x81, 201, 0, 7, 0, 0, 0, 1, 0, 0, 0xab, 0xcd, 64, 0, 1, 44];
        rtcp.extend_from_slice(&[0; 16]);
        rtcp.extend_from_slice(&[0x81, 205, 0, 3, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef]);
        rtcp.extend_from_slice(&[0xff, 0xff, 0b0000_0000, 0b0000_0101]);
        rtcp.extend_from_slice(&[0x81, 206, 0, 2, 0, 0, 0, 1, 0, 0, 0xbe, 0xef]);
        rtcp.extend_from_slice(&[0x84, 206, 0, 4, 0, 0, 0, 1, 0, 0, 0, 0]);
        rtcp.extend_from_slice(&[0, 0, 0xbe, 0xef, 7, 0, 0, 0]);
        // Transport-wide feedback: base 5, one packet, reference 0, count 9, a run chunk,
        // one delta and a byte of padding.
        rtcp.extend_from_slice(&[0x8f, 205, 0, 5, 0, 0, 0, 1, 0, 0, 0xbe, 0xef]);
        rtcp.extend_from_slice(&[0, 5, 0, 1, 0, 0, 0, 9, 0x20, 0x01, 4, 0]);
        assert_eq!(
            walk(&rtcp),
            [
                "report abcd 64 300",
                "nack deadbeef [65535, 0, 2]",
                "key beef",
                "key beef",
                "twcc [00, 05, 00, 01, 00, 00, 00, 09, 20, 01, 04, 00]"
            ]
        );
    }

    #[test]
    fn a_reference_time_is_read_from_an_extended_report() {
        // XR from 0x1234: an unknown block of one word, then RRTR with NTP 0x0102030405060708.
        let mut rtcp = vec![0x80, 207, 0, 6, 0, 0, 0x12, 0x34];
        rtcp.extend_from_slice(&[9, 0, 0, 1, 0xff, 0xff, 0xff, 0xff]);
        rtcp.extend_from_slice(&[4, 0, 0, 2, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(walk(&rtcp), ["rrtr 1234 3040506"]);
        let xr = extended_report_dlrr(0xaaaa, 0x1234, 0x0304_0506, 65_536);
        assert_eq!(
            xr,
            [
                0x80, 207, 0, 5, 0, 0, 0xaa, 0xaa, 5, 0, 0, 3, 0, 0, 0x12, 0x34, 3, 4, 5, 6, 0, 1,
                0, 0
            ]
        );
    }

    #[test]
    fn a_length_past_the_end_ends_the_walk() {
        let rtcp = [0x81, 205, 0, 9, 0, 0, 0, 1, 0, 0, 0, 2, 0, 5, 0, 0];
        assert!(walk(&rtcp).is_empty());
    }

    #[test]
    fn header_extensions_take_the_one_byte_form_where_the_ids_allow() {
        let t = AbsCaptureTime {
            capture_time: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1),
            clock_offset: None,
        };
        let mut one = Vec::new();
        write_extensions(&mut one, Some((12, t)), Some((5, 0, 10)), Some((3, 0x1234)));
        // 0xBEDE, 4 words: capture (id 12, 8 bytes), playout (id 5, 3 bytes), transport-wide
        // sequence number (id 3, 2 bytes), no padding.
        assert_eq!(one[..4], [0xbe, 0xde, 0, 4]);
        assert_eq!(one[4], 12 << 4 | 7);
        assert_eq!(one[5..13], ntp(t.capture_time).to_be_bytes());
        assert_eq!(one[13..17], [5 << 4 | 2, 0x00, 0x00, 10]);
        assert_eq!(one[17..], [3 << 4 | 1, 0x12, 0x34]);
        let mut two = Vec::new();
        write_extensions(&mut two, Some((20, t)), None, None);
        // 0x1000, 3 words: id 20, length 8, the value, 2 of padding.
        assert_eq!(two[..6], [0x10, 0x00, 0, 3, 20, 8]);
        assert_eq!(two.len(), 16);
    }

    #[test]
    fn ntp_counts_from_1900_with_a_binary_fraction() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1500);
        assert_eq!(ntp(t), ((NTP_UNIX_OFFSET + 1) << 32) | (1 << 31));
    }
}
