//! Signalling over HTTP: WHIP (RFC 9725) and WHEP endpoints and their session resources.
//!
//! Handlers parse and check the request, register the session in the [`Hub`], hand the offer to
//! the chosen shard and await its answer. No media passes here.

pub mod api;
pub mod counter;
pub mod error;
pub mod events;
pub mod layer;
pub mod limits;
pub mod ops;
pub mod serve;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, on, MethodFilter};
use axum::Router;
use tokio::sync::oneshot;

use crate::config::Config;
use crate::hub::{ClaimError, Hub};
use crate::sdp::{Fragment, OfferError};
use crate::session::{Role, SessionId};
use crate::shard::io::ShardLink;
use crate::shard::{Command, Patched, SessionError};
use crate::signalling::{self, AdmitError};
use error::ApiError;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// Read once per request: a reload (SIGHUP) swaps it for the next ones.
    pub config: Arc<crate::live::Live<Config>>,
    pub hub: Arc<Hub>,
    pub shards: Arc<Vec<ShardLink>>,
}

/// How long a handler waits for a shard before answering 503.
const SHARD_REPLY: Duration = Duration::from_secs(10);

const SDP: &str = "application/sdp";
const SDPFRAG: &str = "application/trickle-ice-sdpfrag";

/// Methods of the endpoints and of the session resources, for `Allow` (on OPTIONS and 405).
const ENDPOINT_METHODS: &str = "GET, HEAD, POST, OPTIONS";
const SESSION_METHODS: &str = "GET, HEAD, PATCH, DELETE, OPTIONS";

pub fn router(state: AppState) -> Router {
    let endpoint_methods = MethodFilter::GET
        .or(MethodFilter::HEAD)
        .or(MethodFilter::POST)
        .or(MethodFilter::OPTIONS);
    let session_methods = MethodFilter::GET
        .or(MethodFilter::HEAD)
        .or(MethodFilter::PATCH)
        .or(MethodFilter::DELETE)
        .or(MethodFilter::OPTIONS);
    Router::new()
        .route("/api/streams", axum::routing::get(list_streams))
        .route("/whip/{stream}", on(endpoint_methods, whip_endpoint))
        .route("/whep/{stream}", on(endpoint_methods, whep_endpoint))
        .route("/whip/{stream}/{id}", on(session_methods, whip_session))
        .route("/whep/{stream}/{id}", on(session_methods, whep_session))
        .route(
            "/whep/{stream}/{id}/layer",
            on(
                MethodFilter::POST.or(MethodFilter::OPTIONS),
                layer::whep_layer,
            )
            .fallback(layer::method_not_allowed),
        )
        .route(
            "/whep/{stream}/{id}/sse",
            on(
                MethodFilter::POST.or(MethodFilter::OPTIONS),
                events::entry_point,
            ),
        )
        .route(
            "/whep/{stream}/{id}/sse/{event}",
            on(
                MethodFilter::GET
                    .or(MethodFilter::DELETE)
                    .or(MethodFilter::OPTIONS),
                events::event_stream,
            ),
        )
        .route("/whip/{stream}", any(endpoint_method_not_allowed))
        .route("/whep/{stream}", any(endpoint_method_not_allowed))
        .route("/whip/{stream}/{id}", any(session_method_not_allowed))
        .route("/whep/{stream}/{id}", any(session_method_not_allowed))
        .route(
            "/whep/{stream}/{id}/sse",
            any(events::entry_method_not_allowed),
        )
        .route(
            "/whep/{stream}/{id}/sse/{event}",
            any(events::stream_method_not_allowed),
        )
        .fallback(no_route)
        .with_state(state)
}

async fn no_route() -> ApiError {
    ApiError::NoRoute
}

/// The path's parameters, as axum's `Path` reads them, with a segment that is not valid
/// percent-encoded UTF-8 refused as problem+json like every other bad request.
pub struct Segments<T>(pub T);

impl<T, S> FromRequestParts<S> for Segments<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(t)| Segments(t))
            .map_err(|e| ApiError::BadPath(e.body_text()))
    }
}

async fn endpoint_method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed {
        allow: ENDPOINT_METHODS,
    }
}

