//! Offer/answer: a new session's `Rtc` from its offer (RFC 9725 §4.2), and trickle and ICE
//! restart by PATCH (§4.3).

use str0m::rtp::Extension;

use super::*;
use str0m::format::{Codec, CodecConfig};
use str0m::media::{Direction, MediaKind};

/// Longest wait for the peer's first datagram before the gateway checks the offer's
/// candidates itself (see [`prepare_offer`]): about when the peer has the answer.
pub(super) const CANDIDATE_HOLD: Duration = Duration::from_millis(200);
/// First retransmission of an unanswered ICE check (see [`Engine::rtc_config`]).
const STUN_INITIAL_RTO: Duration = Duration::from_millis(50);
/// Longest wait between retransmissions of an ICE check, and the keepalive interval.
const STUN_MAX_RTO: Duration = Duration::from_secs(1);
/// The gateway's id for the abs-capture-time header extension: one str0m's standard map
/// leaves free.
const ABS_CAPTURE_TIME_ID: u8 = 12;
/// The same for playout-delay, which the egress writes when `media.playout_delay_max_ms` is set.
const PLAYOUT_DELAY_ID: u8 = 5;
/// str0m's report interval for viewers whose media the gateway sends itself: never, in
/// practice (ten years).
const NO_STR0M_REPORTS: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

impl Engine {
    pub(super) fn rtc_config(&self) -> RtcConfig {
        let mut cfg = Rtc::builder()
            .set_crypto_provider(self.crypto.clone())
            .set_rtp_mode(true)
            .set_ice_lite(self.config.media.ice_lite)
            .clear_codecs()
            .enable_h264(true)
            .enable_vp8(true)
            .enable_vp9(true)
            .enable_av1(true)
            .enable_opus(true, false)
            // Forwarded from publishers to viewers unchanged (see `MediaPacket::capture`).
            // The id is the gateway's for its own offers; answers take the offer's.
            .set_extension(ABS_CAPTURE_TIME_ID, Extension::AbsoluteCaptureTime)
            .set_extension(PLAYOUT_DELAY_ID, Extension::PlayoutDelay)
            .set_stats_interval(
                (self.config.media.stats_interval_secs > 0)
                    .then(|| Duration::from_secs(self.config.media.stats_interval_secs)),
            );
        if let Some(cert) = &self.dtls_cert {
            cfg = cfg.set_dtls_cert(cert.clone());
        }
        // The gateway is a full ICE agent: a viewer's nomination counts only once the
        // gateway's own check of that pair is answered, and no DTLS or media flows before.
        // str0m's 250 ms first retransmission, doubling to 3 s, put 0.25, 0.75 and 1.75 s
        // steps into time-to-first-frame under loss; browsers check an unanswered pair every
        // 48 ms or so. The ceiling is also str0m's keepalive interval on a working pair.
        cfg.set_initial_stun_rto(STUN_INITIAL_RTO);
        cfg.set_max_stun_rto(STUN_MAX_RTO);
        cfg
    }

    /// A new session's `Rtc` on `cfg` (the shard's [`Engine::rtc_config`], or a narrower one),
    /// with the gateway's host and ICE-TCP candidates: the same for a session created from
    /// the peer's offer and for one the gateway offers to.
    fn session_rtc(&self, now: Instant, role: Role, mut cfg: RtcConfig) -> Rtc {
        if role == Role::Play && self.config.media.direct_egress {
            // Sender reports come from the gateway's own egress (see `egress`): str0m's would
            // say RTP time 0 and no packets, having sent none.
            cfg = cfg
                .set_rtcp_report_interval_video(NO_STR0M_REPORTS)
                .set_rtcp_report_interval_audio(NO_STR0M_REPORTS);
        }
        let mut rtc = cfg.build(now);
        for addr in &self.candidates {
            match Candidate::host(*addr, "udp") {
                Ok(c) => {
                    rtc.add_local_candidate(c);
                }
                Err(e) => warn!(%addr, error = %e, "cannot announce host candidate"),
            }
        }
        // ICE-TCP (RFC 6544): the client connects, so the gateway's candidates are passive.
        for addr in &self.tcp_candidates {
            let c = Candidate::builder()
                .tcp()
                .host(*addr)
                .tcptype(TcpType::Passive)
                .build();
            match c {
                Ok(c) => {
                    rtc.add_local_candidate(c);
                }
                Err(e) => warn!(%addr, error = %e, "cannot announce TCP candidate"),
            }
        }
        rtc
    }

