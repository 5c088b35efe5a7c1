//! The one place errors become HTTP: status, headers and an RFC 9457 problem+json body that says
//! what to fix.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::sdp::OfferError;
use crate::shard::SessionError;

/// Everything a signalling request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// `patch`: the request was a PATCH, whose accepted types go in `Accept-Patch`.
    #[error("Content-Type must be {expected}")]
    UnsupportedMediaType { expected: &'static str, patch: bool },
    #[error("the request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the request body could not be read: {0}")]
    Body(String),
    #[error("{0}")]
    Session(#[from] SessionError),
    #[error("stream {0:?} already has a live publisher")]
    PublisherExists(String),
    #[error("stream {0:?} has no publisher yet; retry later")]
    NoPublisher(String, u32),
    #[error("the gateway is at its session limit; retry later")]
    Full(u32),
    #[error("the media shards are too busy to take a new session; retry later")]
    Overloaded(u32),
    #[error("too many new sessions from this address; retry in {0} s")]
    TooManyRequests(u32),
    /// The request (its body, say) did not arrive in time; the seconds it had.
    #[error("the request did not complete within {0} s; send it at once")]
    RequestTimeout(f64),
    #[error("invalid stream name {0:?}: use 1-128 letters, digits, '-', '_' or '.'")]
    BadStreamName(String),
    #[error("no such session")]
    NotFound,
    /// Event types asked for that the session's event streams do not offer.
    #[error("unsupported event types: {}; the offered ones are active, inactive, layers, \
             reconnect and viewercount", .0.join(", "))]
    UnsupportedEvents(Vec<String>),
    /// An event-stream request body that is not a JSON array of names.
    #[error("the body must be a JSON array of event names: {0}")]
    BadEventList(String),
    /// The session has its maximum of event streams.
    #[error("this session already has {0} event streams; DELETE one first")]
    TooManyEventStreams(usize),
    #[error("no such event stream")]
    NoEventStream,
    /// A path no route serves.
    #[error("no such resource")]
    NoRoute,
    /// A path segment that is not valid percent-encoded UTF-8.
    #[error("the path cannot be read: {0}")]
    BadPath(String),
    /// `allow`: the methods the resource supports, sent in `Allow` (RFC 9110 §15.5.6).
    #[error("method not allowed; this resource supports {allow}")]
    MethodNotAllowed { allow: &'static str },
    /// No bearer token, or one no configured method accepts (RFC 6750 §3).
    #[error("{}", if *invalid_token {
        "the bearer token was not accepted (unknown, expired or not signed by a trusted key); \
         send a valid one in Authorization: Bearer <token>"
    } else {
        "this resource needs a bearer token: send Authorization: Bearer <token> \
         (OBS: the Bearer Token field of the WHIP service)"
    })]
    Unauthorized { invalid_token: bool },
    /// A valid token without the right; the string names the right.
    #[error("the bearer token does not grant {0}; use a token that does")]
    Forbidden(String),
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    title: &'a str,
    status: u16,
    detail: String,
}

impl ApiError {
    fn status(&self) -> StatusCode {
        use SessionError as S;
        match self {
            ApiError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Body(_) | ApiError::BadStreamName(_) => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedEvents(_) | ApiError::BadEventList(_) => StatusCode::BAD_REQUEST,
            ApiError::TooManyEventStreams(_) => StatusCode::CONFLICT,
            ApiError::NoEventStream => StatusCode::NOT_FOUND,
            ApiError::PublisherExists(_) | ApiError::NoPublisher(..) => StatusCode::CONFLICT,
            ApiError::Full(_) | ApiError::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::NotFound | ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::BadPath(_) => StatusCode::BAD_REQUEST,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Session(s) => match s {
                S::Offer(OfferError::Malformed(_)) => StatusCode::BAD_REQUEST,
                S::Offer(_) | S::Negotiation(_) | S::RestartFailed(_) => {
                    StatusCode::UNPROCESSABLE_ENTITY
                }
                S::NotFound => StatusCode::NOT_FOUND,
                S::PreconditionRequired => StatusCode::PRECONDITION_REQUIRED,
                S::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
                S::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                S::Layer(_) | S::MalformedAnswer(_) => StatusCode::BAD_REQUEST,
                S::UnacceptableAnswer(_) => StatusCode::UNPROCESSABLE_ENTITY,
                // The resource takes SDP answers, but not in its current state (RFC 9110
                // §15.5.10): the media type is right, so not 415.
                S::NotAwaitingAnswer | S::AwaitingAnswer => StatusCode::CONFLICT,
            },
        }
    }

