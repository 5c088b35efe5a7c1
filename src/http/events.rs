//! The WHEP server-sent events extension (draft-ietf-wish-whep core extensions): a viewer
//! POSTs the event types it wants to `{session}/sse`, gets an event stream at
//! `{session}/sse/{id}`, and long-pulls it as `text/event-stream`.
//!
//! The state behind them (which events each event stream wants, its queue, the registry in
//! the hub) is `crate::events`.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::Frame;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::debug;

use super::error::ApiError;
use super::{preflight, AppState, Segments};
use crate::events::{
    Ending, EventKind, EventStream, OpenError, MAX_PER_SESSION, VIEWERCOUNT_EVERY,
};
use crate::shard::SessionError;

/// The `rel` of the 201's `Link` to the event-stream entry point.
pub const REL: &str = "urn:ietf:params:whep:ext:core:server-sent-events";

/// A comment line this often keeps proxies from closing a quiet long pull.
const KEEPALIVE: Duration = Duration::from_secs(15);

const JSON: &str = "application/json";

/// Methods of the entry point and of an event stream, for `Allow`.
const ENTRY_METHODS: &str = "POST, OPTIONS";
const STREAM_METHODS: &str = "GET, HEAD, DELETE, OPTIONS";

/// The `Link` value for a WHEP session at `location`: its entry point and every event type.
pub fn link(location: &str) -> String {
    let events: Vec<&str> = EventKind::ALL.iter().map(|k| k.name()).collect();
    format!(
        "<{location}/sse>; rel=\"{REL}\"; events=\"{}\"",
        events.join(",")
    )
}

/// The index of the first video m-line of `sdp`, which keys the `layers` event's data.
pub fn video_mline(sdp: &str) -> Option<usize> {
    sdp.lines()
        .filter(|l| l.starts_with("m="))
        .position(|l| l.starts_with("m=video"))
}

// ---- HTTP --------------------------------------------------------------------------------------

/// `{session}/sse`: POST creates an event stream.
pub async fn entry_point(
    axum::extract::State(app): axum::extract::State<AppState>,
    Segments((stream, id)): Segments<(String, String)>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if method == Method::OPTIONS {
        return Ok(preflight(ENTRY_METHODS, Some(("accept-post", JSON))));
    }
    let (session, _) = super::viewer_session(&app, &stream, &id)?;
    if method != Method::POST {
        return Err(ApiError::MethodNotAllowed {
            allow: ENTRY_METHODS,
        });
    }
    let limit = app.config.get().http.max_body_bytes;
    let typed = headers.contains_key(header::CONTENT_TYPE);
    let body = super::read_body(body, &headers, limit).await?;
    if typed || !body.is_empty() {
        super::check_content_type(&headers, JSON)?;
    }
    let wanted = wanted_events(&body)?;
    let created = app.hub.open_events(session, &wanted);
    let eid = match created {
        Ok(eid) => eid,
        Err(OpenError::NoSession) => return Err(ApiError::NotFound),
        Err(OpenError::TooMany) => return Err(ApiError::TooManyEventStreams(MAX_PER_SESSION)),
        Err(OpenError::Closing) => return Err(ApiError::Session(SessionError::Unavailable)),
    };
    let location = format!("/whep/{stream}/{id}/sse/{eid:032x}");
    let mut res = StatusCode::CREATED.into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    Ok(res)
}

/// The event types a POST body asks for: a JSON array of advertised names; none (an empty
/// body or array) means all of them.
fn wanted_events(body: &[u8]) -> Result<Vec<EventKind>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(EventKind::ALL.to_vec());
    }
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ApiError::BadEventList(e.to_string()))?;
    let Some(items) = value.as_array() else {
        return Err(ApiError::BadEventList(
            "the body must be a JSON array of event names".into(),
        ));
    };
    if items.is_empty() {
        return Ok(EventKind::ALL.to_vec());
    }
    let mut wanted = Vec::new();
    let mut unsupported = Vec::new();
    for item in items {
        match item.as_str().map(|s| (s, EventKind::parse(s))) {
            Some((_, Some(kind))) => wanted.push(kind),
            Some((name, None)) => unsupported.push(name.to_string()),
            None => unsupported.push(item.to_string()),
        }
    }
    if unsupported.is_empty() {
        Ok(wanted)
    } else {
        Err(ApiError::UnsupportedEvents(unsupported))
    }
}

