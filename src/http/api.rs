//! The operator API under `/api`: a stream's sessions, kicking a publisher or a session, and
//! the OpenAPI document that describes all of the gateway's HTTP surface.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio::sync::oneshot;

use super::error::ApiError;
use super::AppState;
use crate::hub::SessionId;
use crate::shard::{Command, SessionError, SessionStats};

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

#[derive(Serialize)]
struct StreamView {
    name: String,
    live: bool,
    publisher: Option<SessionStats>,
    viewers: Vec<SessionStats>,
}

/// `GET /api/streams/{stream}`: the stream and its sessions with their statistics, gathered
/// from every shard.
async fn stream(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<StreamView>, ApiError> {
    let (key, live) = {
        let st = app.hub.lock();
        let (key, entry) = st
            .streams
            .get_key_value(name.as_str())
            .ok_or(ApiError::NotFound)?;
        (key.clone(), entry.publisher.is_some())
    };
    let mut view = StreamView {
        name,
        live,
        publisher: None,
        viewers: Vec::new(),
    };
    for link in app.shards.iter() {
        let (tx, rx) = oneshot::channel();
        let cmd = Command::Stats {
            stream: key.clone(),
            reply: tx,
        };
        if link.commands.send(cmd).is_err() {
            continue;
        }
        if let Ok(Ok(list)) = tokio::time::timeout(std::time::Duration::from_secs(2), rx).await {
            for s in list {
                if s.kind == "publish" {
                    view.publisher = Some(s);
                } else {
                    view.viewers.push(s);
                }
            }
        }
    }
    view.viewers.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(Json(view))
}

/// `DELETE /api/streams/{stream}`: ends the publisher's session; viewers stay and wait.
async fn kick_publisher(
    State(app): State<AppState>,
    Path(name): Path<String>,
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
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id: SessionId = id.parse().map_err(|_| ApiError::NotFound)?;
    let entry = app.hub.session(id).ok_or(ApiError::NotFound)?;
    delete(&app, id, entry.shard).await
}

async fn delete(app: &AppState, id: SessionId, shard: usize) -> Result<StatusCode, ApiError> {
    let link = app.shards.get(shard).ok_or(SessionError::Unavailable)?;
    let (tx, rx) = oneshot::channel();
    link.commands
        .send(Command::Delete { id, reply: tx })
        .map_err(|_| SessionError::Unavailable)?;
    match rx.await {
        Ok(Ok(())) => Ok(StatusCode::NO_CONTENT),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(SessionError::Unavailable.into()),
    }
}
