//! [`PeerCore`]: the `Rtc` of a test peer and everything done with it, without IO.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{
    Direction, Frequency, KeyframeRequestKind, MediaData, MediaKind, MediaTime, Mid, Pt, Rid,
    Simulcast, SimulcastLayer,
};
use str0m::net::{Protocol, Receive, TcpType, Transmit};
use str0m::rtp::{AbsCaptureTime, ExtensionValues, RawPacket, RtpHeader, RtpWrite};
use str0m::stats::{MediaEgressStats, MediaIngressStats};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};

use super::{
    kind_of, slot, vp8, LinkState, PeerError, PeerOptions, PeerStats, ReceivedFrame, RtcpLog,
    VideoCodec,
};
use crate::sdp::{restart_offer, Fragment};
use crate::session::Role;
use crate::stun::CheckCopies;

/// A publisher's resend buffer: str0m's default size and age.
const RTX_CACHE_PACKETS: usize = 2000;
const RTX_CACHE_AGE: std::time::Duration = std::time::Duration::from_secs(3);

/// First retransmission of an unanswered ICE check.
const STUN_INITIAL_RTO: std::time::Duration = std::time::Duration::from_millis(50);

/// The port of an active ICE-TCP candidate (RFC 6544 §4.5: it connects, it is not reached).
pub const TCP_ACTIVE_PORT: u16 = 9;

/// Timeout rounds a graceful close may take to drain RTCP BYE and DTLS close_notify.
const CLOSE_ROUNDS: usize = 10;

/// A WHIP publisher or WHEP viewer: a str0m `Rtc` in frame mode with full ICE and one host
/// candidate, driven by whoever owns it.
///
/// The owner hands in datagrams and timeouts with the time they happen at, and after every
/// call sends what [`PeerCore::transmits`] yields and calls [`PeerCore::handle_timeout`] by
/// [`PeerCore::timeout`]. Every method that changes the `Rtc` drains `poll_output` until
/// `Output::Timeout` before it returns, as str0m requires, so the owner never has to.
pub struct PeerCore {
    rtc: Rtc,
    role: Role,
    opts: PeerOptions,
    /// Mids of the [video, audio] tracks, once offered.
    mids: [Option<Mid>; 2],
    /// Payload type and clock of each kind's writes, looked up on the first write.
    write_params: [Option<(Pt, Frequency)>; 2],
    /// The offer (initial or ICE restart) waiting for its answer.
    pending: Option<SdpPendingOffer>,
    /// The answer the session runs on; an ICE restart rewrites it.
    answer_sdp: String,
    transmits: Vec<Transmit>,
    /// Copies of ICE checks until connected, as the gateway sends them (see [`CheckCopies`]).
    check_copies: CheckCopies<()>,
    timeout: Option<Instant>,
    state: LinkState,
    connected_at: Option<Instant>,
    frames: Vec<ReceivedFrame>,
    stats: PeerStats,
    rtcp_in: RtcpLog,
    rtcp_out: RtcpLog,
    egress: Vec<MediaEgressStats>,
    ingress: Vec<MediaIngressStats>,
    /// Viewer: a keyframe started its video since the last gap (it can decode).
    decodable: bool,
    /// Viewer: when it last asked for a keyframe itself, and whether it wants to now.
    last_keyframe_request: Option<Instant>,
    keyframe_wanted: bool,
    /// Publisher with [`PeerOptions::vp8_picture_ids`]: each layer's numbering.
    vp8_layers: Vec<vp8::Numbering>,
    /// Viewer: VP8 descriptors received, until their frame is complete.
    vp8_log: vp8::Log,
}

