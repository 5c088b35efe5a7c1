//! Creating a session, step by step, the same for the HTTP handlers and the simulation: the
//! offer is completed and checked, the session registered in the hub (one publisher per
//! stream, least-loaded shard, limits), a viewer's codecs checked against the publisher's, and
//! the [`Command::Create`] for the chosen shard built. What comes after the shard's answer
//! ([`created`], [`abandoned`]) is here too, so neither caller can forget a step.

use std::sync::Arc;

use tokio::sync::oneshot;

use crate::config::Config;
use crate::hub::{ClaimError, Hub, PublisherEntry};
use crate::sdp::{Kind, Offer, OfferError};
use crate::session::{Role, SessionId};
use crate::shard::{Command, CounterOfferSession, Countered, CreateSession, Created, SessionError};

/// Why a new session was refused before it reached a shard.
#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    #[error(transparent)]
    Offer(#[from] OfferError),
    #[error("the hub refused the session: {0:?}")]
    Claim(ClaimError),
}

/// A registered session on its way to its shard.
pub struct Admitted {
    pub id: SessionId,
    pub shard: usize,
    /// The stream's name as the hub and the shards share it.
    pub stream: Arc<str>,
    /// What to send to the shard, and where its answer comes back.
    pub command: Command,
    pub reply: oneshot::Receiver<Result<Created, SessionError>>,
}

/// Checks `offer_sdp` for `role` on `stream` and registers session `id`.
pub fn admit(
    hub: &Hub,
    config: &Config,
    id: SessionId,
    role: Role,
    stream: &str,
    offer_sdp: &str,
) -> Result<Admitted, AdmitError> {
    let offer_sdp = crate::sdp::complete_opus_rtpmap(offer_sdp).into_owned();
    let offer = Offer::parse(&offer_sdp)?;
    offer.check(role)?;
    let placed = hub
        .register(id, stream, role, &config.limits, (Vec::new(), Vec::new()))
        .map_err(AdmitError::Claim)?;
    if role == Role::Play {
        if let Some(p) = &placed.publisher {
            if let Err(e) = check_viewer_codecs(&offer, p) {
                hub.unregister(id);
                return Err(e.into());
            }
        }
    }
    let (tx, reply) = oneshot::channel();
    let command = Command::Create(Box::new(CreateSession {
        id,
        stream: placed.stream.clone(),
        role,
        offer_sdp,
        reply: tx,
    }));
    Ok(Admitted {
        id,
        shard: placed.shard,
        stream: placed.stream,
        command,
        reply,
    })
}

/// Whether a viewer whose offer was refused with `e` gets the gateway's own offer instead (a
/// WHEP counter-offer): its offer names no codec the publisher sends in a form it takes, yet
/// the player may well decode one (a JSEP player answers with any codec it supports, and
/// the WHEP draft requires players to take counter-offers). Offers refused for their shape
/// (directions, several tracks of a kind, no BUNDLE, a=setup:passive) stay refused: a player
/// that sends such an offer is not one a counter-offer would fix.
pub fn counter_offerable(e: &OfferError) -> bool {
    matches!(
        e,
        OfferError::NotPublished { .. } | OfferError::H264Mode0 | OfferError::NoCommonCodec { .. }
    )
}

/// A viewer registered for a counter-offer, on its way to its shard.
pub struct AdmittedCounter {
    pub id: SessionId,
    pub shard: usize,
    pub stream: Arc<str>,
    pub command: Command,
    pub reply: oneshot::Receiver<Result<Countered, SessionError>>,
}

/// Registers viewer `id` of `stream`, whose offer was `refused` (see [`counter_offerable`]),
/// for the gateway's own offer of what the publisher sends. Without a publisher whose codecs
/// are known there is nothing to offer: the refusal stands.
pub fn admit_counter(
    hub: &Hub,
    config: &Config,
    id: SessionId,
    stream: &str,
    refused: OfferError,
) -> Result<AdmittedCounter, AdmitError> {
    let placed = match hub.register(id, stream, Role::Play, &config.limits, Default::default()) {
        Ok(p) => p,
        Err(ClaimError::NoPublisher) => return Err(refused.into()),
        Err(e) => return Err(AdmitError::Claim(e)),
    };
    let Some(p) = placed
        .publisher
        .filter(|p| !(p.video_codecs.is_empty() && p.audio_codecs.is_empty()))
    else {
        hub.unregister(id);
        return Err(refused.into());
    };
    let (tx, reply) = oneshot::channel();
    let command = Command::CounterOffer(Box::new(CounterOfferSession {
        id,
        stream: placed.stream.clone(),
        video_codecs: p.video_codecs,
        audio_codecs: p.audio_codecs,
        h264_mode1: p.h264_mode1,
        valid_for: config.timeouts.counter_offer(),
        reply: tx,
    }));
    Ok(AdmittedCounter {
        id,
        shard: placed.shard,
        stream: placed.stream,
        command,
        reply,
    })
}

/// The shard created the session: a publisher's negotiated codecs go to the hub, so viewers
/// that cannot decode them are refused.
pub fn created(hub: &Hub, role: Role, stream: &str, id: SessionId, created: &Created) {
    if role != Role::Publish {
        return;
    }
    if let Ok(answer) = Offer::parse(&created.answer) {
        let supported = |k: Kind| -> Vec<String> {
            answer
                .codecs(k)
                .filter(|c| *c != "RTX")
                .map(str::to_string)
                .collect()
        };
        hub.set_publisher_codecs(
            stream,
            id,
            supported(Kind::Video),
            supported(Kind::Audio),
            answer.h264_mode1(),
        );
    }
}

/// The shard did not create the session (or did not answer): the hub entry goes.
pub fn abandoned(hub: &Hub, id: SessionId) {
    hub.unregister(id);
}

/// A viewer must be able to decode what the live publisher sends.
fn check_viewer_codecs(offer: &Offer, publisher: &PublisherEntry) -> Result<(), OfferError> {
    let (video, audio) = (&publisher.video_codecs, &publisher.audio_codecs);
    for (kind, sent) in [(Kind::Video, video), (Kind::Audio, audio)] {
        if sent.is_empty() || !offer.has(kind) {
            continue;
        }
        let mut common = offer.codecs(kind).filter(|c| sent.iter().any(|s| s == c));
        let Some(first) = common.next() else {
            return Err(OfferError::NotPublished {
                kind,
                sent: sent.join(", "),
            });
        };
        // H264 is the only common codec, and this viewer could not take the mode it comes in.
        let only_h264 = first == "H264" && common.all(|c| c == "H264");
        if kind == Kind::Video && only_h264 && publisher.h264_mode1 && !offer.h264_mode1() {
            return Err(OfferError::H264Mode0);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_codec_refusals_are_countered() {
        let kind = Kind::Video;
        assert!(counter_offerable(&OfferError::NotPublished {
            kind,
            sent: "H264".into()
        }));
        assert!(counter_offerable(&OfferError::H264Mode0));
        assert!(counter_offerable(&OfferError::NoCommonCodec {
            kind,
            supported: "H264".into()
        }));
        for shape in [
            OfferError::Unbundled(2),
            OfferError::PassiveSetup,
            OfferError::TooManyTracks(kind),
            OfferError::NoMedia,
            OfferError::Malformed("x".into()),
        ] {
            assert!(!counter_offerable(&shape), "{shape:?}");
        }
    }
}
