//! What the gateway reads from SDP before str0m sees it: the shape of an offer (one audio and one
//! video track at most, direction, DTLS role, codecs) and trickle-ICE fragments (RFC 8840).
//!
//! str0m parses and negotiates the full SDP; this module only enforces the WHIP/WHEP rules that
//! str0m would otherwise answer with a partial or rejected m-line (RFC 9725 §4.4.3 says the POST
//! should fail instead).

use std::fmt;

use crate::session::Role;

/// Kind of an m-section the gateway can carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Audio,
    Video,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Audio => "audio",
            Kind::Video => "video",
        })
    }
}

/// SDP direction attribute of an m-section (RFC 8866 §6.7); absent means sendrecv.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

/// One m-section of an offer.
#[derive(Clone, Debug)]
pub struct Section {
    pub kind: Option<Kind>,
    pub media: String,
    pub mid: Option<String>,
    pub dir: Dir,
    /// Codec names from `a=rtpmap`, upper-cased (`H264`, `VP8`, `OPUS`, `RTX`, …).
    pub codecs: Vec<String>,
    /// Payload types with `a=fmtp` `packetization-mode=1` (RFC 6184 §8.1; absent means 0).
    pub mode1_pts: Vec<String>,
    /// Payload types that are H264.
    pub h264_pts: Vec<String>,
    /// `m=… 0 …` without `a=bundle-only`: a rejected or disabled section.
    pub port_zero: bool,
}

/// DTLS role offered with `a=setup` (RFC 8842).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setup {
    ActPass,
    Active,
    Passive,
    Missing,
}

/// The parts of an offer the gateway checks.
#[derive(Clone, Debug)]
pub struct Offer {
    pub sections: Vec<Section>,
    pub setup: Setup,
    /// The offer has a session-level `a=group:BUNDLE` (RFC 8843).
    pub bundled: bool,
}

/// Why an offer cannot be served; mapped to 400 or 422 by the HTTP layer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    #[error("the offer is not SDP: {0}")]
    Malformed(String),
    #[error("the offer has no audio or video m-section")]
    NoMedia,
    #[error(
        "the offer has more than one {0} track; WHIP/WHEP carry one audio and one video track"
    )]
    TooManyTracks(Kind),
    #[error("the offer has an m-section of type {0:?}, which this gateway does not carry")]
    UnsupportedSection(String),
    #[error("the {kind} track offers none of the codecs this gateway forwards ({supported})")]
    NoCommonCodec { kind: Kind, supported: String },
    #[error("the {kind} track offers none of the codecs the stream's publisher sends ({sent})")]
    NotPublished { kind: Kind, sent: String },
    #[error(
        "the video track offers H264 only in packetization-mode 0, but the publisher sends \
         mode 1 (RFC 6184): offer packetization-mode=1"
    )]
    H264Mode0,
    #[error("the {kind} track is {dir}, but a {endpoint} offer must be {expected}")]
    Direction {
        kind: Kind,
        dir: &'static str,
        endpoint: &'static str,
        expected: &'static str,
    },
    #[error("a=setup:passive asks the gateway to be the DTLS client; offer actpass (or active)")]
    PassiveSetup,
    #[error(
        "the offer has {0} m-sections but no a=group:BUNDLE; a session here has one transport, \
         so several m-sections must be bundled (RFC 9725 §4.4.1, RFC 8843)"
    )]
    Unbundled(usize),
    #[error(
        "the offer's only m-section has no a=mid (RFC 5888), which the gateway needs to answer it"
    )]
    NoMid,
}

/// Codecs the gateway forwards, by SDP name.
pub const VIDEO_CODECS: &[&str] = &["H264", "VP8", "VP9", "AV1"];
pub const AUDIO_CODECS: &[&str] = &["OPUS"];