/// `{session}/sse/{event}`: GET long-pulls, DELETE destroys.
pub async fn event_stream(
    axum::extract::State(app): axum::extract::State<AppState>,
    Segments((stream, id, event)): Segments<(String, String, String)>,
    method: Method,
) -> Result<Response, ApiError> {
    if method == Method::OPTIONS {
        return Ok(preflight(STREAM_METHODS, None));
    }
    let (session, _) = super::viewer_session(&app, &stream, &id)?;
    let eid = parse_event_id(&event).ok_or(ApiError::NoEventStream)?;
    match method {
        Method::DELETE => {
            if app.hub.delete_events(session, eid) {
                Ok(StatusCode::OK.into_response())
            } else {
                Err(ApiError::NoEventStream)
            }
        }
        Method::GET | Method::HEAD => {
            let es = app
                .hub
                .event_stream(session, eid)
                .ok_or(ApiError::NoEventStream)?;
            let body = if method == Method::HEAD {
                Body::empty()
            } else {
                long_pull(es)
            };
            let mut res = (StatusCode::OK, body).into_response();
            let h = res.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            Ok(res)
        }
        _ => Err(ApiError::MethodNotAllowed {
            allow: STREAM_METHODS,
        }),
    }
}

/// Anything else on the entry point or an event stream.
pub async fn entry_method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed {
        allow: ENTRY_METHODS,
    }
}

pub async fn stream_method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed {
        allow: STREAM_METHODS,
    }
}

/// Event stream ids are issued as 32 lower-case hex digits; only that spelling names one.
fn parse_event_id(s: &str) -> Option<u128> {
    let canonical = s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    canonical
        .then(|| u128::from_str_radix(s, 16).ok())
        .flatten()
}

// ---- the long pull -----------------------------------------------------------------------------

/// The response body of a GET: a task writes the event stream into a channel this body reads,
/// so it works the same over HTTP/1.1, HTTP/2 and HTTP/3. The task ends when the client goes
/// (the body is dropped), the event stream ends, or a newer GET takes over.
fn long_pull(es: Arc<EventStream>) -> Body {
    let (tx, rx) = mpsc::channel(8);
    let reader = {
        let mut inner = es.lock();
        inner.reader += 1;
        if inner.dropped > 0 {
            debug!(dropped = inner.dropped, "events dropped from a full queue");
            inner.dropped = 0;
        }
        inner.reader
    };
    // The previous long pull, if any, sees it was replaced.
    es.wake();
    tokio::spawn(write_events(es, reader, tx));
    Body::new(ChannelBody(rx))
}

/// One SSE message: the event name, its data on one line, a blank line.
fn frame(out: &mut String, kind: EventKind, data: &str) {
    out.push_str("event: ");
    out.push_str(kind.name());
    out.push_str("\ndata: ");
    out.push_str(data);
    out.push_str("\n\n");
}

async fn write_events(es: Arc<EventStream>, reader: u64, tx: mpsc::Sender<Bytes>) {
    let mut changed = es.changed.subscribe();
    let mut viewers = es.viewers.clone();
    let wants_count = es.wants(EventKind::ViewerCount);
    // The count's channel closes with the stream's last event stream; a finishing one still
    // delivers what it has.
    let mut count_open = wants_count;
    let mut keepalive_at = Instant::now() + KEEPALIVE;
    loop {
        changed.borrow_and_update();
        let count = *viewers.borrow_and_update();
        let now = Instant::now();
        let mut out = String::new();
        let mut count_due = None;
        let end = {
            let mut inner = es.lock();
            if inner.reader != reader || inner.ending == Ending::Destroyed {
                return;
            }
            for (kind, data) in inner.queue.drain(..) {
                frame(&mut out, kind, &data);
            }
            if wants_count && inner.viewers_sent != Some(count) && inner.ending == Ending::Open {
                if now >= inner.viewers_due {
                    frame(&mut out, EventKind::ViewerCount, &count_json(count));
                    inner.viewers_sent = Some(count);
                    inner.viewers_due = now + VIEWERCOUNT_EVERY;
                } else {
                    count_due = Some(inner.viewers_due);
                }
            }
            inner.ending == Ending::Finishing
        };
        if now >= keepalive_at && out.is_empty() {
            out.push_str(": keepalive\n\n");
        }
        if !out.is_empty() {
            // A client that does not read must not keep a destroyed or replaced stream's
            // long pull open.
            let send = tx.send(Bytes::from(out));
            tokio::pin!(send);
            loop {
                tokio::select! {
                    sent = &mut send => match sent {
                        Ok(()) => break,
                        Err(_) => return,
                    },
                    r = changed.changed() => if r.is_err() || es.over_for(reader) { return },
                }
            }
            keepalive_at = Instant::now() + KEEPALIVE;
        }
        if end {
            return;
        }
        let wake_at = count_due.map_or(keepalive_at, |due| keepalive_at.min(due));
        tokio::select! {
            r = changed.changed() => if r.is_err() { return },
            r = viewers.changed(), if count_open => count_open = r.is_ok(),
            _ = tokio::time::sleep_until(wake_at) => {}
            _ = tx.closed() => return,
        }
    }
}