    /// Keeps a new session and registers its ufrag; returns its ETag.
    fn add_session(&mut self, now: Instant, n: NewRtcSession) -> String {
        let NewRtcSession {
            id,
            stream,
            role,
            span,
            mut rtc,
            remote_sdp,
            mids,
            held_candidates,
            awaiting,
        } = n;
        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        let tracks = match role {
            Role::Publish => Vec::new(),
            Role::Play => mids
                .iter()
                .map(|(mid, kind)| (*mid, TrackRewriter::new(*kind, self.rng.gen())))
                .collect(),
        };
        let session = Session {
            id,
            stream,
            role,
            span,
            rtc,
            offer_sdp: remote_sdp,
            etag: new_etag(&mut self.rng),
            ufrag: ufrag.clone(),
            addrs: Vec::new(),
            created: now,
            last_rx: now,
            connected: false,
            connected_at: None,
            next_timeout: None,
            ssrcs: Vec::new(),
            layer_rids: Vec::new(),
            layer_plis: Vec::new(),
            layer: Default::default(),
            estimate: Default::default(),
            mids,
            tracks,
            tx_ssrcs: Vec::new(),
            joined: false,
            backlog: std::collections::VecDeque::new(),
            first_video_sent: false,
            stats: SessionStats::default(),
            rate_sample: (now, 0, 0),
            ingress: Vec::new(),
            egress: Vec::new(),
            packets_written: 0,
            pli: super::keyframe::Limiter::default(),
            keyframe_after: None,
            lead_in: 0,
            video_started: None,
            restarted: false,
            keys_late: false,
            start_whole: false,
            held_candidates,
            peer_candidates: Vec::new(),
            over_tcp: false,
            srtp_keys: None,
            sender: None,
            media_path: None,
            selected_pair: None,
            path_heard: now,
            awaiting,
        };
        let etag = session.etag.clone();
        self.set_ufrag(id, None, ufrag);
        self.sessions.insert(id, Box::new(session));
        etag
    }

    pub(super) fn create(
        &mut self,
        now: Instant,
        c: NewSession,
        span: Span,
    ) -> Result<Created, SessionError> {
        let NewSession {
            id,
            stream,
            role,
            offer_sdp,
        } = c;
        let shape = Offer::parse(&offer_sdp)?;
        // Kept as str0m read it: an ICE restart re-offers it.
        let offer_sdp = shape.for_str0m(&offer_sdp).into_owned();
        let (given, held_candidates) = prepare_offer(&offer_sdp);
        let parsed = self
            .faults
            .isolate(Site::Offer, Some(id), || SdpOffer::from_sdp_string(&given));
        let offer = match parsed {
            Some(offer) => offer.map_err(|e| OfferError::Malformed(e.to_string()))?,
            None => return Err(self.stack_failed()),
        };
        let mut rtc = self.session_rtc(now, role, self.rtc_config());
        let accepted = self
            .faults
            .isolate(Site::Offer, Some(id), || rtc.sdp_api().accept_offer(offer));
        let answer = match accepted {
            Some(answer) => answer.map_err(|e| SessionError::Negotiation(e.to_string()))?,
            None => return Err(self.stack_failed()),
        };
        let mut answer_sdp = answer.to_sdp_string();
        if !shape.bundled {
            answer_sdp = strip_bundle_group(&answer_sdp);
        }
        check_answer(&shape, &answer_sdp)?;
        let mids: Vec<(Mid, Kind)> = shape
            .sections
            .iter()
            .filter(|s| !s.port_zero)
            .filter_map(|s| Some((Mid::from(s.mid.as_deref()?), s.kind?)))
            .collect();
        let etag = self.add_session(
            now,
            NewRtcSession {
                id,
                stream: stream.clone(),
                role,
                span,
                rtc,
                remote_sdp: offer_sdp,
                mids,
                held_candidates,
                awaiting: None,
            },
        );
        if role == Role::Publish {
            // The shards that already have viewers waiting subscribe through the hub; any that
            // subscribed since the session was registered have already.
            self.local_stream(&stream).publisher = Some(id);
            self.outbox.hub.push(HubUpdate::PublisherStarted {
                stream: stream.clone(),
                shard: self.index,
                publisher: id,
            });
        }
        self.drive(now, id);
        info!(shard = self.index, "session created");
        Ok(Created {
            answer: answer_sdp,
            etag,
        })
    }

