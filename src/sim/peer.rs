//! A str0m peer on the simulated network: a publisher writing frames or a viewer recording
//! what it receives.

use super::*;

/// RTCP feedback a peer sent or received, decrypted (needs [`PeerOptions::raw_packets`]).
#[derive(Clone, Debug, Default)]
pub struct RtcpLog {
    /// Each NACK: when, the media SSRC, and the sequence numbers it asks for.
    pub nacks: Vec<(Instant, u32, Vec<u16>)>,
    pub plis: Vec<Instant>,
    pub firs: Vec<Instant>,
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
            Rtcp::Pli(_) => self.plis.push(now),
            Rtcp::Fir(_) => self.firs.push(now),
            _ => {}
        }
    }
}

/// How a peer is built.
#[derive(Clone, Debug)]
pub struct PeerOptions {
    /// The video codec offered (only this one), or no video track.
    pub video: Option<Codec>,
    /// Offer an Opus track.
    pub audio: bool,
    /// Keep every received frame in [`Peer::frames`] (counters are kept either way).
    pub record_frames: bool,
    /// Log decrypted RTCP feedback ([`Peer::rtcp_in`], [`Peer::rtcp_out`]); costs a copy per
    /// packet.
    pub raw_packets: bool,
    /// str0m statistics events every so often ([`Peer::egress`], [`Peer::ingress`]).
    pub stats_interval: Option<Duration>,
}

impl Default for PeerOptions {
    /// H264 + Opus, recording frames and RTCP.
    fn default() -> Self {
        PeerOptions {
            video: Some(Codec::H264),
            audio: true,
            record_frames: true,
            raw_packets: true,
            stats_interval: None,
        }
    }
}

impl PeerOptions {
    pub fn with_video(codec: Codec) -> PeerOptions {
        PeerOptions {
            video: Some(codec),
            ..PeerOptions::default()
        }
    }

    /// A cheap viewer for scale runs: counts frames, keeps none, logs no RTCP.
    pub fn sink(video: Codec) -> PeerOptions {
        PeerOptions {
            video: Some(video),
            audio: true,
            record_frames: false,
            raw_packets: false,
            stats_interval: None,
        }
    }
}

/// A frame a peer received (`Event::MediaData`).
#[derive(Clone, Debug)]
pub struct ReceivedFrame {
    pub at: Instant,
    pub kind: MediaKind,
    pub codec: Codec,
    pub rtp_time: u64,
    /// str0m saw no gap before this frame.
    pub contiguous: bool,
    pub data: Arc<[u8]>,
}