impl PeerCore {
    /// The `Rtc` configuration `opts` asks for: full ICE (the gateway is ICE-lite), exactly
    /// the offered codecs. An owner may add to it (a shared DTLS certificate) before
    /// [`PeerCore::new`].
    pub fn rtc_config(opts: &PeerOptions) -> RtcConfig {
        let mut cfg = Rtc::builder()
            // Browsers retry lost DTLS flights long before RFC 6347's 1 s.
            .set_crypto_provider(crate::dtls::crypto_provider())
            .set_ice_lite(false)
            .set_stats_interval(opts.stats_interval)
            .enable_raw_packets(opts.raw_packets)
            .clear_codecs();
        if let Some(codec) = opts.video {
            cfg = PeerCore::with_video(cfg, codec);
        }
        if opts.audio {
            cfg = cfg.enable_opus(true, false);
        }
        if opts.abs_capture_time {
            cfg = cfg.set_extension(12, str0m::rtp::Extension::AbsoluteCaptureTime);
        }
        if opts.playout_delay {
            cfg = cfg.set_extension(5, str0m::rtp::Extension::PlayoutDelay);
        }
        // Browsers check a pair that has not answered every 48 ms or so (libwebrtc's weak
        // ping interval); str0m starts at 250 ms, doubling.
        cfg.set_initial_stun_rto(STUN_INITIAL_RTO);
        cfg
    }

    /// `cfg` taking `codec` as well: a viewer answering a counter-offer may accept more
    /// than it offered.
    pub fn with_video(cfg: RtcConfig, codec: VideoCodec) -> RtcConfig {
        match codec {
            VideoCodec::H264 => cfg.enable_h264(true),
            VideoCodec::Vp8 => cfg.enable_vp8(true),
            VideoCodec::Vp9 => cfg.enable_vp9(true),
            VideoCodec::Av1 => cfg.enable_av1(true),
        }
    }

    /// A peer on `config` (from [`PeerCore::rtc_config`] of `opts`); [`PeerCore::offer`] next.
    pub fn new(role: Role, opts: PeerOptions, config: RtcConfig, now: Instant) -> PeerCore {
        PeerCore {
            rtc: config.build(now),
            role,
            opts,
            mids: [None, None],
            write_params: [None, None],
            pending: None,
            answer_sdp: String::new(),
            transmits: Vec::new(),
            check_copies: CheckCopies::default(),
            timeout: None,
            state: LinkState::Connecting,
            connected_at: None,
            frames: Vec::new(),
            stats: PeerStats::default(),
            rtcp_in: RtcpLog::default(),
            rtcp_out: RtcpLog::default(),
            egress: Vec::new(),
            ingress: Vec::new(),
            decodable: false,
            last_keyframe_request: None,
            keyframe_wanted: false,
            vp8_layers: Vec::new(),
            vp8_log: vp8::Log::default(),
        }
    }

    /// Adds `local` as the only (host) candidate and the tracks of the options (sendonly for a
    /// publisher, recvonly for a viewer), and returns the SDP offer to POST.
    pub fn offer(&mut self, now: Instant, local: SocketAddr) -> Result<String, PeerError> {
        let candidate =
            Candidate::host(local, "udp").map_err(|e| PeerError::Candidate(e.to_string()))?;
        self.offer_with(now, candidate)
    }

    /// [`PeerCore::offer`] with one active ICE-TCP candidate on `ip` and no UDP one, as a
    /// client whose UDP is blocked offers (RFC 6544 §4.5: port 9, the client connects). Its
    /// datagrams then go as [`Transmit`]s of protocol TCP to the endpoint's passive candidate,
    /// and what comes back is handed in with [`PeerCore::handle_tcp_frame`].
    pub fn offer_tcp(&mut self, now: Instant, ip: std::net::IpAddr) -> Result<String, PeerError> {
        let candidate = Candidate::builder()
            .tcp()
            .host(SocketAddr::new(ip, TCP_ACTIVE_PORT))
            .tcptype(TcpType::Active)
            .build()
            .map_err(|e| PeerError::Candidate(e.to_string()))?;
        self.offer_with(now, candidate)
    }

