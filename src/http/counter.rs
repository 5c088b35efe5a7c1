//! WHEP counter-offers (draft-ietf-wish-whep, "Server Sends Counter-Offer"): a player whose
//! offer names no codec the stream's publisher sends, in a form it takes, gets 406 with the
//! gateway's own offer of what is sent, and PATCHes its answer to the session resource.
//! Refusing it instead would turn away players that could decode the stream but did not
//! offer its codec, which the draft asks players to support answering.

use std::time::SystemTime;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::oneshot;

use super::{admit_error, ask, read_body, session_headers, ApiError, AppState, Registered, SDP};
use crate::config::Config;
use crate::sdp::OfferError;
use crate::session::SessionId;
use crate::shard::{Command, SessionError};
use crate::signalling;

/// Whether a PATCH carries an SDP answer (to a counter-offer) rather than a trickle-ICE
/// fragment.
pub(super) fn is_answer(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(SDP))
}

/// Answers a player whose offer was `refused` with the gateway's own: 406, `application/sdp`
/// with an explicit `valid-until`, and the headers of a 201 (`Location`, `ETag`, `Link`).
/// The session is registered like any viewer's and counted as one while it waits.
pub(super) async fn offer(
    app: &AppState,
    config: &Config,
    stream: &str,
    refused: OfferError,
) -> Result<Response, ApiError> {
    let id = SessionId::random();
    let retry = config.http.retry_after_secs;
    let admitted = signalling::admit_counter(&app.hub, config, id, stream, refused)
        .map_err(|e| admit_error(e, stream, retry))?;
    let registered = Registered {
        hub: &app.hub,
        id: Some(id),
    };
    // Taken before the shard starts its own clock for the offer, so the session never ends
    // before the time the player is told; an HTTP-date drops the fraction of a second too.
    let valid_until = SystemTime::now() + config.timeouts.counter_offer();
    let countered = ask(app, admitted.shard, admitted.command, admitted.reply).await?;
    registered.keep();
    let location = format!("/whep/{stream}/{id}");
    let mut res = (StatusCode::NOT_ACCEPTABLE, countered.offer).into_response();
    session_headers(&mut res, &location, &countered.etag, config);
    super::whep_links(&mut res, &location);
    // An HTTP-date has spaces and a comma: a quoted-string (RFC 9110 §5.6.6).
    let content_type = format!(
        "{SDP}; valid-until=\"{}\"",
        httpdate::fmt_http_date(valid_until)
    );
    if let Ok(v) = HeaderValue::from_str(&content_type) {
        res.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    Ok(res)
}

/// The player's answer to its counter-offer: 204 once the shard took it. Not SDP: 400; SDP
/// the gateway cannot serve: 422, and the offer keeps waiting for a better answer until its
/// valid-until; a session not waiting for an answer (never countered, or answered already):
/// 409.
pub(super) async fn answer(
    app: &AppState,
    shard: usize,
    id: SessionId,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(body, headers, app.config.get().http.max_body_bytes).await?;
    let answer_sdp =
        String::from_utf8(body).map_err(|_| SessionError::MalformedAnswer("not UTF-8".into()))?;
    let (tx, rx) = oneshot::channel();
    let cmd = Command::Answer {
        id,
        answer_sdp,
        reply: tx,
    };
    ask(app, shard, cmd, rx).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