impl Offer {
    /// Reads the lines the gateway needs; anything str0m cannot parse fails there as well.
    pub fn parse(sdp: &str) -> Result<Offer, OfferError> {
        let mut sections: Vec<Section> = Vec::new();
        let mut session_dir = Dir::SendRecv;
        let mut session_setup = Setup::Missing;
        let mut setup = Setup::Missing;
        let mut saw_version = false;
        let mut bundled = false;
        for raw in sdp.lines() {
            let line = raw.trim_end_matches('\r');
            if line.is_empty() {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(OfferError::Malformed(format!(
                    "line {line:?} is not <type>=<value>"
                )));
            };
            match key {
                "v" => saw_version = true,
                "m" => {
                    let mut parts = value.split_whitespace();
                    let media = parts.next().unwrap_or("").to_string();
                    let port = parts.next().unwrap_or("");
                    let kind = match media.as_str() {
                        "audio" => Some(Kind::Audio),
                        "video" => Some(Kind::Video),
                        _ => None,
                    };
                    sections.push(Section {
                        kind,
                        media,
                        mid: None,
                        dir: session_dir,
                        codecs: Vec::new(),
                        mode1_pts: Vec::new(),
                        h264_pts: Vec::new(),
                        port_zero: port == "0",
                    });
                }
                "a" => {
                    let (name, arg) = value.split_once(':').unwrap_or((value, ""));
                    let dir = match name {
                        "sendrecv" => Some(Dir::SendRecv),
                        "sendonly" => Some(Dir::SendOnly),
                        "recvonly" => Some(Dir::RecvOnly),
                        "inactive" => Some(Dir::Inactive),
                        _ => None,
                    };
                    let current = sections.last_mut();
                    match (name, dir, current) {
                        ("group", _, None) => {
                            bundled |= arg.split_whitespace().next() == Some("BUNDLE");
                        }
                        (_, Some(d), Some(s)) => s.dir = d,
                        (_, Some(d), None) => session_dir = d,
                        ("mid", _, Some(s)) => s.mid = Some(arg.trim().to_string()),
                        // RFC 8843 §6: port 0 with bundle-only is a live section that shares
                        // the bundle's transport (GStreamer's max-bundle offers), not a
                        // rejected one.
                        ("bundle-only", _, Some(s)) => s.port_zero = false,
                        ("rtpmap", _, Some(s)) => {
                            let mut words = arg.split_whitespace();
                            let pt = words.next().unwrap_or("");
                            let codec = words
                                .next()
                                .and_then(|enc| enc.split('/').next())
                                .unwrap_or("")
                                .to_ascii_uppercase();
                            if codec == "H264" {
                                s.h264_pts.push(pt.to_string());
                            }
                            s.codecs.push(codec);
                        }
                        ("fmtp", _, Some(s)) => {
                            let (pt, params) = arg.split_once(' ').unwrap_or((arg, ""));
                            let mode1 = params.split(';').filter_map(|kv| kv.split_once('=')).any(
                                |(k, v)| {
                                    k.trim().eq_ignore_ascii_case("packetization-mode")
                                        && v.trim() == "1"
                                },
                            );
                            if mode1 {
                                s.mode1_pts.push(pt.trim().to_string());
                            }
                        }
                        ("setup", _, cur) => {
                            let v = match arg.trim() {
                                "actpass" => Setup::ActPass,
                                "active" => Setup::Active,
                                "passive" => Setup::Passive,
                                other => {
                                    return Err(OfferError::Malformed(format!(
                                        "a=setup:{other} is not actpass, active or passive"
                                    )))
                                }
                            };
                            if cur.is_some() {
                                setup = v;
                            } else {
                                session_setup = v;
                            }
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        if !saw_version {
            return Err(OfferError::Malformed("no v= line".into()));
        }
        if setup == Setup::Missing {
            setup = session_setup;
        }
        Ok(Offer {
            sections,
            setup,
            bundled,
        })
    }

    /// Checks the rules of RFC 9725 §4.4 (and WHEP §4.5) that the gateway enforces.
    pub fn check(&self, role: Role) -> Result<(), OfferError> {
        let mut audio = 0;
        let mut video = 0;
        for s in self.sections.iter().filter(|s| !s.port_zero) {
            let Some(kind) = s.kind else {
                // A data channel section is harmless: str0m rejects it in the answer.
                if s.media == "application" {
                    continue;
                }
                return Err(OfferError::UnsupportedSection(s.media.clone()));
            };
            let (count, supported) = match kind {
                Kind::Audio => (&mut audio, AUDIO_CODECS),
                Kind::Video => (&mut video, VIDEO_CODECS),
            };
            *count += 1;
            if *count > 1 {
                return Err(OfferError::TooManyTracks(kind));
            }
            if !s.codecs.iter().any(|c| supported.contains(&c.as_str())) {
                return Err(OfferError::NoCommonCodec {
                    kind,
                    supported: supported.join(", "),
                });
            }
            let ok = match role {
                Role::Publish => matches!(s.dir, Dir::SendOnly | Dir::SendRecv),
                Role::Play => matches!(s.dir, Dir::RecvOnly | Dir::SendRecv),
            };
            if !ok {
                let (endpoint, expected) = match role {
                    Role::Publish => ("WHIP", "sendonly or sendrecv"),
                    Role::Play => ("WHEP", "recvonly or sendrecv"),
                };
                return Err(OfferError::Direction {
                    kind,
                    dir: dir_name(s.dir),
                    endpoint,
                    expected,
                });
            }
        }
        if audio + video == 0 {
            return Err(OfferError::NoMedia);
        }
        if !self.bundled {
            // One m-section needs no group (GStreamer's webrtcbin offers a single track so);
            // several unbundled ones would each need a transport of their own.
            let live = self.live().count();
            if live > 1 {
                return Err(OfferError::Unbundled(live));
            }
            if self.live().all(|s| s.mid.is_none()) {
                return Err(OfferError::NoMid);
            }
        }
        if self.setup == Setup::Passive {
            return Err(OfferError::PassiveSetup);
        }
        Ok(())
    }

    /// Video codec names the offer lists (upper-case), for matching against a live publisher.
    pub fn codecs(&self, kind: Kind) -> impl Iterator<Item = &str> {
        self.sections
            .iter()
            .filter(move |s| s.kind == Some(kind) && !s.port_zero)
            .flat_map(|s| s.codecs.iter().map(String::as_str))
    }

    /// Whether the live sections offer H264 in packetization mode 1 (FU-A and STAP-A), the mode
    /// every common encoder sends; a mode-0 receiver need not understand its packets.
    pub fn h264_mode1(&self) -> bool {
        self.sections
            .iter()
            .filter(|s| !s.port_zero)
            .any(|s| s.h264_pts.iter().any(|pt| s.mode1_pts.contains(pt)))
    }

    /// The m-sections that are not rejected (port 0 without `a=bundle-only`).
    fn live(&self) -> impl Iterator<Item = &Section> {
        self.sections.iter().filter(|s| !s.port_zero)
    }

    /// The offer as str0m takes it. str0m negotiates one BUNDLE transport and refuses an offer
    /// without a group ("Session attribute a=group missing"); an offer of one m-section
    /// without one gets a group of that section, which changes nothing on the wire: one
    /// m-section is one transport either way. The answer to it must not carry the group
    /// (see [`strip_bundle_group`]).
    pub fn for_str0m<'a>(&self, sdp: &'a str) -> std::borrow::Cow<'a, str> {
        if self.bundled {
            return std::borrow::Cow::Borrowed(sdp);
        }
        let Some(mid) = self.live().find_map(|s| s.mid.as_deref()) else {
            return std::borrow::Cow::Borrowed(sdp);
        };
        let mut out = String::with_capacity(sdp.len() + 24);
        let mut added = false;
        for line in sdp.split_inclusive('\n') {
            if !added && line.starts_with("m=") {
                out.push_str("a=group:BUNDLE ");
                out.push_str(mid);
                out.push_str("\r\n");
                added = true;
            }
            out.push_str(line);
        }
        std::borrow::Cow::Owned(out)
    }

    pub fn has(&self, kind: Kind) -> bool {
        self.sections
            .iter()
            .any(|s| s.kind == Some(kind) && !s.port_zero)
    }
}

/// The attribute's name, as SDP writes it.
pub fn dir_name(d: Dir) -> &'static str {
    match d {
        Dir::SendRecv => "sendrecv",
        Dir::SendOnly => "sendonly",
        Dir::RecvOnly => "recvonly",
        Dir::Inactive => "inactive",
    }
}

/// A trickle-ICE fragment (`application/trickle-ice-sdpfrag`, RFC 8840).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fragment {
    pub ufrag: Option<String>,
    pub pwd: Option<String>,
    /// Candidate attribute values, without the `a=` prefix (`candidate:…`).
    pub candidates: Vec<String>,
    pub end_of_candidates: bool,
}

impl Fragment {
    pub fn parse(text: &str) -> Result<Fragment, OfferError> {
        let mut frag = Fragment::default();
        for raw in text.lines() {
            let line = raw.trim_end_matches('\r').trim();
            if line.is_empty() {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(OfferError::Malformed(format!(
                    "line {line:?} is not <type>=<value>"
                )));
            };
            if key.len() != 1 {
                return Err(OfferError::Malformed(format!(
                    "line {line:?} is not <type>=<value>"
                )));
            }
            if key != "a" {
                continue;
            }
            if let Some(u) = value.strip_prefix("ice-ufrag:") {
                frag.ufrag = Some(u.trim().to_string());
            } else if let Some(p) = value.strip_prefix("ice-pwd:") {
                frag.pwd = Some(p.trim().to_string());
            } else if value.starts_with("candidate:") {
                frag.candidates.push(value.to_string());
            } else if value == "end-of-candidates" {
                frag.end_of_candidates = true;
            }
        }
        if frag.ufrag.is_some() != frag.pwd.is_some() {
            return Err(OfferError::Malformed(
                "a fragment with new ICE credentials needs both a=ice-ufrag and a=ice-pwd".into(),
            ));
        }
        if let (Some(ufrag), Some(pwd)) = (&frag.ufrag, &frag.pwd) {
            check_ice_credential("ice-ufrag", ufrag, 4)?;
            check_ice_credential("ice-pwd", pwd, 22)?;
        }
        Ok(frag)
    }
}

/// RFC 8839 §5.4: `ufrag = 4*256ice-char`, `password = 22*256ice-char`, `ice-char = ALPHA /
/// DIGIT / "+" / "/"`. Anything else is a malformed fragment (4xx), not a restart to attempt.
fn check_ice_credential(name: &str, value: &str, min: usize) -> Result<(), OfferError> {
    let ice_chars = value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    if ice_chars && (min..=256).contains(&value.len()) {
        Ok(())
    } else {
        Err(OfferError::Malformed(format!(
            "a={name}:{value} must be {min} to 256 letters, digits, '+' or '/' (RFC 8839)"
        )))
    }
}

/// Rewrites an offer for an ICE restart: new remote credentials, the fragment's candidates in
/// place of the old ones. str0m treats changed credentials in a re-offer as a restart.
pub fn restart_offer(original: &str, frag: &Fragment) -> String {
    let (Some(ufrag), Some(pwd)) = (&frag.ufrag, &frag.pwd) else {
        return original.to_string();
    };
    let mut out = String::with_capacity(original.len() + 256);
    let mut in_first_media = false;
    let mut seen_media = 0;
    for raw in original.lines() {
        let line = raw.trim_end_matches('\r');
        if line.starts_with("m=") {
            if in_first_media {
                // Candidates go into the first (bundle-tagged) m-section only.
                for c in &frag.candidates {
                    out.push_str("a=");
                    out.push_str(c);
                    out.push_str("\r\n");
                }
            }
            seen_media += 1;
            in_first_media = seen_media == 1;
        }
        if line.starts_with("a=ice-ufrag:") {
            out.push_str(&format!("a=ice-ufrag:{ufrag}\r\n"));
        } else if line.starts_with("a=ice-pwd:") {
            out.push_str(&format!("a=ice-pwd:{pwd}\r\n"));
        } else if line.starts_with("a=candidate:") || line == "a=end-of-candidates" {
            continue;
        } else {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    if in_first_media {
        for c in &frag.candidates {
            out.push_str("a=");
            out.push_str(c);
            out.push_str("\r\n");
        }
    }
    out
}

/// An answer without its `a=group:BUNDLE` lines, for an offer that had none: RFC 8843 §7.3
/// lets an answer put an m-section in a BUNDLE group only if the offer asked for it there.
pub fn strip_bundle_group(answer: &str) -> String {
    answer
        .split_inclusive('\n')
        .filter(|l| !l.starts_with("a=group:BUNDLE"))
        .collect()
}

/// Opus as RFC 7587 §7 writes it: `opus/48000/2`. Some peers (GStreamer's `whepsrc` with its
/// default caps) leave out the channel count, which str0m then cannot match; the meaning is not
/// in doubt, so the offer is completed rather than refused.
pub fn complete_opus_rtpmap(sdp: &str) -> std::borrow::Cow<'_, str> {
    let needs = |l: &str| {
        l.strip_prefix("a=rtpmap:")
            .and_then(|rest| rest.split_whitespace().nth(1))
            .is_some_and(|enc| enc.eq_ignore_ascii_case("opus/48000"))
    };
    if !sdp.lines().any(|l| needs(l.trim_end_matches('\r'))) {
        return std::borrow::Cow::Borrowed(sdp);
    }
    let mut out = String::with_capacity(sdp.len() + 8);
    for line in sdp.split_inclusive('\n') {
        let body = line.trim_end_matches(['\r', '\n']);
        if needs(body) {
            out.push_str(body);
            out.push_str("/2");
            out.push_str(&line[body.len()..]);
        } else {
            out.push_str(line);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n\
        a=ice-ufrag:abcd\r\na=ice-pwd:0123456789012345678901\r\na=setup:actpass\r\n\
        a=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\na=candidate:1 1 udp 2130706431 10.0.0.1 5000 typ host\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\na=sendonly\r\na=setup:actpass\r\na=rtpmap:111 opus/48000/2\r\n";

    #[test]
    fn reads_sections_codecs_and_setup() {
        let o = Offer::parse(OFFER).expect("parse");
        assert_eq!(o.sections.len(), 2);
        assert_eq!(o.sections[0].codecs, vec!["VP8", "RTX"]);
        assert_eq!(o.sections[1].mid.as_deref(), Some("1"));
        assert_eq!(o.setup, Setup::ActPass);
        assert_eq!(o.check(Role::Publish), Ok(()));
        assert!(matches!(
            o.check(Role::Play),
            Err(OfferError::Direction { .. })
        ));
    }

    #[test]
    fn two_video_tracks_are_refused() {
        let two = OFFER
            .replace(
                "m=audio 9 UDP/TLS/RTP/SAVPF 111",
                "m=video 9 UDP/TLS/RTP/SAVPF 96",
            )
            .replace("opus/48000/2", "VP8/90000");
        let o = Offer::parse(&two).expect("parse");
        assert_eq!(
            o.check(Role::Publish),
            Err(OfferError::TooManyTracks(Kind::Video))
        );
    }

    #[test]
    fn unknown_codec_and_passive_setup_are_refused() {
        let h265 = OFFER.replace("VP8/90000", "H265/90000");
        assert!(matches!(
            Offer::parse(&h265).expect("parse").check(Role::Publish),
            Err(OfferError::NoCommonCodec {
                kind: Kind::Video,
                ..
            })
        ));
        let passive = OFFER.replace("a=setup:actpass", "a=setup:passive");
        assert_eq!(
            Offer::parse(&passive).expect("parse").check(Role::Publish),
            Err(OfferError::PassiveSetup)
        );
    }

    #[test]
    fn one_m_section_without_group_gets_one_for_str0m_and_several_are_refused() {
        let video_only = OFFER
            .replace("a=group:BUNDLE 0 1\r\n", "")
            .split("m=audio")
            .next()
            .expect("video part")
            .to_string();
        let o = Offer::parse(&video_only).expect("parse");
        assert!(!o.bundled);
        assert_eq!(o.check(Role::Publish), Ok(()));
        let grouped = o.for_str0m(&video_only);
        assert_eq!(
            grouped,
            video_only.replacen("m=video", "a=group:BUNDLE 0\r\nm=video", 1),
            "the group goes at the end of the session part, nothing else changes"
        );
        assert!(Offer::parse(&grouped).expect("parse").bundled);
        assert!(matches!(
            Offer::parse(OFFER).expect("parse").for_str0m(OFFER),
            std::borrow::Cow::Borrowed(_)
        ));

        let both = OFFER.replace("a=group:BUNDLE 0 1\r\n", "");
        let o = Offer::parse(&both).expect("parse");
        assert_eq!(o.check(Role::Publish), Err(OfferError::Unbundled(2)));
        // A rejected second section (port 0, not bundle-only) leaves one to serve.
        let rejected = both.replace("m=audio 9 ", "m=audio 0 ");
        let o = Offer::parse(&rejected).expect("parse");
        assert_eq!(o.check(Role::Publish), Ok(()));
        assert!(o
            .for_str0m(&rejected)
            .contains("a=group:BUNDLE 0\r\nm=video"));

        let no_mid = video_only.replace("a=mid:0\r\n", "");
        let o = Offer::parse(&no_mid).expect("parse");
        assert_eq!(o.check(Role::Publish), Err(OfferError::NoMid));
    }

    #[test]
    fn the_group_leaves_an_answer_and_nothing_else_does() {
        let answer = "v=0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\na=msid-semantic: WMS x\r\n\
                      m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n";
        assert_eq!(
            strip_bundle_group(answer),
            answer.replace("a=group:BUNDLE 0\r\n", "")
        );
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(matches!(
            Offer::parse("hello world"),
            Err(OfferError::Malformed(_))
        ));
    }

    #[test]
    fn fragment_and_restart_offer() {
        let f = Fragment::parse(
            "a=ice-ufrag:new1\r\na=ice-pwd:pppppppppppppppppppppp\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\n\
             a=candidate:2 1 udp 2130706431 10.0.0.2 6000 typ host\r\na=end-of-candidates\r\n",
        )
        .expect("frag");
        assert_eq!(f.ufrag.as_deref(), Some("new1"));
        assert_eq!(f.candidates.len(), 1);
        assert!(f.end_of_candidates);
        let o = restart_offer(OFFER, &f);
        assert!(o.contains("a=ice-ufrag:new1\r\n"));
        assert!(!o.contains("abcd"));
        assert!(o.contains("10.0.0.2 6000"));
        assert!(!o.contains("10.0.0.1 5000"));
        assert!(Fragment::parse("a=ice-ufrag:x\r\n").is_err());
    }

    #[test]
    fn fragment_credentials_follow_rfc8839() {
        let pwd = "a=ice-pwd:abcdefghijklmnopqrstu+/\r\n";
        assert!(Fragment::parse(&format!("a=ice-ufrag:ab+/\r\n{pwd}")).is_ok());
        assert!(Fragment::parse(&format!("a=ice-ufrag:abc\r\n{pwd}")).is_err());
        assert!(Fragment::parse(&format!("a=ice-ufrag:ab cd\r\n{pwd}")).is_err());
        assert!(Fragment::parse("a=ice-ufrag:abcd\r\na=ice-pwd:tooshort\r\n").is_err());
    }

    #[test]
    fn opus_without_channels_is_completed_and_nothing_else_changes() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\na=rtpmap:111 OPUS/48000\r\n\
                   a=rtpmap:0 PCMU/8000\r\n";
        let done = complete_opus_rtpmap(sdp);
        assert_eq!(
            done,
            "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\na=rtpmap:111 OPUS/48000/2\r\n\
             a=rtpmap:0 PCMU/8000\r\n"
        );
        let right = "v=0\nm=audio 9 UDP/TLS/RTP/SAVPF 111\na=rtpmap:111 opus/48000/2\n";
        assert!(matches!(
            complete_opus_rtpmap(right),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn h264_mode_1_is_read_from_fmtp_of_h264_payload_types() {
        let mode1 = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=rtpmap:96 H264/90000\r\n\
                     a=fmtp:96 profile-level-id=42e01f;packetization-mode=1\r\n\
                     a=rtpmap:97 VP8/90000\r\n";
        assert!(Offer::parse(mode1).expect("parses").h264_mode1());
        // Mode 1 on a payload type that is not H264 does not count; absent means mode 0.
        let mode0 = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=rtpmap:96 H264/90000\r\n\
                     a=rtpmap:97 VP8/90000\r\na=fmtp:97 packetization-mode=1\r\n";
        assert!(!Offer::parse(mode0).expect("parses").h264_mode1());
    }
}