    fn offer_with(&mut self, now: Instant, candidate: Candidate) -> Result<String, PeerError> {
        self.rtc.add_local_candidate(candidate);
        self.drain(now);
        let dir = match self.role {
            Role::Publish => Direction::SendOnly,
            Role::Play => Direction::RecvOnly,
        };
        // Drawn from fastrand, which the simulation seeds, so a replayed run offers the same.
        let stream_id = format!("wishcast-{:016x}", fastrand::u64(..));
        let mut api = self.rtc.sdp_api();
        let simulcast =
            (self.role == Role::Publish && !self.opts.simulcast.is_empty()).then(|| {
                let mut s = Simulcast::new();
                for rid in &self.opts.simulcast {
                    s.add_send_layer(SimulcastLayer::new(rid));
                }
                s
            });
        let video = self.opts.video.map(|_| {
            api.add_media(
                MediaKind::Video,
                dir,
                Some(stream_id.clone()),
                None,
                simulcast,
            )
        });
        let audio = self
            .opts
            .audio
            .then(|| api.add_media(MediaKind::Audio, dir, Some(stream_id.clone()), None, None));
        let applied = api.apply();
        self.drain(now);
        let (offer, pending) = applied.ok_or(PeerError::NoOffer)?;
        self.mids = [video, audio];
        self.pending = Some(pending);
        let offer = offer.to_sdp_string();
        Ok(if self.opts.dtls_active {
            offer.replace("a=setup:actpass", "a=setup:active")
        } else {
            offer
        })
    }

    /// A viewer's answer to the endpoint's counter-offer (a WHEP 406), on `local` as its only
    /// candidate (an active ICE-TCP one on its address if `tcp`); ICE and DTLS then run once
    /// the endpoint has it. With [`PeerOptions::dtls_active`] the answer takes the DTLS
    /// client role (`a=setup:active`); str0m would otherwise answer `passive`.
    pub fn answer(
        &mut self,
        now: Instant,
        local: SocketAddr,
        tcp: bool,
        offer_sdp: &str,
    ) -> Result<String, PeerError> {
        let candidate = if tcp {
            Candidate::builder()
                .tcp()
                .host(SocketAddr::new(local.ip(), TCP_ACTIVE_PORT))
                .tcptype(TcpType::Active)
                .build()
        } else {
            Candidate::host(local, "udp")
        };
        let candidate = candidate.map_err(|e| PeerError::Candidate(e.to_string()))?;
        self.rtc.add_local_candidate(candidate);
        self.drain(now);
        // str0m answers the inverse of the role it is offered.
        let given = if self.opts.dtls_active {
            offer_sdp.replace("a=setup:actpass", "a=setup:passive")
        } else {
            offer_sdp.to_string()
        };
        let offer =
            SdpOffer::from_sdp_string(&given).map_err(|e| PeerError::Answer(e.to_string()))?;
        let accepted = self.rtc.sdp_api().accept_offer(offer);
        self.drain(now);
        let answer = accepted?;
        if let Ok(shape) = crate::sdp::Offer::parse(offer_sdp) {
            for s in shape.sections.iter().filter(|s| !s.port_zero) {
                let slot = match s.kind {
                    Some(crate::sdp::Kind::Video) => 0,
                    Some(crate::sdp::Kind::Audio) => 1,
                    None => continue,
                };
                self.mids[slot] = s.mid.as_deref().map(Mid::from);
            }
        }
        self.answer_sdp = offer_sdp.to_string();
        Ok(answer.to_sdp_string())
    }

    /// Applies the endpoint's answer to the offer; ICE and DTLS then run.
    pub fn accept_answer(&mut self, now: Instant, answer_sdp: &str) -> Result<(), PeerError> {
        self.apply_answer(now, answer_sdp.to_string())
    }

    /// Starts an ICE restart: new local credentials, returned as the fragment to PATCH.
    pub fn begin_restart(&mut self, now: Instant) -> Result<Fragment, PeerError> {
        let mut api = self.rtc.sdp_api();
        let creds = api.ice_restart(true);
        let applied = api.apply();
        self.drain(now);
        let (offer, pending) = applied.ok_or(PeerError::NoOffer)?;
        self.pending = Some(pending);
        let candidates = offer
            .to_sdp_string()
            .lines()
            .filter_map(|l| l.trim_end().strip_prefix("a="))
            .filter(|l| l.starts_with("candidate:"))
            .map(str::to_string)
            .collect();
        Ok(Fragment {
            ufrag: Some(creds.ufrag),
            pwd: Some(creds.pass),
            candidates,
            end_of_candidates: true,
        })
    }