async fn session_method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed {
        allow: SESSION_METHODS,
    }
}

/// CORS for browser players and publishers on other origins: every response may be read, and
/// the headers WHIP/WHEP clients need are exposed. The gateway applies it outermost, so API,
/// operations and auth refusals carry it too.
pub async fn cors(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(
            "Location, ETag, Link, Accept-Post, Accept-Patch, Allow, Retry-After, Content-Type, \
             WWW-Authenticate",
        ),
    );
    res
}

/// Answers 408 to a request not answered within `limit` of its headers: a body trickled in, or
/// never finished, cannot hold a handler. Over HTTP/1 the connection is closed as well, since
/// the rest of that body would still be on it; HTTP/2 and HTTP/3 end just the stream.
pub async fn request_timeout(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    let http1 = req.version() <= axum::http::Version::HTTP_11;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(res) => res,
        Err(_) => {
            let mut res = ApiError::RequestTimeout(limit.as_secs_f64()).into_response();
            if http1 {
                res.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            res
        }
    }
}

/// Releases a registered session's hub entry if its handler is dropped (by
/// [`request_timeout`], or a client gone) before the shard's answer was taken.
struct Registered<'a> {
    hub: &'a Hub,
    id: Option<SessionId>,
}

impl Registered<'_> {
    fn keep(mut self) {
        self.id = None;
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            signalling::abandoned(self.hub, id);
        }
    }
}

fn options_response(endpoint: bool) -> Response {
    if endpoint {
        preflight(ENDPOINT_METHODS, Some(("accept-post", SDP)))
    } else {
        preflight(SESSION_METHODS, Some(("accept-patch", SDPFRAG)))
    }
}

/// An OPTIONS answer (a CORS preflight, or a client asking): the resource's methods in
/// `Allow` and for CORS, and the header naming the body type its POST or PATCH takes.
pub(crate) fn preflight(
    allow: &'static str,
    accept: Option<(&'static str, &'static str)>,
) -> Response {
    let mut res = StatusCode::OK.into_response();
    let h = res.headers_mut();
    h.insert(header::ALLOW, HeaderValue::from_static(allow));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(allow),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type, If-Match"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    if let Some((name, value)) = accept {
        h.insert(name, HeaderValue::from_static(value));
    }
    res
}

async fn whip_endpoint(
    State(app): State<AppState>,
    Segments(stream): Segments<String>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    endpoint(app, Role::Publish, stream, method, headers, body).await
}

async fn whep_endpoint(
    State(app): State<AppState>,
    Segments(stream): Segments<String>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    endpoint(app, Role::Play, stream, method, headers, body).await
}

async fn whip_session(
    State(app): State<AppState>,
    Segments((stream, id)): Segments<(String, String)>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    session(app, Role::Publish, stream, id, method, headers, body).await
}

async fn whep_session(
    State(app): State<AppState>,
    Segments((stream, id)): Segments<(String, String)>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    session(app, Role::Play, stream, id, method, headers, body).await
}

fn check_stream_name(stream: &str) -> Result<(), ApiError> {
    if crate::session::is_stream_name(stream) {
        Ok(())
    } else {
        Err(ApiError::BadStreamName(stream.to_string()))
    }
}