fn count_json(n: usize) -> String {
    serde_json::json!({ "viewercount": n }).to_string()
}

/// A body whose frames come from a channel; it ends when the sender is dropped.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{LayerInfo, QUEUE};
    use crate::hub::Hub;
    use crate::session::{Role, SessionId};

    /// A hub with publisher 1 and viewer 2 of stream "s".
    fn publisher_and_viewer() -> Hub {
        let hub = Hub::new(1);
        let limits = crate::config::LimitsConfig::default();
        let none = (Vec::new(), Vec::new());
        hub.register(SessionId(1), "s", Role::Publish, &limits, none.clone())
            .expect("publisher");
        hub.register(SessionId(2), "s", Role::Play, &limits, none)
            .expect("viewer");
        hub
    }

    #[test]
    fn event_names_are_the_advertised_ones_exactly() {
        assert_eq!(
            link("/whep/s/abc"),
            "</whep/s/abc/sse>; rel=\"urn:ietf:params:whep:ext:core:server-sent-events\"; \
             events=\"active,inactive,layers,reconnect,viewercount\""
        );
        assert_eq!(
            EventKind::parse("viewercount"),
            Some(EventKind::ViewerCount)
        );
        assert_eq!(EventKind::parse("ViewerCount"), None);
        assert_eq!(EventKind::parse("scte35"), None);
        assert_eq!(wanted_events(b"").ok(), Some(EventKind::ALL.to_vec()));
        assert_eq!(wanted_events(b" []").ok(), Some(EventKind::ALL.to_vec()));
        assert_eq!(
            wanted_events(br#"["layers"]"#).ok(),
            Some(vec![EventKind::Layers])
        );
        match wanted_events(br#"["active","nope",3]"#) {
            Err(ApiError::UnsupportedEvents(names)) => assert_eq!(names, vec!["nope", "3"]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            wanted_events(b"{}"),
            Err(ApiError::BadEventList(_))
        ));
        assert!(matches!(
            wanted_events(b"[\"active\""),
            Err(ApiError::BadEventList(_))
        ));
        assert_eq!(video_mline("v=0\r\nm=audio 9\r\nm=video 9\r\n"), Some(1));
        assert_eq!(video_mline("v=0\r\nm=audio 9\r\n"), None);
        assert_eq!(parse_event_id(&format!("{:032x}", 7u128)), Some(7));
        assert_eq!(parse_event_id(&format!("{:032X}", 0xabu128)), None);
    }

    fn queued(es: &EventStream) -> Vec<(&'static str, String)> {
        es.lock()
            .queue
            .iter()
            .map(|(k, d)| (k.name(), d.clone()))
            .collect()
    }

    #[test]
    fn layers_are_serialised_field_by_field_and_sent_on_change() {
        let hub = publisher_and_viewer();
        hub.set_video_mline(SessionId(2), 1);
        let layers = vec![
            LayerInfo {
                rid: Some("h".into()),
                spatial_layer_id: Some(0),
                temporal_layer_id: Some(1),
                bitrate: Some(557_112),
                target_bitrate: Some(572_000),
                width: Some(640),
                height: Some(360),
            },
            LayerInfo {
                spatial_layer_id: Some(1),
                ..LayerInfo::default()
            },
        ];
        // Known before the event stream: it starts with them.
        hub.set_layers("s", layers.clone());
        let eid = hub
            .open_events(SessionId(2), &[EventKind::Layers])
            .expect("opened");
        let es = hub.event_stream(SessionId(2), eid).expect("open");
        let expected = r#"{"1":[{"rid":"h","spatialLayerId":0,"temporalLayerId":1,"bitrate":557112,"targetBitrate":572000,"width":640,"height":360},{"spatialLayerId":1}]}"#;
        assert_eq!(queued(&es), vec![("layers", expected.to_string())]);
        // Field by field: camelCase names, absent ones left out.
        let v: serde_json::Value = serde_json::from_str(expected).expect("JSON");
        let first = &v["1"][0];
        for (field, value) in [
            ("rid", serde_json::json!("h")),
            ("spatialLayerId", 0.into()),
            ("temporalLayerId", 1.into()),
            ("bitrate", 557_112.into()),
            ("targetBitrate", 572_000.into()),
            ("width", 640.into()),
            ("height", 360.into()),
        ] {
            assert_eq!(first[field], value, "{field}");
        }
        let second = v["1"][1].as_object().expect("object");
        assert_eq!(second.keys().collect::<Vec<_>>(), vec!["spatialLayerId"]);
        es.lock().queue.clear();
        // The same layers again: nothing; changed ones: one event.
        hub.set_layers("s", layers.clone());
        assert!(queued(&es).is_empty());
        let fewer = vec![LayerInfo {
            rid: Some("l".into()),
            ..LayerInfo::default()
        }];
        hub.set_layers("s", fewer);
        assert_eq!(
            queued(&es),
            vec![("layers", r#"{"1":[{"rid":"l"}]}"#.to_string())]
        );
        // The session ends: so does its event stream.
        hub.unregister(SessionId(2));
        assert!(hub.event_stream(SessionId(2), eid).is_none());
        assert!(queued(&es).is_empty(), "pending events dropped");
    }

    #[test]
    fn a_shed_viewer_is_told_to_reconnect_before_its_removal() {
        use crate::shard::HubUpdate;
        let hub = publisher_and_viewer();
        let eid = hub
            .open_events(SessionId(2), &[EventKind::Reconnect, EventKind::Inactive])
            .expect("opened");
        let es = hub.event_stream(SessionId(2), eid).expect("open");
        // What a shedding shard sends, in its order.
        HubUpdate::Reconnect { id: SessionId(2) }.apply(&hub);
        HubUpdate::Removed {
            id: SessionId(2),
            shard: 0,
            by_peer: false,
        }
        .apply(&hub);
        assert!(hub.event_stream(SessionId(2), eid).is_none(), "gone");
        assert_eq!(queued(&es), vec![("reconnect", "{}".to_string())]);
        assert_eq!(es.lock().ending, Ending::Finishing, "delivered, then ended");
        assert!(hub.lock().events.is_empty());
    }

    #[test]
    fn a_full_queue_drops_its_oldest_and_a_session_has_few_streams() {
        let hub = publisher_and_viewer();
        hub.publisher_active("s", SessionId(1));
        let all = EventKind::ALL;
        let eid = hub.open_events(SessionId(2), &all).expect("opened");
        for _ in 1..MAX_PER_SESSION {
            hub.open_events(SessionId(2), &all).expect("opened");
        }
        assert_eq!(hub.open_events(SessionId(2), &all), Err(OpenError::TooMany));
        assert_eq!(
            hub.open_events(SessionId(9), &all),
            Err(OpenError::NoSession)
        );
        let es = hub.event_stream(SessionId(2), eid).expect("open");
        assert_eq!(queued(&es), vec![("active", "{}".to_string())]);
        for i in 0..QUEUE + 3 {
            hub.set_layers(
                "s",
                vec![LayerInfo {
                    bitrate: Some(i as u64),
                    rid: Some("a".into()),
                    ..LayerInfo::default()
                }],
            );
        }
        let q = queued(&es);
        assert_eq!(q.len(), QUEUE);
        assert_eq!(es.lock().dropped, 4, "the active event and three layers");
        assert!(q[0].1.contains("\"bitrate\":3"), "{:?}", q[0]);
        // At shutdown every event stream is told, and no new one opens.
        hub.reconnect_all();
        assert!(hub.event_stream(SessionId(2), eid).is_none());
        assert_eq!(queued(&es).last().map(|e| e.0), Some("reconnect"));
        assert_eq!(hub.open_events(SessionId(2), &all), Err(OpenError::Closing));
    }
}