    /// Finishes an ICE restart with the endpoint's fragment: the answer the session runs on,
    /// with the new remote credentials and candidates, answers the pending restart offer.
    pub fn finish_restart(&mut self, now: Instant, remote: &Fragment) -> Result<(), PeerError> {
        if self.pending.is_none() {
            return Err(PeerError::NoPendingOffer);
        }
        let sdp = restart_offer(&self.answer_sdp, remote);
        self.apply_answer(now, sdp)
    }

    fn apply_answer(&mut self, now: Instant, sdp: String) -> Result<(), PeerError> {
        let pending = self.pending.take().ok_or(PeerError::NoPendingOffer)?;
        let answer =
            SdpAnswer::from_sdp_string(&sdp).map_err(|e| PeerError::Answer(e.to_string()))?;
        let accepted = self.rtc.sdp_api().accept_answer(pending, answer);
        self.drain(now);
        accepted?;
        self.answer_sdp = sdp;
        Ok(())
    }

    /// A datagram from `source` to the peer's `destination`. Returns false if it is nothing
    /// str0m reads (not STUN, DTLS, RTP or RTCP); such datagrams, and every datagram to a closed
    /// peer, are ignored. One str0m refuses is counted ([`PeerStats::input_errors`]), not fatal:
    /// a stray or damaged datagram must not end a session, as on the gateway.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) -> bool {
        self.receive(now, Protocol::Udp, source, destination, data)
    }

    /// One RFC 4571 frame from the ICE-TCP connection to `source`, for the active candidate
    /// at `destination` ([`PeerCore::offer_tcp`]); as [`PeerCore::handle_datagram`].
    pub fn handle_tcp_frame(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) -> bool {
        self.receive(now, Protocol::Tcp, source, destination, data)
    }

    fn receive(
        &mut self,
        now: Instant,
        proto: Protocol,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) -> bool {
        if self.is_closed() {
            return true;
        }
        let Ok(receive) = Receive::new(proto, source, destination, data) else {
            return false;
        };
        if let Err(e) = self.rtc.handle_input(Input::Receive(now, receive)) {
            tracing::debug!("peer datagram from {source} refused: {e}");
            self.stats.input_errors += 1;
        }
        self.drain(now);
        true
    }

    /// Time moved to `now` (at or after [`PeerCore::timeout`]); a failure ends the peer.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.is_closed() {
            return;
        }
        while let Some(c) = self.check_copies.pop_due(now) {
            self.transmits.push(Transmit {
                proto: Protocol::Udp,
                source: c.source,
                destination: c.destination,
                contents: c.contents.into(),
            });
        }
        if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
            self.end(format!("str0m: {e}"));
            return;
        }
        self.drain(now);
    }

    /// Publisher: writes one encoded frame of `kind`; str0m packetizes it. `rtp_time` is in
    /// the codec clock. Failures are also counted ([`PeerStats::write_errors`]).
    pub fn write(
        &mut self,
        now: Instant,
        kind: MediaKind,
        rtp_time: u64,
        data: impl Into<Arc<[u8]>>,
    ) -> Result<(), PeerError> {
        self.write_layer(now, kind, None, rtp_time, data)
    }

    /// [`PeerCore::write`] to one simulcast layer of the video track, by its rid
    /// ([`PeerOptions::simulcast`]); `None` for a track without layers.
    pub fn write_layer(
        &mut self,
        now: Instant,
        kind: MediaKind,
        rid: Option<&str>,
        rtp_time: u64,
        data: impl Into<Arc<[u8]>>,
    ) -> Result<(), PeerError> {
        let written = self.try_write(now, kind, rid, rtp_time, data.into());
        if written.is_err() {
            self.stats.write_errors += 1;
        }
        self.drain(now);
        written
    }

    fn try_write(
        &mut self,
        now: Instant,
        kind: MediaKind,
        rid: Option<&str>,
        rtp_time: u64,
        data: Arc<[u8]>,
    ) -> Result<(), PeerError> {
        if let LinkState::Closed(reason) = &self.state {
            return Err(PeerError::Closed(reason.clone()));
        }
        let mid = self.mids[slot(kind)].ok_or(PeerError::NoTrack(kind))?;
        // Before ICE + DTLS str0m would drop the frame without a word.
        if !self.rtc.is_connected() {
            return Err(PeerError::NotConnected);
        }
        let (pt, clock) = match self.write_params[slot(kind)] {
            Some(p) => p,
            None => {
                let writer = self.rtc.writer(mid).ok_or(PeerError::NoTrack(kind))?;
                // The answer may list several profiles; the first negotiated one is used.
                let params = writer
                    .payload_params()
                    .next()
                    .ok_or(PeerError::NoPayloadType(kind))?;
                let p = (params.pt(), params.spec().clock_rate);
                self.write_params[slot(kind)] = Some(p);
                // Resend whatever is NACKed, as browsers do: str0m's default caps resends
                // at 15 % of the bytes sent, which under heavy loss leaves losses unrepaired.
                let rids: Vec<Option<Rid>> = match kind {
                    MediaKind::Video if !self.opts.simulcast.is_empty() => self
                        .opts
                        .simulcast
                        .iter()
                        .map(|r| Some(Rid::from(r.as_str())))
                        .collect(),
                    _ => vec![None],
                };
                for rid in rids {
                    if let Some(tx) = self.rtc.direct_api().stream_tx_by_mid(mid, rid) {
                        tx.set_rtx_cache(RTX_CACHE_PACKETS, RTX_CACHE_AGE, None);
                    }
                }
                p
            }
        };
        if kind == MediaKind::Video
            && self.opts.vp8_picture_ids
            && self.opts.video == Some(VideoCodec::Vp8)
        {
            return self.write_vp8(now, mid, rid, pt, rtp_time, &data);
        }
        let mut writer = self.rtc.writer(mid).ok_or(PeerError::NoTrack(kind))?;
        if let Some(rid) = rid {
            writer = writer.rid(Rid::from(rid));
        }
        if self.opts.abs_capture_time && kind == MediaKind::Video {
            writer = writer.abs_capture_time(str0m::rtp::AbsCaptureTime {
                capture_time: super::capture_time(rtp_time),
                clock_offset: None,
            });
        }
        writer.write(pt, now, MediaTime::new(rtp_time, clock), data)?;
        Ok(())
    }

    /// A VP8 frame of layer `rid` as RTP packets with the whole payload descriptor
    /// ([`PeerOptions::vp8_picture_ids`]), written to the layer's stream directly.
    fn write_vp8(
        &mut self,
        now: Instant,
        mid: Mid,
        rid: Option<&str>,
        pt: Pt,
        rtp_time: u64,
        frame: &[u8],
    ) -> Result<(), PeerError> {
        let keyframe = super::media::is_keyframe(Codec::Vp8, frame);
        let layer = match self.vp8_layers.iter().position(|n| n.rid.as_deref() == rid) {
            Some(i) => i,
            None => {
                self.vp8_layers.push(vp8::Numbering::new(rid));
                self.vp8_layers.len() - 1
            }
        };
        let packets = self.vp8_layers[layer].packetize(frame, keyframe);
        let capture = self.opts.abs_capture_time.then(|| AbsCaptureTime {
            capture_time: super::capture_time(rtp_time),
            clock_offset: None,
        });
        let mut api = self.rtc.direct_api();
        let tx = api
            .stream_tx_by_mid(mid, rid.map(Rid::from))
            .ok_or(PeerError::NoTrack(MediaKind::Video))?;
        let last = packets.len().saturating_sub(1);
        for (i, (seq, payload)) in packets.into_iter().enumerate() {
            let ext_vals = ExtensionValues {
                abs_capture_time: capture.filter(|_| i == 0),
                ..Default::default()
            };
            let write = RtpWrite::new(pt, seq.into(), rtp_time as u32, now, payload)
                .marker(i == last)
                .ext_vals(ext_vals)
                .nackable(true);
            tx.write_rtp(write);
        }
        // The pacer learns of packets written directly at a timeout: then this layer's frame
        // leaves whole before the next layer's is written, as a frame written through str0m's
        // packetizer does.
        self.rtc.handle_input(Input::Timeout(now))?;
        Ok(())
    }

    /// Viewer: asks the sender for a keyframe (PLI or FIR) on the video track.
    pub fn request_keyframe(
        &mut self,
        now: Instant,
        kind: KeyframeRequestKind,
    ) -> Result<(), PeerError> {
        let mid = self.mids[0].ok_or(PeerError::NoTrack(MediaKind::Video))?;
        let requested = match self.rtc.writer(mid) {
            Some(mut writer) => writer.request_keyframe(None, kind).map_err(PeerError::from),
            None => Err(PeerError::NoTrack(MediaKind::Video)),
        };
        self.drain(now);
        requested
    }

    /// A decoder with nothing to decode asks for a keyframe, at most once per
    /// [`super::KEYFRAME_REQUEST_GAP`]; true if it did (a mutation: drain after it).
    fn request_keyframe_for_decoder(&mut self, now: Instant) -> bool {
        if self
            .last_keyframe_request
            .is_some_and(|t| now.saturating_duration_since(t) < super::KEYFRAME_REQUEST_GAP)
        {
            return false;
        }
        let Some(mid) = self.mids[0] else {
            return false;
        };
        let Some(mut writer) = self.rtc.writer(mid) else {
            return false;
        };
        if writer
            .request_keyframe(None, KeyframeRequestKind::Pli)
            .is_err()
        {
            return false;
        }
        self.last_keyframe_request = Some(now);
        true
    }

    /// Ends the session gracefully: RTCP BYE and DTLS close_notify go to
    /// [`PeerCore::transmits`], then the peer is closed.
    pub fn close(&mut self, now: Instant) {
        if self.is_closed() {
            return;
        }
        if let Err(e) = self.rtc.close() {
            self.end(format!("str0m: {e}"));
            return;
        }
        self.drain(now);
        for _ in 0..CLOSE_ROUNDS {
            if self.is_closed() {
                return;
            }
            self.handle_timeout(now);
        }
        self.end("closed".into());
    }

    /// Takes the peer out without a word to the remote (deleted, killed, failed): it handles
    /// nothing more and has no timeout. The first reason stays.
    pub fn end(&mut self, reason: String) {
        if !self.is_closed() {
            self.state = LinkState::Closed(reason);
            self.timeout = None;
        }
    }

    /// Datagrams to send, oldest first.
    pub fn transmits(&mut self) -> std::vec::Drain<'_, Transmit> {
        self.transmits.drain(..)
    }

    /// When [`PeerCore::handle_timeout`] is due next; `None` once closed.
    pub fn timeout(&self) -> Option<Instant> {
        if self.is_closed() {
            return None;
        }
        self.timeout
            .into_iter()
            .chain(self.check_copies.next())
            .min()
    }

    /// Polls str0m until it has nothing more than a timeout, handling its events.
    fn drain(&mut self, now: Instant) {
        if self.is_closed() {
            return;
        }
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.timeout = Some(t);
                    break;
                }
                Ok(Output::Transmit(t)) => {
                    if self.connected_at.is_none() && t.proto == Protocol::Udp {
                        let copies = &mut self.check_copies;
                        copies.schedule(now, (), t.source, t.destination, &t.contents);
                    }
                    self.transmits.push(t)
                }
                Ok(Output::Event(e)) => self.on_event(now, e),
                Err(e) => {
                    self.end(format!("str0m: {e}"));
                    return;
                }
            }
        }
        if !self.rtc.is_alive() {
            self.end("session closed".into());
            return;
        }
        if std::mem::take(&mut self.keyframe_wanted) && self.request_keyframe_for_decoder(now) {
            // The request is a mutation: drain again.
            self.drain(now);
        }
    }

    fn on_event(&mut self, now: Instant, event: Event) {
        match event {
            Event::Connected => {
                self.connected_at.get_or_insert(now);
                self.stats.connected_at.get_or_insert(now);
                self.state = LinkState::Connected;
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.state = LinkState::Disconnected;
            }
            // Recovery after a disconnect does not repeat Event::Connected.
            Event::IceConnectionStateChange(
                IceConnectionState::Connected | IceConnectionState::Completed,
            ) if self.state == LinkState::Disconnected && self.rtc.is_connected() => {
                self.state = LinkState::Connected;
            }
            Event::IceConnectionStateChange(
                IceConnectionState::Connected | IceConnectionState::Completed,
            ) => {
                self.stats.ice_connected_at.get_or_insert(now);
            }
            Event::MediaData(d) => self.on_media(now, d),
            Event::KeyframeRequest(_) => self.stats.keyframe_requests += 1,
            Event::RawPacket(p) => match *p {
                RawPacket::RtcpRx(r) => self.rtcp_in.record(now, &r),
                RawPacket::RtcpTx(r) => self.rtcp_out.record(now, &r),
                RawPacket::RtpRx(header, payload) => self.on_rtp(&header, &payload),
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

    /// A received RTP packet, decrypted: a VP8 one's descriptor is logged for its frame
    /// ([`ReceivedFrame::vp8`]).
    fn on_rtp(&mut self, header: &RtpHeader, payload: &[u8]) {
        if self.opts.video != Some(VideoCodec::Vp8) || !self.opts.record_frames {
            return;
        }
        let pt = header.payload_type;
        let vp8 = |p: &&str0m::format::PayloadParams| p.spec().codec == Codec::Vp8;
        let config = self.rtc.codec_config();
        let media = if config.params().iter().filter(vp8).any(|p| p.pt() == pt) {
            payload
        } else if config
            .params()
            .iter()
            .filter(vp8)
            .any(|p| p.resend() == Some(pt))
        {
            // RTX (RFC 4588 §4): the original sequence number, then the original payload.
            payload.get(2..).unwrap_or_default()
        } else {
            return;
        };
        self.vp8_log.packet(header.timestamp, media);
    }

    fn on_media(&mut self, now: Instant, d: MediaData) {
        let codec = d.params.spec().codec;
        let kind = kind_of(codec);
        match kind {
            MediaKind::Video => {
                self.stats.video_frames += 1;
                if !d.contiguous {
                    self.stats.discontinuities += 1;
                }
                // An H264 decoder starts only on an IDR with its SPS and PPS before it.
                let starts = d.is_keyframe()
                    && (codec != Codec::H264
                        || super::media::h264_nals(&d.data).any(|n| n.first() == Some(&0x67)));
                if starts {
                    self.decodable = true;
                } else if !d.contiguous {
                    self.decodable = false;
                }
                self.keyframe_wanted |= !self.decodable && self.opts.request_keyframes;
            }
            MediaKind::Audio => self.stats.audio_frames += 1,
        }
        self.stats.bytes_received += d.data.len() as u64;
        if self.opts.record_frames {
            self.frames.push(ReceivedFrame {
                at: now,
                kind,
                codec,
                mid: d.mid,
                rtp_time: d.time.numer(),
                contiguous: d.contiguous,
                keyframe: d.is_keyframe(),
                capture_time: d.ext_vals.abs_capture_time.map(|t| t.capture_time),
                playout_delay: d
                    .ext_vals
                    .play_delay_min
                    .zip(d.ext_vals.play_delay_max)
                    .map(|(a, b)| {
                        (
                            a.rebase(Frequency::MILLIS).numer(),
                            b.rebase(Frequency::MILLIS).numer(),
                        )
                    }),
                vp8: if codec == Codec::Vp8 {
                    self.vp8_log.frame(d.time.numer() as u32)
                } else {
                    Vec::new()
                },
                data: d.data,
            });
        }
    }

    // ---- inspection ---------------------------------------------------------------------------

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn options(&self) -> &PeerOptions {
        &self.opts
    }

    pub fn state(&self) -> &LinkState {
        &self.state
    }

    /// ICE and DTLS are up and ICE is not disconnected.
    pub fn is_connected(&self) -> bool {
        self.state == LinkState::Connected
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, LinkState::Closed(_))
    }

    /// When `Event::Connected` came (ICE + DTLS done), if it did.
    pub fn connected_at(&self) -> Option<Instant> {
        self.connected_at
    }

    /// The answer the session runs on (after an ICE restart, rewritten with its credentials).
    pub fn answer_sdp(&self) -> &str {
        &self.answer_sdp
    }

    /// The mid of the `kind` track, if the peer offered one.
    pub fn mid(&self, kind: MediaKind) -> Option<Mid> {
        self.mids[slot(kind)]
    }

    pub fn stats(&self) -> PeerStats {
        self.stats
    }

    /// Received frames kept so far (with [`PeerOptions::record_frames`]), in arrival order.
    pub fn frames(&self) -> &[ReceivedFrame] {
        &self.frames
    }

    /// Takes the frames kept so far, for an owner that hands them on.
    pub fn take_frames(&mut self) -> std::vec::Drain<'_, ReceivedFrame> {
        self.frames.drain(..)
    }

    /// Recorded video frames, in arrival order.
    pub fn received_video(&self) -> impl Iterator<Item = &ReceivedFrame> {
        self.frames.iter().filter(|f| f.kind == MediaKind::Video)
    }

    /// Recorded audio frames, in arrival order.
    pub fn received_audio(&self) -> impl Iterator<Item = &ReceivedFrame> {
        self.frames.iter().filter(|f| f.kind == MediaKind::Audio)
    }

    /// The m-line a received SSRC belongs to, once str0m has bound it.
    /// Publisher: the SSRC its video goes out on, of simulcast layer `rid` if it has layers.
    pub fn video_send_ssrc(&mut self, rid: Option<&str>) -> Option<u32> {
        let mid = self.mids[0]?;
        self.rtc
            .direct_api()
            .stream_tx_by_mid(mid, rid.map(Rid::from))
            .map(|tx| *tx.ssrc())
    }

    pub fn rx_mid(&mut self, ssrc: u32) -> Option<Mid> {
        self.rtc
            .direct_api()
            .stream_rx(&ssrc.into())
            .map(|rx| rx.mid())
    }

    /// RTCP feedback received, decrypted (needs [`PeerOptions::raw_packets`]).
    pub fn rtcp_in(&self) -> &RtcpLog {
        &self.rtcp_in
    }

    /// RTCP feedback sent, decrypted (needs [`PeerOptions::raw_packets`]).
    pub fn rtcp_out(&self) -> &RtcpLog {
        &self.rtcp_out
    }

    /// The latest egress statistics per mid (needs [`PeerOptions::stats_interval`]).
    pub fn egress(&self) -> &[MediaEgressStats] {
        &self.egress
    }

    /// The latest ingress statistics per mid (needs [`PeerOptions::stats_interval`]).
    pub fn ingress(&self) -> &[MediaIngressStats] {
        &self.ingress
    }

    /// The negotiated payload types: (pt, kind, whether it is RTX), for telling what an RTP
    /// header on the wire carries.
    pub fn payload_types(&self) -> Vec<(u8, MediaKind, bool)> {
        self.rtc
            .codec_config()
            .params()
            .iter()
            .flat_map(|p| {
                let kind = kind_of(p.spec().codec);
                let main = (*p.pt(), kind, false);
                let rtx = p.resend().map(|r| (*r, kind, true));
                std::iter::once(main).chain(rtx)
            })
            .collect()
    }
}
