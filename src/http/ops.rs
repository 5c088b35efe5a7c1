//! Operations endpoints: `/metrics` (Prometheus), `/healthz` (the process answers) and
//! `/readyz` (every shard runs and the gateway accepts sessions), and the middleware that
//! counts HTTP requests.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::hub::Hub;
use crate::metrics::{Metrics, Snapshot};
use crate::session::Role;
use crate::shard::counters::Counters;
use crate::shard::io::{ShardLink, SharedCounters};

/// What the operations endpoints read.
pub struct Ops {
    pub metrics: Arc<Metrics>,
    pub hub: Arc<Hub>,
    pub counters: Vec<Arc<SharedCounters>>,
    pub shards: Arc<Vec<ShardLink>>,
}

impl Ops {
    /// The gateway's state now, taking the time-to-first-frame samples since the last call.
    pub fn snapshot(&self) -> Snapshot {
        use std::sync::atomic::Ordering::Relaxed;
        let streams = self.hub.streams();
        let (mut publishers, mut viewers) = (0, 0);
        for s in self.hub.lock().sessions.values() {
            match s.role {
                Role::Publish => publishers += 1,
                Role::Play => viewers += 1,
            }
        }
        let mut stats = Counters::default();
        let mut first_frames = Vec::new();
        let mut shard_busy_secs = Vec::new();
        for c in &self.counters {
            stats.add(&c.load());
            shard_busy_secs.push(c.busy_ns.load(Relaxed) as f64 / 1e9);
            first_frames.append(&mut c.drain_first_frames());
        }
        Snapshot {
            publishers,
            viewers,
            live_streams: streams.iter().filter(|s| s.live).count(),
            streams: streams.len(),
            stats,
            shard_busy_secs,
            shard_load: self.hub.loads(),
            first_frames,
        }
    }
}

pub fn routes(ops: Arc<Ops>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(ops)
}

async fn metrics(State(ops): State<Arc<Ops>>) -> Response {
    let text = ops.metrics.render(&ops.snapshot());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// 200 when every shard thread is running; 503 otherwise (or while shutting down).
async fn readyz(State(ops): State<Arc<Ops>>) -> Response {
    let down = ops.shards.iter().filter(|s| s.commands.is_closed()).count();
    if down == 0 {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{down} of {} shards are not running\n", ops.shards.len()),
        )
            .into_response()
    }
}

/// Counts every request by route template, method and status, with its duration.
pub async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().as_str().to_string();
    let started = Instant::now();
    let res = next.run(req).await;
    metrics.http_request(
        &route,
        &method,
        res.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    res
}
