//! The operator API under `/api`: the streams with their figures, a stream's sessions, kicking
//! a publisher or a session, and the OpenAPI document that describes all of the gateway's HTTP
//! surface.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio::sync::oneshot;

use super::error::ApiError;
use super::{AppState, Segments};
use crate::hub::StreamSummary;
use crate::session::SessionId;
use crate::shard::{Command, SessionStats, StreamTotals, Traffic};

/// How long the API waits for a shard's figures; a shard that does not answer is left out.
const STATS_REPLY: Duration = Duration::from_secs(2);

/// The OpenAPI 3 description of every route; `tests/api.rs` calls each documented operation.
pub const OPENAPI: &str = include_str!("openapi.json");

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/api/openapi.json", get(openapi))
        .route("/api/streams/{stream}", get(stream).delete(kick_publisher))
        .route("/api/sessions/{id}", axum::routing::delete(kick_session))
        .with_state(state)
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// A stream's figures, the same in the list and in the detail. Rates, packets and losses are
/// as of each session's latest statistics (`media.stats_interval_secs`).
#[derive(Debug, Serialize)]
pub struct StreamFigures {
    /// `none`, `connecting` or `connected`.
    pub publisher_state: &'static str,
    /// The publisher's negotiated codecs.
    pub video_codecs: Vec<String>,
    pub audio_codecs: Vec<String>,
    #[serde(flatten)]
    pub traffic: Traffic,
    /// Seconds since the current publisher connected; `null` without a connected publisher.
    /// It starts again with each new publisher, so it says how long the stream has been live.
    pub uptime_secs: Option<f64>,
}

impl StreamFigures {
    fn new(summary: &StreamSummary, totals: &StreamTotals) -> StreamFigures {
        let publisher_state = match (summary.live, totals.publisher_state) {
            (false, _) => "none",
            // Registered, and its shard has not created it yet.
            (true, None) => "connecting",
            (true, Some(state)) => state,
        };
        StreamFigures {
            publisher_state,
            video_codecs: summary.video_codecs.clone(),
            audio_codecs: summary.audio_codecs.clone(),
            traffic: totals.traffic,
            uptime_secs: totals.uptime_secs.filter(|_| summary.live),
        }
    }
}

/// One stream of `GET /api/streams`.
#[derive(Debug, Serialize)]
pub struct StreamListItem {
    pub name: String,
    pub live: bool,
    /// Viewer sessions.
    pub viewers: usize,
    #[serde(flatten)]
    pub figures: StreamFigures,
}

/// Every stream with a publisher or viewers, by name, with its figures: one command to each
/// shard, asked all at once.
pub async fn stream_list(app: &AppState) -> Vec<StreamListItem> {
    let summaries = app.hub.streams();
    let mut pending = Vec::with_capacity(app.shards.len());
    for link in app.shards.iter() {
        let (tx, rx) = oneshot::channel();
        if link
            .commands
            .try_send(Command::StreamTotals { reply: tx })
            .is_ok()
        {
            pending.push(rx);
        }
    }
    let mut totals: HashMap<Arc<str>, StreamTotals> = HashMap::new();
    for rx in pending {
        if let Ok(Ok(list)) = tokio::time::timeout(STATS_REPLY, rx).await {
            for (stream, t) in list {
                totals.entry(stream).or_default().merge(&t);
            }
        }
    }
    let none = StreamTotals::default();
    summaries
        .into_iter()
        .map(|s| {
            let t = totals.get(s.name.as_str()).unwrap_or(&none);
            StreamListItem {
                figures: StreamFigures::new(&s, t),
                name: s.name,
                live: s.live,
                viewers: s.viewers,
            }
        })
        .collect()
}

#[derive(Serialize)]
struct StreamView {
    name: String,
    live: bool,
    publisher: Option<SessionStats>,
    viewers: Vec<SessionStats>,
    /// Viewer sessions, as `viewers` in the list.
    viewer_count: usize,
    #[serde(flatten)]
    figures: StreamFigures,
}

/// `GET /api/streams/{stream}`: the stream, its figures and its sessions with their
/// statistics, gathered from every shard.
async fn stream(
    State(app): State<AppState>,
    Segments(name): Segments<String>,
) -> Result<Json<StreamView>, ApiError> {
    let (key, summary) = app.hub.stream(&name).ok_or(ApiError::NotFound)?;
    let mut pending = Vec::with_capacity(app.shards.len());
    for link in app.shards.iter() {
        let (tx, rx) = oneshot::channel();
        let cmd = Command::Stats {
            stream: key.clone(),
            reply: tx,
        };
        if link.commands.try_send(cmd).is_ok() {
            pending.push(rx);
        }
    }
    let mut publisher = None;
    let mut viewers = Vec::new();
    let mut totals = StreamTotals::default();
    for rx in pending {
        if let Ok(Ok(list)) = tokio::time::timeout(STATS_REPLY, rx).await {
            for s in list {
                totals.add_session(&s);
                if s.kind == "publish" {
                    publisher = Some(s);
                } else {
                    viewers.push(s);
                }
            }
        }
    }
    viewers.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(Json(StreamView {
        figures: StreamFigures::new(&summary, &totals),
        name,
        live: summary.live,
        publisher,
        viewer_count: summary.viewers,
        viewers,
    }))
}

/// `DELETE /api/streams/{stream}`: ends the publisher's session; viewers stay and wait.
async fn kick_publisher(
    State(app): State<AppState>,
    Segments(name): Segments<String>,
) -> Result<StatusCode, ApiError> {
    let publisher = {
        let st = app.hub.lock();
        st.streams
            .get(name.as_str())
            .and_then(|s| s.publisher.as_ref().map(|p| (p.session, p.shard)))
    };
    let (id, shard) = publisher.ok_or(ApiError::NotFound)?;
    delete(&app, id, shard).await
}

/// `DELETE /api/sessions/{id}`: ends one session, publisher or viewer.
async fn kick_session(
    State(app): State<AppState>,
    Segments(id): Segments<String>,
) -> Result<StatusCode, ApiError> {
    let id: SessionId = id.parse().map_err(|_| ApiError::NotFound)?;
    let entry = app.hub.session(id).ok_or(ApiError::NotFound)?;
    delete(&app, id, entry.shard).await
}

async fn delete(app: &AppState, id: SessionId, shard: usize) -> Result<StatusCode, ApiError> {
    let (tx, rx) = oneshot::channel();
    super::ask(app, shard, Command::Delete { id, reply: tx }, rx).await?;
    Ok(StatusCode::NO_CONTENT)
}
