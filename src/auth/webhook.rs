//! An HTTP service of the operator's that decides: asked with the token, stream and action,
//! it answers 2xx (allow), 401 (not a valid token) or anything else (valid, but not this).
//! An answer is reused for `cache_secs` per token, stream and action, so a client's repeated
//! requests do not each wait for the webhook.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, StatusCode};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use tracing::warn;

use super::{Action, AuthError, TokenHash};
use crate::config::WebhookConfig;

/// What the webhook said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// 2xx.
    Allow,
    /// 401: the token is not valid.
    Invalid,
    /// Any other status: the token is valid but lacks the right.
    Deny,
}

type CacheKey = (TokenHash, Option<Box<str>>, Action);

/// Cached webhook answers kept at most; beyond it expired ones are dropped, then all.
const WEBHOOK_CACHE_MAX: usize = 4096;

pub(super) struct Webhook {
    uri: hyper::Uri,
    timeout: Duration,
    cache_for: Duration,
    client: Client<HttpConnector, Full<Bytes>>,
    cache: Mutex<HashMap<CacheKey, (Instant, Verdict)>>,
}

#[derive(Serialize)]
struct WebhookRequest<'a> {
    stream: Option<&'a str>,
    action: Action,
    token: &'a str,
    client: Option<String>,
}

impl Webhook {
    /// The webhook of a section that passed [`crate::config::AuthConfig::validate`]; `None`
    /// when no URL is configured.
    pub(super) fn new(c: &WebhookConfig) -> Result<Option<Webhook>, AuthError> {
        let Some(uri) = c.uri()? else {
            return Ok(None);
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build_http();
        Ok(Some(Webhook {
            uri,
            timeout: Duration::from_millis(c.timeout_ms),
            cache_for: Duration::from_secs(c.cache_secs),
            client,
            cache: Mutex::new(HashMap::new()),
        }))
    }

    /// The webhook's verdict, from the cache if it answered recently; `None` if it could not be
    /// asked (timeout, connection error), which is not cached so a recovered webhook is asked.
    pub(super) async fn ask(
        &self,
        hash: &TokenHash,
        token: &str,
        stream: Option<&str>,
        action: Action,
        client: Option<SocketAddr>,
    ) -> Option<Verdict> {
        let key: CacheKey = (*hash, stream.map(Box::from), action);
        let now = Instant::now();
        if let Some((until, v)) = self.lock().get(&key) {
            if *until > now {
                return Some(*v);
            }
        }
        let body = WebhookRequest {
            stream,
            action,
            token,
            client: client.map(|a| a.to_string()),
        };
        let body = serde_json::to_vec(&body).ok()?;
        let req = hyper::Request::post(self.uri.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .ok()?;
        let verdict = match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Ok(Ok(res)) if res.status().is_success() => Verdict::Allow,
            Ok(Ok(res)) if res.status() == StatusCode::UNAUTHORIZED => Verdict::Invalid,
            Ok(Ok(_)) => Verdict::Deny,
            Ok(Err(e)) => {
                warn!(error = %e, "auth webhook unreachable: denying");
                return None;
            }
            Err(_) => {
                warn!(
                    timeout_ms = self.timeout.as_millis() as u64,
                    "auth webhook timed out: denying"
                );
                return None;
            }
        };
        if !self.cache_for.is_zero() {
            let mut cache = self.lock();
            if cache.len() >= WEBHOOK_CACHE_MAX {
                cache.retain(|_, (until, _)| *until > now);
                if cache.len() >= WEBHOOK_CACHE_MAX {
                    cache.clear();
                }
            }
            cache.insert(key, (now + self.cache_for, verdict));
        }
        Some(verdict)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, (Instant, Verdict)>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    use serde_json::json;

    use crate::auth::testing::*;
    use crate::auth::{Action, Decision};

    fn hook_config(url: &str, cache_secs: u64) -> String {
        format!(
            "enabled = true\n[webhook]\nurl = \"{url}\"\ntimeout_ms = 300\ncache_secs = {cache_secs}\n"
        )
    }

    #[tokio::test]
    async fn webhook_allows_denies_and_sees_the_request() {
        let h = hook().await;
        let a = authorizer(&hook_config(&h.url, 0));
        let client: SocketAddr = "192.0.2.7:5555".parse().expect("addr");
        assert_eq!(
            a.check(Some("allow-1"), Action::Publish, Some("s1"), Some(client))
                .await,
            Decision::Allow
        );
        assert_eq!(
            a.check(Some("nope"), Action::Play, Some("s1"), None).await,
            Decision::Forbidden
        );
        assert_eq!(
            a.check(Some("invalid"), Action::Play, Some("s1"), None)
                .await,
            Decision::InvalidToken
        );
        // No token: the webhook is not asked.
        assert_eq!(
            a.check(None, Action::Play, Some("s1"), None).await,
            Decision::NoToken
        );
        assert_eq!(
            a.check(Some("allow-api"), Action::Admin, None, None).await,
            Decision::Allow
        );
        assert_eq!(h.calls.load(Ordering::SeqCst), 4);
        let bodies = h.bodies.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assert_eq!(
            bodies[0],
            json!({"stream": "s1", "action": "publish", "token": "allow-1", "client": "192.0.2.7:5555"})
        );
        assert_eq!(
            bodies[3],
            json!({"stream": null, "action": "admin", "token": "allow-api", "client": null})
        );
    }

    #[tokio::test]
    async fn webhook_timeout_and_unreachable_deny_and_are_not_cached() {
        let h = hook().await;
        let a = authorizer(&hook_config(&h.url, 60));
        let started = Instant::now();
        assert_eq!(
            check(&a, Some("slow"), Action::Publish, "s").await,
            Decision::InvalidToken
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "timed out at 300 ms"
        );
        assert_eq!(
            check(&a, Some("slow"), Action::Publish, "s").await,
            Decision::InvalidToken
        );
        assert_eq!(h.calls.load(Ordering::SeqCst), 2, "a timeout is not cached");

        // Nothing listens on the port: connection refused denies too.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = closed.local_addr().expect("addr").port();
        drop(closed);
        let a = authorizer(&hook_config(&format!("http://127.0.0.1:{port}/auth"), 60));
        assert_eq!(
            check(&a, Some("allow-1"), Action::Publish, "s").await,
            Decision::InvalidToken
        );
    }

    #[tokio::test]
    async fn webhook_answers_are_cached_per_token_stream_and_action() {
        let h = hook().await;
        let a = authorizer(&hook_config(&h.url, 1));
        let calls = || h.calls.load(Ordering::SeqCst);
        assert_eq!(
            check(&a, Some("allow-1"), Action::Play, "s").await,
            Decision::Allow
        );
        assert_eq!(
            check(&a, Some("allow-1"), Action::Play, "s").await,
            Decision::Allow
        );
        assert_eq!(calls(), 1, "allow cached");
        assert_eq!(
            check(&a, Some("deny"), Action::Play, "s").await,
            Decision::Forbidden
        );
        assert_eq!(
            check(&a, Some("deny"), Action::Play, "s").await,
            Decision::Forbidden
        );
        assert_eq!(calls(), 2, "deny cached");
        check(&a, Some("allow-1"), Action::Publish, "s").await;
        check(&a, Some("allow-1"), Action::Play, "t").await;
        check(&a, Some("allow-2"), Action::Play, "s").await;
        assert_eq!(calls(), 5, "another action, stream or token asks again");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        check(&a, Some("allow-1"), Action::Play, "s").await;
        assert_eq!(calls(), 6, "asked again after cache_secs");
    }
}