    pub(super) fn patch(
        &mut self,
        now: Instant,
        id: SessionId,
        fragment: Fragment,
        if_match: Option<String>,
    ) -> Result<Patched, SessionError> {
        let session = self.sessions.get_mut(&id).ok_or(SessionError::NotFound)?;
        if session.awaiting.is_some() {
            // The session has no remote credentials or candidates to trickle to yet.
            return Err(SessionError::AwaitingAnswer);
        }
        let Some(tag) = if_match else {
            return Err(SessionError::PreconditionRequired);
        };
        // New credentials mean a restart (RFC 9725 §4.3.3); the current ones repeated in a
        // trickle fragment (as the RFC's own example does) are an ordinary trickle.
        let restart = fragment.ufrag.is_some()
            && fragment.ufrag.as_deref() != remote_ufrag(&session.offer_sdp);
        let tag = tag.trim();
        let matches = tag == "*" || tag.split(',').any(|t| t.trim() == session.etag);
        if !matches {
            return Err(SessionError::PreconditionFailed);
        }
        if !restart {
            for line in &fragment.candidates {
                // mDNS and unparseable candidates are dropped silently (RFC 9725 §4.3.2).
                if line.contains(".local ") {
                    continue;
                }
                let Some(s) = self.sessions.get_mut(&id) else {
                    return Err(SessionError::NotFound);
                };
                match add_candidate(&mut self.faults, id, s, line) {
                    Some(Ok(())) => self.drive(now, id),
                    Some(Err(e)) => debug!(error = %e, "ignored trickled candidate"),
                    None => {
                        self.remove(now, id, PANIC);
                        return Err(SessionError::RestartFailed(STACK_FAILED.into()));
                    }
                }
            }
            return Ok(Patched::Trickled);
        }
        let offer_sdp = restart_offer(&session.offer_sdp, &fragment);
        let rtc = &mut session.rtc;
        let accepted = self.faults.isolate(Site::Offer, Some(id), || {
            let offer = SdpOffer::from_sdp_string(&offer_sdp)?;
            rtc.sdp_api().accept_offer(offer)
        });
        let answer = match accepted {
            Some(Ok(a)) => a,
            Some(Err(e)) => {
                self.drive(now, id);
                return Err(SessionError::RestartFailed(e.to_string()));
            }
            None => {
                self.remove(now, id, PANIC);
                return Err(SessionError::RestartFailed(STACK_FAILED.into()));
            }
        };
        let Some(session) = self.sessions.get_mut(&id) else {
            return Err(SessionError::NotFound);
        };
        let creds = session.rtc.direct_api().local_ice_credentials();
        let old = std::mem::replace(&mut session.ufrag, creds.ufrag.clone());
        session.offer_sdp = offer_sdp;
        session.etag = new_etag(&mut self.rng);
        let etag = session.etag.clone();
        self.set_ufrag(id, Some(&old), creds.ufrag.clone());
        let fragment = answer_fragment(&answer, &creds, self.config.media.ice_lite);
        self.drive(now, id);
        info!("ICE restarted");
        Ok(Patched::Restarted { fragment, etag })
    }
}

/// What a counter-offer carries: the publisher's codecs, by SDP name.
pub(super) struct OfferedCodecs<'a> {
    pub(super) video: &'a [String],
    pub(super) audio: &'a [String],
    /// The publisher's H264 is in packetization mode 1.
    pub(super) h264_mode1: bool,
}

/// What a player is told when str0m refused its answer to the counter-offer.
const ANSWER_REFUSED: &str = "answer refused by the WebRTC stack";