    /// A stable identifier of the problem, as the `type` URI's last segment.
    fn slug(&self) -> &'static str {
        use SessionError as S;
        match self {
            ApiError::UnsupportedMediaType { .. } => "unsupported-media-type",
            ApiError::TooLarge { .. } => "body-too-large",
            ApiError::Body(_) => "unreadable-body",
            ApiError::BadStreamName(_) => "bad-stream-name",
            ApiError::UnsupportedEvents(_) => "unsupported-events",
            ApiError::BadEventList(_) => "bad-event-list",
            ApiError::TooManyEventStreams(_) => "event-stream-limit",
            ApiError::NoEventStream => "no-such-event-stream",
            ApiError::PublisherExists(_) => "publisher-exists",
            ApiError::NoPublisher(..) => "no-publisher",
            ApiError::Full(_) => "session-limit",
            ApiError::Overloaded(_) => "overloaded",
            ApiError::TooManyRequests(_) => "rate-limited",
            ApiError::RequestTimeout(_) => "request-timeout",
            ApiError::NotFound | ApiError::Session(S::NotFound) => "no-such-session",
            ApiError::NoRoute => "no-such-resource",
            ApiError::BadPath(_) => "bad-path",
            ApiError::MethodNotAllowed { .. } => "method-not-allowed",
            ApiError::Unauthorized {
                invalid_token: false,
            } => "token-required",
            ApiError::Unauthorized {
                invalid_token: true,
            } => "invalid-token",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::Session(S::Offer(OfferError::Malformed(_))) => "malformed-sdp",
            ApiError::Session(S::Offer(_)) | ApiError::Session(S::Negotiation(_)) => {
                "unsupported-offer"
            }
            ApiError::Session(S::RestartFailed(_)) => "ice-restart-failed",
            ApiError::Session(S::PreconditionRequired) => "if-match-required",
            ApiError::Session(S::PreconditionFailed) => "etag-mismatch",
            ApiError::Session(S::Unavailable) => "shard-unavailable",
            ApiError::Session(S::Layer(_)) => "bad-layer-selection",
            ApiError::Session(S::MalformedAnswer(_)) => "malformed-sdp",
            ApiError::Session(S::UnacceptableAnswer(_)) => "unsupported-answer",
            ApiError::Session(S::NotAwaitingAnswer) => "no-answer-expected",
            ApiError::Session(S::AwaitingAnswer) => "answer-expected",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let kind = format!("https://wishcast.dev/problems/{}", self.slug());
        let body = Problem {
            kind: &kind,
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: self.to_string(),
        };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let mut res = (status, json).into_response();
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match &self {
            ApiError::NoPublisher(_, secs)
            | ApiError::Full(secs)
            | ApiError::Overloaded(secs)
            | ApiError::TooManyRequests(secs) => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(*secs));
            }
            // RFC 5789 §3.1 names a PATCH's accepted types in Accept-Patch; a POST's go in
            // Accept-Post (RFC 9725 §4.2).
            ApiError::UnsupportedMediaType { expected, patch } => {
                let name = if *patch {
                    "accept-patch"
                } else {
                    "accept-post"
                };
                h.insert(name, HeaderValue::from_static(expected));
            }
            ApiError::MethodNotAllowed { allow } => {
                h.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            // RFC 6750 §3: the challenge, with the error code when a token was sent.
            ApiError::Unauthorized { invalid_token } => {
                let challenge = if *invalid_token {
                    "Bearer realm=\"wishcast\", error=\"invalid_token\""
                } else {
                    "Bearer realm=\"wishcast\""
                };
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(challenge),
                );
            }
            ApiError::Forbidden(_) => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(
                        "Bearer realm=\"wishcast\", error=\"insufficient_scope\"",
                    ),
                );
            }
            // A shard that does not answer is transient (restart, overload): retry soon.
            ApiError::Session(SessionError::Unavailable) => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(1u32));
            }
            _ => {}
        }
        res
    }
}
