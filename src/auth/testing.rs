//! What the auth unit tests share: configurations, JWT signing and a webhook on loopback.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::Value;

use super::{Action, Authorizer, Decision};
use crate::config::AuthConfig;

pub(crate) const SECRET: &str = "0123456789abcdef0123456789abcdef-hs256";

pub(crate) fn parse(text: &str) -> AuthConfig {
    toml::from_str(text).expect("auth config parses")
}

pub(super) fn authorizer(text: &str) -> Authorizer {
    Authorizer::new(&parse(text)).expect("valid auth config")
}

pub(crate) const STATIC: &str = r#"
        enabled = true
        admin_tokens = ["root-token"]
        [[streams]]
        pattern = "class-*"
        publish_tokens = ["teacher"]
        play_tokens = ["student"]
        [[streams]]
        pattern = "class-?"
        publish_tokens = ["shadowed"]
        [[streams]]
        pattern = "lobby"
        publish_tokens = ["host"]
        public_play = true
    "#;

pub(super) async fn check(
    a: &Authorizer,
    token: Option<&str>,
    action: Action,
    stream: &str,
) -> Decision {
    a.check(token, action, Some(stream), None).await
}

pub(super) fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

pub(super) fn hs256(claims: Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode JWT")
}

/// A webhook on loopback: `allow-*` tokens get 204, `invalid` 401, `slow` an answer after
/// 2 s, everything else 403. It counts calls and keeps the bodies.
pub(super) struct Hook {
    pub(super) url: String,
    pub(super) calls: Arc<AtomicUsize>,
    pub(super) bodies: Arc<Mutex<Vec<Value>>>,
}

pub(super) async fn hook() -> Hook {
    let calls = Arc::new(AtomicUsize::new(0));
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let (c, b) = (calls.clone(), bodies.clone());
    let app = Router::new().route(
        "/auth",
        post(move |axum::Json(v): axum::Json<Value>| {
            let (c, b) = (c.clone(), b.clone());
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                let token = v["token"].as_str().unwrap_or_default().to_string();
                b.lock().unwrap_or_else(|p| p.into_inner()).push(v);
                if token == "slow" {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                if token.starts_with("allow-") {
                    StatusCode::NO_CONTENT
                } else if token == "invalid" {
                    StatusCode::UNAUTHORIZED
                } else {
                    StatusCode::FORBIDDEN
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind webhook");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Hook {
        url: format!("http://{addr}/auth"),
        calls,
        bodies,
    }
}