async fn endpoint(
    app: AppState,
    role: Role,
    stream: String,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_stream_name(&stream)?;
    match method {
        Method::OPTIONS => return Ok(options_response(true)),
        // WHEP: HEAD says "this is a WHEP endpoint" (editor's copy §4.2).
        Method::HEAD if role == Role::Play => {
            return Ok(([(header::CONTENT_TYPE, SDP)], ()).into_response())
        }
        // RFC 9725 §4.1: the resources have no representation: 2xx, no content.
        Method::GET | Method::HEAD => return Ok(StatusCode::NO_CONTENT.into_response()),
        Method::POST => {}
        _ => {
            return Err(ApiError::MethodNotAllowed {
                allow: ENDPOINT_METHODS,
            })
        }
    }
    check_content_type(&headers, SDP)?;
    let config = app.config.get();
    let body = read_body(body, &headers, config.http.max_body_bytes).await?;
    let offer_sdp = String::from_utf8(body)
        .map_err(|_| SessionError::Offer(OfferError::Malformed("not UTF-8".into())))?;
    let id = SessionId::random();
    let retry = config.http.retry_after_secs;
    let admitted = match signalling::admit(&app.hub, &config, id, role, &stream, &offer_sdp) {
        // WHEP: an offer the gateway cannot serve as it is gets the gateway's own.
        Err(AdmitError::Offer(e)) if role == Role::Play && signalling::counter_offerable(&e) => {
            return counter::offer(&app, &config, &stream, e).await;
        }
        r => r.map_err(|e| admit_error(e, &stream, retry))?,
    };
    let registered = Registered {
        hub: &app.hub,
        id: Some(id),
    };
    // On an error the guard releases the hub entry.
    let created = ask(&app, admitted.shard, admitted.command, admitted.reply).await?;
    registered.keep();
    signalling::created(&app.hub, role, &stream, id, &created);
    if role == Role::Play {
        if let Some(mline) = events::video_mline(&created.answer) {
            app.hub.set_video_mline(id, mline);
        }
    }
    let prefix = if role == Role::Publish {
        "whip"
    } else {
        "whep"
    };
    let location = format!("/{prefix}/{stream}/{id}");
    let mut res = (StatusCode::CREATED, created.answer).into_response();
    session_headers(&mut res, &location, &created.etag, &config);
    if role == Role::Play {
        whep_links(&mut res, &location);
    }
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP));
    Ok(res)
}

/// Why a new session was refused, as the client is told.
fn admit_error(e: AdmitError, stream: &str, retry: u32) -> ApiError {
    match e {
        AdmitError::Offer(e) => ApiError::Session(SessionError::Offer(e)),
        AdmitError::Claim(ClaimError::PublisherExists) => {
            ApiError::PublisherExists(stream.to_string())
        }
        AdmitError::Claim(ClaimError::NoPublisher) => {
            ApiError::NoPublisher(stream.to_string(), retry)
        }
        AdmitError::Claim(ClaimError::Full) => ApiError::Full(retry),
        AdmitError::Claim(ClaimError::Overloaded) => ApiError::Overloaded(retry),
    }
}

/// The headers of a new session's resource: `Location`, `ETag` and the ICE servers' `Link`s,
/// the same on a 201 and on a 406 with a counter-offer.
fn session_headers(res: &mut Response, location: &str, etag: &str, config: &Config) {
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    for link in ice_server_links(config) {
        if let Ok(v) = HeaderValue::from_str(&link) {
            h.append(header::LINK, v);
        }
    }
}

/// The WHEP extensions' `Link`s of a viewer's session at `location`, on its 201 and on a
/// 406 with a counter-offer: the stream's events (server-sent events extension) and the
/// choice of simulcast layer (layer selection extension, which needs the events' `layers`).
pub(crate) fn whep_links(res: &mut Response, location: &str) {
    for link in [events::link(location), layer::link(location)] {
        if let Ok(v) = HeaderValue::from_str(&link) {
            res.headers_mut().append(header::LINK, v);
        }
    }
}

/// WHEP session `id` of `stream` and where it lives, for the resources under it (its events
/// and layer): `404` for any other session, unknown or a publisher's.
pub(crate) fn viewer_session(
    app: &AppState,
    stream: &str,
    id: &str,
) -> Result<(SessionId, crate::hub::SessionEntry), ApiError> {
    let id = id.parse::<SessionId>().map_err(|_| ApiError::NotFound)?;
    match app.hub.session(id) {
        Some(e) if e.role == Role::Play && *e.stream == *stream => Ok((id, e)),
        _ => Err(ApiError::NotFound),
    }
}

/// `GET /api/streams`: the streams with a publisher or viewers, by name, with their figures.
async fn list_streams(State(app): State<AppState>) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "streams": api::stream_list(&app).await }))
}