/// Why a simulated session could not be set up or used.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("str0m: {0}")]
    Rtc(#[from] str0m::RtcError),
    #[error("the peer produced no offer")]
    NoOffer,
    #[error("the gateway would refuse the offer: {0}")]
    Offer(#[from] OfferError),
    #[error("the hub refused the session: {0:?}")]
    Claim(ClaimError),
    #[error("the shard refused the session: {0}")]
    Session(#[from] SessionError),
    #[error("the shard did not reply to the command")]
    NoReply,
    #[error("the gateway's answer is not SDP: {0}")]
    Answer(String),
    #[error("invalid candidate: {0}")]
    Candidate(String),
    #[error("peer {0:?} has no {1:?} track")]
    NoTrack(PeerId, MediaKind),
    #[error("peer {0:?} is not connected")]
    NotConnected(PeerId),
    #[error("peer {0:?} has no negotiated payload type for {1:?}")]
    NoPayloadType(PeerId, MediaKind),
}

/// A str0m peer on the simulated network.
pub struct Peer {
    pub id: PeerId,
    pub role: Role,
    pub stream: Arc<str>,
    /// The gateway session serving it.
    pub session: SessionId,
    pub shard: usize,
    pub addr: SocketAddr,
    pub rtc: Rtc,
    pub video: Option<Mid>,
    pub audio: Option<Mid>,
    pub answer_sdp: String,
    /// The session's ETag, for `If-Match` on a PATCH.
    pub etag: String,
    /// When `Event::Connected` came (ICE + DTLS done).
    pub connected_at: Option<Instant>,
    /// ICE reported `Disconnected` at least once.
    pub ice_disconnected: bool,
    /// Received frames, if [`PeerOptions::record_frames`].
    pub frames: Vec<ReceivedFrame>,
    pub video_frames: u64,
    pub audio_frames: u64,
    /// Video frames str0m delivered with `contiguous == false` (a gap before them).
    pub discontinuities: u64,
    pub bytes_received: u64,
    /// `Event::KeyframeRequest`s (PLI/FIR from the gateway, coalesced by str0m per poll).
    pub keyframe_requests: u64,
    /// RTCP feedback received, decrypted (needs [`PeerOptions::raw_packets`]).
    pub rtcp_in: RtcpLog,
    /// RTCP feedback sent, decrypted (needs [`PeerOptions::raw_packets`]).
    pub rtcp_out: RtcpLog,
    /// Peer → gateway.
    pub up: LinkStats,
    /// Gateway → peer.
    pub down: LinkStats,
    /// The latest egress and ingress statistics per mid (needs [`PeerOptions::stats_interval`]).
    pub egress: Vec<MediaEgressStats>,
    pub ingress: Vec<MediaIngressStats>,
    /// The `Rtc` failed or the session was deleted: the peer no longer takes part.
    pub error: Option<String>,
    /// Datagrams the `Rtc` refused (`handle_input` errors), not fatal.
    pub input_errors: u64,
    pub feed: Option<Feed>,
    pub(super) opts: PeerOptions,
    /// Negotiated payload types: (pt, kind, is RTX).
    pub(super) pts: Vec<(u8, MediaKind, bool)>,
    /// Payload type and clock rate used to write each kind (video, audio).
    pub(super) write_params: [Option<(Pt, Frequency)>; 2],
    pub(super) next_timeout: Option<Instant>,
}

impl Peer {
    pub fn is_connected(&self) -> bool {
        self.connected_at.is_some() && self.error.is_none()
    }

    pub fn options(&self) -> &PeerOptions {
        &self.opts
    }

    /// Recorded video frames, in arrival order.
    pub fn received_video(&self) -> impl Iterator<Item = &ReceivedFrame> {
        self.frames.iter().filter(|f| f.kind == MediaKind::Video)
    }

    /// Recorded audio frames, in arrival order.
    pub fn received_audio(&self) -> impl Iterator<Item = &ReceivedFrame> {
        self.frames.iter().filter(|f| f.kind == MediaKind::Audio)
    }

    /// Drains the `Rtc` until its next timeout; transmits go to `out`.
    pub(super) fn drain(&mut self, now: Instant, out: &mut Vec<Outgoing>) -> Option<Instant> {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => return Some(t),
                Ok(Output::Transmit(t)) => out.push(Outgoing {
                    source: t.source,
                    destination: t.destination,
                    contents: t.contents.into(),
                }),
                Ok(Output::Event(e)) => self.on_event(now, e),
                Err(e) => {
                    self.error = Some(format!("poll_output: {e}"));
                    return None;
                }
            }
        }
    }

    pub(super) fn on_event(&mut self, now: Instant, event: Event) {
        match event {
            Event::Connected => {
                self.connected_at.get_or_insert(now);
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.ice_disconnected = true;
            }
            Event::MediaData(d) => {
                let codec = d.params.spec().codec;
                let kind = if codec.is_audio() {
                    MediaKind::Audio
                } else {
                    MediaKind::Video
                };
                match kind {
                    MediaKind::Video => {
                        self.video_frames += 1;
                        if !d.contiguous {
                            self.discontinuities += 1;
                        }
                    }
                    MediaKind::Audio => self.audio_frames += 1,
                }
                self.bytes_received += d.data.len() as u64;
                if self.opts.record_frames {
                    self.frames.push(ReceivedFrame {
                        at: now,
                        kind,
                        codec,
                        rtp_time: d.time.numer(),
                        contiguous: d.contiguous,
                        data: d.data,
                    });
                }
            }
            Event::KeyframeRequest(_) => {
                self.keyframe_requests += 1;
                if let Some(feed) = &mut self.feed {
                    if feed.honor_keyframe_requests {
                        feed.key_requested = true;
                    }
                }
            }
            Event::RawPacket(p) => match *p {
                RawPacket::RtcpRx(r) => self.rtcp_in.record(now, &r),
                RawPacket::RtcpTx(r) => self.rtcp_out.record(now, &r),
                _ => {}
            },
            Event::MediaEgressStats(s) => {
                self.egress.retain(|e| e.mid != s.mid);
                self.egress.push(s);
            }
            Event::MediaIngressStats(s) => {
                self.ingress.retain(|e| e.mid != s.mid);
                self.ingress.push(s);
            }
            _ => {}
        }
    }

    /// Writes one frame of `kind` (a mutation: the caller drains).
    pub(super) fn write(
        &mut self,
        now: Instant,
        kind: MediaKind,
        rtp_time: u64,
        data: Arc<[u8]>,
    ) -> Result<(), SimError> {
        let (slot, mid) = match kind {
            MediaKind::Video => (0, self.video),
            MediaKind::Audio => (1, self.audio),
        };
        let mid = mid.ok_or(SimError::NoTrack(self.id, kind))?;
        if !self.rtc.is_connected() {
            return Err(SimError::NotConnected(self.id));
        }
        let (pt, clock) = match self.write_params[slot] {
            Some(p) => p,
            None => {
                let writer = self
                    .rtc
                    .writer(mid)
                    .ok_or(SimError::NoTrack(self.id, kind))?;
                let params = writer
                    .payload_params()
                    .next()
                    .ok_or(SimError::NoPayloadType(self.id, kind))?;
                let p = (params.pt(), params.spec().clock_rate);
                self.write_params[slot] = Some(p);
                p
            }
        };
        let writer = self
            .rtc
            .writer(mid)
            .ok_or(SimError::NoTrack(self.id, kind))?;
        writer.write(pt, now, MediaTime::new(rtp_time, clock), data)?;
        Ok(())
    }

    pub(super) fn classify(&mut self, way: Way, data: &[u8]) -> Class {
        let Some(&b0) = data.first() else {
            return Class::Other;
        };
        match b0 {
            0..=3 => Class::Stun,
            20..=63 => Class::Dtls,
            128..=191 if data.len() >= 12 => {
                let b1 = data[1];
                if (192..=223).contains(&b1) {
                    return Class::Rtcp;
                }
                let pt = b1 & 0x7f;
                let ssrc = u32::from_be_bytes([data[8], data[9], data[10], data[11]]);
                let (kind, rtx) = self
                    .pts
                    .iter()
                    .find(|(p, _, _)| *p == pt)
                    .map(|(_, k, r)| (Some(*k), *r))
                    .unwrap_or((None, false));
                let link = match way {
                    Way::ToGateway => &mut self.up,
                    Way::FromGateway => &mut self.down,
                };
                let nth = match link.per_ssrc.iter_mut().find(|(s, _)| *s == ssrc) {
                    Some((_, n)) => {
                        *n += 1;
                        *n - 1
                    }
                    None => {
                        link.per_ssrc.push((ssrc, 1));
                        0
                    }
                };
                Class::Rtp(RtpInfo {
                    ssrc,
                    pt,
                    seq: u16::from_be_bytes([data[2], data[3]]),
                    timestamp: u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
                    marker: b1 & 0x80 != 0,
                    kind,
                    rtx,
                    nth,
                })
            }
            _ => Class::Other,
        }
    }
}
