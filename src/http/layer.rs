//! The WHEP video layer selection extension (`urn:ietf:params:whep:ext:core:layer`): a player
//! POSTs JSON to `{session}/layer` to pick the simulcast layer it receives, or to hand the
//! choice back to the gateway.
//!
//! `{"mediaId": "0", "rid": "h"}` picks the layer with rid `h` on the first video m-line;
//! `{"mediaId": "0"}` (or `{}`) returns to automatic choice. `encodingId`, which Broadcast
//! Box's and live777's players send, is read as `rid`. Spatial and temporal layer ids and
//! size caps select within SVC or by resolution, which the gateway does not do: a request
//! naming them gets 400 rather than a 200 that ignores them.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::oneshot;

use super::{ask, check_content_type, preflight, read_body, AppState, Segments};
use crate::http::error::ApiError;
use crate::shard::{Command, SessionError};

const JSON: &str = "application/json";

/// The extension's link relation.
pub const REL: &str = "urn:ietf:params:whep:ext:core:layer";

/// The `Link` a WHEP 201 carries for a session at `location`.
pub fn link(location: &str) -> String {
    format!("<{location}/layer>; rel=\"{REL}\"")
}
const METHODS: &str = "POST, OPTIONS";

/// Any other method on the layer resource.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed { allow: METHODS }
}

/// Selectors of the draft this gateway cannot serve (it forwards simulcast, not SVC).
const UNSUPPORTED: [&str; 6] = [
    "spatialLayerId",
    "temporalLayerId",
    "maxSpatialLayerId",
    "maxTemporalLayerId",
    "maxWidth",
    "maxHeight",
];

/// What a layer request asks for.
#[derive(Debug, PartialEq, Eq)]
pub struct Selection {
    /// The video m-line, as its index or mid; `None` for the first video m-line.
    pub media: Option<String>,
    /// The layer's rid; `None` for automatic choice.
    pub rid: Option<String>,
}

/// Reads a layer request's JSON body. An empty body is `{}`.
pub fn parse(body: &[u8]) -> Result<Selection, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Selection {
            media: None,
            rid: None,
        });
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(map) = value else {
        return Err("the body must be a JSON object".into());
    };
    let named: Vec<&str> = UNSUPPORTED
        .iter()
        .copied()
        .filter(|k| map.contains_key(*k))
        .collect();
    if !named.is_empty() {
        return Err(format!(
            "{} not supported: the gateway selects simulcast layers by rid",
            named.join(", ")
        ));
    }
    let media = match map.get("mediaId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(_) => return Err("mediaId must be a string".into()),
    };
    let rid = match (map.get("rid"), map.get("encodingId")) {
        (Some(Value::String(a)), Some(Value::String(b))) if a != b => {
            return Err("rid and encodingId name different layers".into())
        }
        (Some(Value::String(s)), _) | (None | Some(Value::Null), Some(Value::String(s))) => {
            Some(s.clone())
        }
        (None | Some(Value::Null), None | Some(Value::Null)) => None,
        _ => return Err("rid must be a string".into()),
    };
    if let Some(r) = &rid {
        // RFC 8851 §10: rid-syntax is alphanumerics, '-' and '_'.
        let valid = !r.is_empty()
            && r.len() <= 255
            && r.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(format!(
                "{r:?} is not a rid (RFC 8851: letters, digits, '-', '_')"
            ));
        }
    }
    Ok(Selection { media, rid })
}

/// `POST /whep/{stream}/{id}/layer`: 200 once the viewer's shard took the selection.
pub async fn whep_layer(
    State(app): State<AppState>,
    Segments((stream, id)): Segments<(String, String)>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // A CORS preflight carries no credentials and must not fail on what it cannot know.
    if method == Method::OPTIONS {
        return Ok(preflight(METHODS, Some(("accept-post", JSON))));
    }
    let (id, entry) = super::viewer_session(&app, &stream, &id)?;
    let body = read_body(body, &headers, app.config.get().http.max_body_bytes).await?;
    if !body.is_empty() {
        check_content_type(&headers, JSON)?;
    }
    let selection = parse(&body).map_err(SessionError::Layer)?;
    let (tx, rx) = oneshot::channel();
    let cmd = Command::SelectLayer {
        id,
        media: selection.media,
        rid: selection.rid,
        reply: tx,
    };
    ask(&app, entry.shard, cmd, rx).await?;
    Ok(StatusCode::OK.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(media: Option<&str>, rid: Option<&str>) -> Selection {
        Selection {
            media: media.map(str::to_string),
            rid: rid.map(str::to_string),
        }
    }

    #[test]
    fn requests_read_as_the_draft_and_the_older_players_write_them() {
        assert_eq!(
            parse(br#"{"mediaId":"0","rid":"h"}"#),
            Ok(sel(Some("0"), Some("h")))
        );
        assert_eq!(parse(br#"{"mediaId":"0"}"#), Ok(sel(Some("0"), None)));
        assert_eq!(parse(b""), Ok(sel(None, None)));
        assert_eq!(parse(b"{}"), Ok(sel(None, None)));
        assert_eq!(parse(br#"{"encodingId":"1"}"#), Ok(sel(None, Some("1"))));
        assert_eq!(
            parse(br#"{"mediaId":"1","encodingId":"q"}"#),
            Ok(sel(Some("1"), Some("q")))
        );
        assert_eq!(
            parse(br#"{"mediaId":0,"rid":"l"}"#),
            Ok(sel(Some("0"), Some("l")))
        );
    }

    #[test]
    fn what_cannot_be_served_is_refused_by_name() {
        let e = parse(br#"{"rid":"h","maxWidth":640}"#).expect_err("maxWidth");
        assert!(e.contains("maxWidth"), "{e}");
        assert!(parse(br#"{"rid":"h","encodingId":"l"}"#).is_err());
        assert!(parse(br#"{"rid":"a b"}"#).is_err());
        assert!(parse(br#"{"rid":""}"#).is_err());
        assert!(parse(br#"{"rid":5}"#).is_err());
        assert!(parse(b"[\"h\"]").is_err());
        assert!(parse(b"{").is_err());
    }
}