/// `Link: <uri>; rel="ice-server"` values (RFC 9725 §4.6).
fn ice_server_links(config: &Config) -> Vec<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    config
        .ice_servers
        .iter()
        .map(|s| {
            let mut link = format!("<{}>; rel=\"ice-server\"", s.url);
            let (username, credential) = s.credentials(now);
            if let Some(u) = &username {
                link.push_str(&format!("; username=\"{}\"", u.replace('"', "")));
            }
            if let Some(c) = &credential {
                link.push_str(&format!(
                    "; credential=\"{}\"; credential-type=\"password\"",
                    c.replace('"', "")
                ));
            }
            link
        })
        .collect()
}

async fn session(
    app: AppState,
    role: Role,
    stream: String,
    id: String,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = id.parse::<SessionId>().map_err(|_| ApiError::NotFound)?;
    let Some(entry) = app.hub.session(id) else {
        // A peer that closed its session (DTLS close_notify) and then DELETEs it, as
        // GStreamer's whepsrc and whipsink do on teardown, ended it either way.
        return if method == Method::DELETE && app.hub.take_closed(id, role, &stream) {
            Ok(StatusCode::OK.into_response())
        } else {
            Err(ApiError::NotFound)
        };
    };
    if entry.role != role || *entry.stream != *stream {
        return Err(ApiError::NotFound);
    }
    match method {
        Method::OPTIONS => Ok(options_response(false)),
        Method::GET | Method::HEAD => Ok(StatusCode::NO_CONTENT.into_response()),
        Method::DELETE => {
            let (tx, rx) = oneshot::channel();
            ask(&app, entry.shard, Command::Delete { id, reply: tx }, rx).await?;
            Ok(StatusCode::OK.into_response())
        }
        // WHEP: the answer to a counter-offer.
        Method::PATCH if counter::is_answer(&headers) => {
            counter::answer(&app, entry.shard, id, &headers, body).await
        }
        Method::PATCH => {
            check_content_type(&headers, SDPFRAG)?;
            let body = read_body(body, &headers, app.config.get().http.max_body_bytes).await?;
            let text = String::from_utf8(body)
                .map_err(|_| SessionError::Offer(OfferError::Malformed("not UTF-8".into())))?;
            let fragment = Fragment::parse(&text).map_err(SessionError::Offer)?;
            let if_match = headers
                .get(header::IF_MATCH)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let (tx, rx) = oneshot::channel();
            let cmd = Command::Patch {
                id,
                fragment,
                if_match,
                reply: tx,
            };
            match ask(&app, entry.shard, cmd, rx).await? {
                Patched::Trickled => Ok(StatusCode::NO_CONTENT.into_response()),
                Patched::Restarted { fragment, etag } => {
                    let mut res = (StatusCode::OK, fragment).into_response();
                    let h = res.headers_mut();
                    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDPFRAG));
                    if let Ok(v) = HeaderValue::from_str(&etag) {
                        h.insert(header::ETAG, v);
                    }
                    Ok(res)
                }
            }
        }
        _ => Err(ApiError::MethodNotAllowed {
            allow: SESSION_METHODS,
        }),
    }
}

/// Sends a command to a shard and waits for its reply, at most [`SHARD_REPLY`]: the one way
/// every handler talks to a shard.
pub(crate) async fn ask<T>(
    app: &AppState,
    shard: usize,
    cmd: Command,
    rx: oneshot::Receiver<Result<T, SessionError>>,
) -> Result<T, SessionError> {
    let link = app.shards.get(shard).ok_or(SessionError::Unavailable)?;
    link.commands
        .try_send(cmd)
        .map_err(|_| SessionError::Unavailable)?;
    match tokio::time::timeout(SHARD_REPLY, rx).await {
        Ok(Ok(r)) => r,
        _ => Err(SessionError::Unavailable),
    }
}

fn check_content_type(headers: &HeaderMap, expected: &'static str) -> Result<(), ApiError> {
    let essence = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    if essence.as_deref() == Some(expected) {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType {
            expected,
            patch: expected == SDPFRAG,
        })
    }
}

async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Vec<u8>, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::TooLarge { limit });
    }
    match axum::body::to_bytes(body, limit).await {
        Ok(b) => Ok(b.to_vec()),
        Err(e) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_large {
                Err(ApiError::TooLarge { limit })
            } else {
                Err(ApiError::Body(e.to_string()))
            }
        }
    }
}