impl Engine {
    /// A viewer whose offer the gateway cannot serve as it is: the gateway's own initial
    /// offer (JSEP, RFC 9429 §5.2.1), sendonly, with the codecs the publisher sends
    /// (`codecs`: video and audio SDP names) and the gateway's ICE credentials, fingerprint
    /// and candidates, as in an answer. The session keeps str0m's pending offer until the
    /// answer ([`Engine::answer`]) or `valid_for`.
    ///
    /// The offer says `a=setup:actpass` (JSEP): the player's answer picks the DTLS role, and
    /// the gateway's DTLS serves either (`crate::dtls`).
    pub(super) fn counter_offer(
        &mut self,
        now: Instant,
        id: SessionId,
        stream: Arc<str>,
        codecs: OfferedCodecs<'_>,
        valid_for: Duration,
        span: Span,
    ) -> Result<Countered, SessionError> {
        // Only what the publisher sends: the player's answer can then pick nothing the
        // gateway would have to transcode.
        let mut cfg = self.rtc_config().clear_codecs();
        let mut video = false;
        for codec in codecs.video {
            cfg = match codec.as_str() {
                "H264" => cfg.enable_h264(true),
                "VP8" => cfg.enable_vp8(true),
                "VP9" => cfg.enable_vp9(true),
                "AV1" => cfg.enable_av1(true),
                _ => continue,
            };
            video = true;
        }
        if codecs.h264_mode1 {
            // A player that took mode 0 could not read the publisher's FU-A and STAP-A.
            let kept: Vec<_> = cfg
                .codec_config()
                .params()
                .iter()
                .filter(|p| {
                    let spec = p.spec();
                    spec.codec != Codec::H264 || spec.format.packetization_mode == Some(1)
                })
                .cloned()
                .collect();
            *cfg.codec_config() = CodecConfig::new_from_payload_params(kept);
        }
        let audio = codecs.audio.iter().any(|c| c == "OPUS");
        if audio {
            cfg = cfg.enable_opus(true, false);
        }
        if !video && !audio {
            return Err(SessionError::Negotiation(
                "the stream's publisher sends no codec the gateway can offer".into(),
            ));
        }
        let mut rtc = self.session_rtc(now, Role::Play, cfg);
        let msid = stream.to_string();
        let applied = self.faults.isolate(Site::Offer, Some(id), || {
            let mut api = rtc.sdp_api();
            for (wanted, kind) in [(video, MediaKind::Video), (audio, MediaKind::Audio)] {
                if wanted {
                    api.add_media(kind, Direction::SendOnly, Some(msid.clone()), None, None);
                }
            }
            api.apply()
        });
        let (offer, pending) = match applied {
            Some(Some(applied)) => applied,
            Some(None) => {
                return Err(SessionError::Negotiation(
                    "the WebRTC stack made no offer".into(),
                ))
            }
            None => return Err(self.stack_failed()),
        };
        let offer_sdp = offer.to_sdp_string();
        let awaiting = AwaitingAnswer {
            pending,
            offer_sdp: offer_sdp.clone(),
            until: now + valid_for,
        };
        let etag = self.add_session(
            now,
            NewRtcSession {
                id,
                stream,
                role: Role::Play,
                span,
                rtc,
                remote_sdp: String::new(),
                mids: Vec::new(),
                held_candidates: Vec::new(),
                awaiting: Some(Box::new(awaiting)),
            },
        );
        self.drive(now, id);
        info!(shard = self.index, "counter-offer made");
        Ok(Countered {
            offer: offer_sdp,
            etag,
        })
    }

    /// The player's answer to its counter-offer. An answer the gateway refuses before str0m
    /// sees it (not SDP, not recvonly, no offered codec) leaves the offer waiting until its
    /// valid-until, so the player may send a better one; one str0m refuses ends the session,
    /// since its pending offer is spent.
    pub(super) fn answer(
        &mut self,
        now: Instant,
        id: SessionId,
        answer_sdp: &str,
    ) -> Result<(), SessionError> {
        let session = self.sessions.get_mut(&id).ok_or(SessionError::NotFound)?;
        let Some(awaiting) = &session.awaiting else {
            return Err(SessionError::NotAwaitingAnswer);
        };
        let malformed = |e: OfferError| match e {
            OfferError::Malformed(m) => SessionError::MalformedAnswer(m),
            e => SessionError::MalformedAnswer(e.to_string()),
        };
        let shape = Offer::parse(answer_sdp).map_err(malformed)?;
        let offered = Offer::parse(&awaiting.offer_sdp).map_err(malformed)?;
        let mids = check_counter_answer(&offered, &shape)?;
        // Its candidates are added after it, as an offer's are (see [`prepare_offer`]), so
        // their types name the media path; the peer has the gateway's already.
        let (given, held_candidates) = prepare_offer(answer_sdp);
        let parsed = self
            .faults
            .isolate(Site::Offer, Some(id), || SdpAnswer::from_sdp_string(&given));
        let answer = match parsed {
            Some(Ok(a)) => a,
            Some(Err(e)) => return Err(SessionError::MalformedAnswer(e.to_string())),
            None => {
                self.remove(now, id, PANIC);
                return Err(SessionError::Negotiation(STACK_FAILED.into()));
            }
        };
        let Some(session) = self.sessions.get_mut(&id) else {
            return Err(SessionError::NotFound);
        };
        let Some(awaiting) = session.awaiting.take() else {
            return Err(SessionError::NotAwaitingAnswer);
        };
        let rtc = &mut session.rtc;
        let accepted = self.faults.isolate(Site::Offer, Some(id), || {
            rtc.sdp_api().accept_answer(awaiting.pending, answer)
        });
        match accepted {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                self.remove(now, id, ANSWER_REFUSED);
                return Err(SessionError::UnacceptableAnswer(e.to_string()));
            }
            None => {
                self.remove(now, id, PANIC);
                return Err(SessionError::Negotiation(STACK_FAILED.into()));
            }
        }
        let Some(session) = self.sessions.get_mut(&id) else {
            return Err(SessionError::NotFound);
        };
        session.tracks = mids
            .iter()
            .map(|(mid, kind)| (*mid, TrackRewriter::new(*kind, self.rng.gen())))
            .collect();
        session.mids = mids;
        session.offer_sdp = given;
        session.held_candidates = held_candidates;
        session.created = now;
        session.last_rx = now;
        session.path_heard = now;
        self.release_candidates(now, id);
        self.drive(now, id);
        info!("counter-offer answered");
        Ok(())
    }
}

/// The tracks a player's answer to the gateway's counter-offer accepts, or why it cannot be
/// served: the same m-sections in the same order (RFC 3264 §6), each accepted one recvonly
/// (the WHEP draft's rule for players' answers) with a codec the gateway offered. A player
/// may reject some m-sections (port 0), not all.
fn check_counter_answer(offer: &Offer, answer: &Offer) -> Result<Vec<(Mid, Kind)>, SessionError> {
    let bad = |m: String| Err(SessionError::UnacceptableAnswer(m));
    if answer.sections.len() != offer.sections.len() {
        return bad(format!(
            "it has {} m-sections, the offer {}",
            answer.sections.len(),
            offer.sections.len()
        ));
    }
    let mut accepted = Vec::new();
    for (o, a) in offer.sections.iter().zip(&answer.sections) {
        let Some(kind) = o.kind else { continue };
        if a.kind != Some(kind) {
            return bad(format!(
                "an m-section is {:?} where the offer's is {kind}",
                a.media
            ));
        }
        if a.port_zero {
            continue;
        }
        if a.dir != crate::sdp::Dir::RecvOnly {
            return bad(format!(
                "the {kind} m-section is {}, but an answer to the gateway's sendonly offer \
                 must be recvonly",
                crate::sdp::dir_name(a.dir)
            ));
        }
        let offered: Vec<&str> = o
            .codecs
            .iter()
            .map(String::as_str)
            .filter(|c| *c != "RTX")
            .collect();
        if !a.codecs.iter().any(|c| offered.contains(&c.as_str())) {
            return bad(format!(
                "the {kind} m-section accepts none of the offered codecs ({})",
                offered.join(", ")
            ));
        }
        let Some(mid) = a.mid.as_deref().or(o.mid.as_deref()) else {
            return bad(format!("the {kind} m-section has no a=mid"));
        };
        accepted.push((Mid::from(mid), kind));
    }
    if accepted.is_empty() {
        return bad("it rejects every m-section, so there is nothing to play".into());
    }
    Ok(accepted)
}

/// What a client is told when str0m panicked on its offer or fragment.
const STACK_FAILED: &str = "the WebRTC stack failed on this request; the session ended";

impl Engine {
    /// A new session's offer made str0m panic: nothing was created, the panic is counted.
    fn stack_failed(&mut self) -> SessionError {
        self.counters.panics += 1;
        SessionError::Negotiation("the WebRTC stack failed on this offer".into())
    }
}

/// The remote ICE ufrag a session runs on, from the offer it was created (or restarted) with.
fn remote_ufrag(offer_sdp: &str) -> Option<&str> {
    offer_sdp
        .lines()
        .find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:"))
}

/// A strong entity-tag for an ICE session (RFC 9110 §8.8.3).
fn new_etag(rng: &mut StdRng) -> String {
    format!("\"{:016x}\"", rng.gen::<u64>())
}

/// RFC 9725 §4.4.3: no partially successful answers. str0m rejects an m-line it cannot serve
/// with port 0; the whole offer is refused instead.
fn check_answer(offer: &Offer, answer_sdp: &str) -> Result<(), SessionError> {
    let answer = Offer::parse(answer_sdp)?;
    for (o, a) in offer.sections.iter().zip(answer.sections.iter()) {
        if o.kind.is_some() && !o.port_zero && a.port_zero {
            let kind = o.kind.map(|k| k.to_string()).unwrap_or_default();
            return Err(SessionError::Negotiation(format!(
                "no codec of the {kind} track can be forwarded"
            )));
        }
    }
    Ok(())
}

/// The gateway's side of an ICE restart as an sdpfrag (RFC 8840): its new credentials and its
/// candidates, with the same ice-options and ice-lite as the answer (RFC 9725 §4.3.3).
fn answer_fragment(answer: &SdpAnswer, creds: &str0m::IceCreds, lite: bool) -> String {
    let sdp = answer.to_sdp_string();
    let mut out = String::new();
    if sdp.lines().any(|l| l.trim_end() == "a=ice-options:trickle") {
        out.push_str("a=ice-options:trickle\r\n");
    }
    if lite {
        out.push_str("a=ice-lite\r\n");
    }
    out.push_str(&format!(
        "a=ice-ufrag:{}\r\na=ice-pwd:{}\r\n",
        creds.ufrag, creds.pass
    ));
    let mut in_first = false;
    for line in sdp.lines().map(|l| l.trim_end_matches('\r')) {
        if line.starts_with("m=") {
            if in_first {
                break;
            }
            in_first = true;
            out.push_str(line);
            out.push_str("\r\n");
        } else if in_first && (line.starts_with("a=mid:") || line.starts_with("a=candidate:")) {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("a=end-of-candidates\r\n");
    out
}

/// The offer as str0m is given it, and the candidates held back from it.
///
/// The DTLS role: answering `a=setup:actpass`, str0m always picks passive (DTLS server), so
/// the peer's retransmission timers would drive the handshake and the gateway could only
/// react. RFC 5763 §5 recommends `active` for the answerer: the handshake starts as soon as
/// ICE connects and its flights follow this gateway's schedule for lossy paths
/// (`crate::dtls`), whoever the peer is. str0m answers the inverse of the offer's role, so an
/// `actpass` offer is handed to it as `passive`; the answer says `a=setup:active`.
///
/// The candidates: given at once, str0m checks them before the peer even has the answer.
/// Those checks go unanswered and str0m's backoff counts them, so the check that completes
/// the nomination later waits up to a second to be sent again when lost: under 20 % loss
/// that put 1.5 to 3 s into a viewer's first frame in one run of twenty. They are added when
/// the peer's first datagram arrives (its own first check has already taught str0m its
/// address, as a peer-reflexive candidate), or [`CANDIDATE_HOLD`] after the offer if none
/// has: a gateway behind NAT needs its own checks to open the way for the peer's.
fn prepare_offer(offer: &str) -> (String, Vec<String>) {
    let mut held = Vec::new();
    let mut out = String::with_capacity(offer.len());
    for line in offer.split_inclusive('\n') {
        let value = line.trim_end_matches(['\r', '\n']);
        if let Some(c) = value.strip_prefix("a=") {
            if c.starts_with("candidate:") {
                held.push(c.to_string());
                continue;
            }
        }
        if value == "a=setup:actpass" {
            out.push_str("a=setup:passive\r\n");
        } else {
            out.push_str(line);
        }
    }
    (out, held)
}

impl Engine {
    /// Hands a session the candidates its offer carried, once the peer has shown it has the
    /// answer (see [`prepare_offer`]).
    pub(super) fn release_candidates(&mut self, now: Instant, id: SessionId) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let held = std::mem::take(&mut s.held_candidates);
        for line in held {
            // mDNS and unparseable candidates are dropped, as trickled ones are.
            if line.contains(".local ") {
                continue;
            }
            let Some(s) = self.sessions.get_mut(&id) else {
                return;
            };
            match add_candidate(&mut self.faults, id, s, &line) {
                Some(Ok(())) => {}
                Some(Err(e)) => debug!(error = %e, "ignored offered candidate"),
                None => {
                    self.remove(now, id, PANIC);
                    return;
                }
            }
        }
    }
}

/// Hands session `id` the peer's candidate `line` (offered or trickled) and keeps its address,
/// transport and type, which name the path the peer's media comes by. `None` if str0m
/// panicked on it (the caller removes the session); an error if it is no candidate.
fn add_candidate(
    faults: &mut Faults,
    id: SessionId,
    s: &mut Session,
    line: &str,
) -> Option<Result<(), str0m::error::IceError>> {
    let rtc = &mut s.rtc;
    let added = faults.isolate(Site::Candidate, Some(id), || {
        Candidate::from_sdp_string(line).map(|c| {
            let kind = match c.kind() {
                CandidateKind::Host => "host",
                CandidateKind::PeerReflexive => "prflx",
                CandidateKind::ServerReflexive => "srflx",
                CandidateKind::Relayed => "relay",
            };
            let known = (c.addr(), c.proto() != Protocol::Udp, kind);
            rtc.add_remote_candidate(c);
            known
        })
    })?;
    Some(added.map(|known| s.peer_candidates.push(known)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\n\
        a=group:BUNDLE 0 1\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=mid:0\r\na=sendonly\r\n\
        a=rtpmap:96 H264/90000\r\na=rtpmap:97 rtx/90000\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\na=sendonly\r\n\
        a=rtpmap:111 opus/48000/2\r\n";

    fn check(answer: &str) -> Result<Vec<(Mid, Kind)>, SessionError> {
        let offer = Offer::parse(OFFER).expect("offer parses");
        check_counter_answer(&offer, &Offer::parse(answer).expect("answer parses"))
    }

    fn answer(video: &str, audio: &str) -> String {
        format!(
            "v=0\r\na=group:BUNDLE 0 1\r\n{video}m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\n\
             {audio}\r\na=rtpmap:111 opus/48000/2\r\n"
        )
    }

    const VIDEO: &str = "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=recvonly\r\n\
        a=rtpmap:96 H264/90000\r\n";

    #[test]
    fn a_recvonly_answer_with_an_offered_codec_is_taken() {
        let mids = check(&answer(VIDEO, "a=recvonly")).expect("taken");
        assert_eq!(
            mids,
            vec![(Mid::from("0"), Kind::Video), (Mid::from("1"), Kind::Audio)]
        );
    }

    #[test]
    fn a_rejected_m_section_is_left_out_but_not_every_one() {
        let rejected = "m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=recvonly\r\n\
            a=rtpmap:96 H264/90000\r\n";
        let mids = check(&answer(rejected, "a=recvonly")).expect("audio only");
        assert_eq!(mids, vec![(Mid::from("1"), Kind::Audio)]);
        let none = "v=0\r\nm=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n\
            m=audio 0 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\n";
        assert!(matches!(
            check(none),
            Err(SessionError::UnacceptableAnswer(_))
        ));
    }

    #[test]
    fn sendrecv_inactive_and_unoffered_codecs_are_refused() {
        for dir in ["a=sendrecv", "a=inactive", "a=sendonly"] {
            let r = check(&answer(VIDEO, dir));
            assert!(
                matches!(&r, Err(SessionError::UnacceptableAnswer(m)) if m.contains("recvonly")),
                "{dir}: {r:?}"
            );
        }
        let vp8 = VIDEO.replace("H264", "VP8");
        let r = check(&answer(&vp8, "a=recvonly"));
        assert!(
            matches!(&r, Err(SessionError::UnacceptableAnswer(m)) if m.contains("H264")),
            "{r:?}"
        );
        let one = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=recvonly\r\n";
        assert!(matches!(
            check(one),
            Err(SessionError::UnacceptableAnswer(_))
        ));
    }
}
