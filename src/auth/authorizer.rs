//! The decision: which configured method, if any, grants a token a right. The local checks
//! (admin tokens, stream rules, JWT signatures) come first, so the webhook is asked only about
//! what none of them grants.

use std::net::SocketAddr;

use serde::Serialize;

use super::jwt::Jwt;
use super::token::{token_hash, StaticTokens};
use super::webhook::{Verdict, Webhook};
use super::AuthError;
use crate::config::AuthConfig;

/// A right a request needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Publish,
    Play,
    Admin,
}

impl Action {
    /// The right as JWT `rights` claims and refusal messages name it.
    pub(super) fn name(self) -> &'static str {
        match self {
            Action::Publish => "publish",
            Action::Play => "play",
            Action::Admin => "admin",
        }
    }
}

/// The outcome of a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// No bearer token was sent: 401.
    NoToken,
    /// A token nobody recognised (unknown, expired, badly signed): 401 `invalid_token`.
    InvalidToken,
    /// A recognised token without this right: 403.
    Forbidden,
}

/// Decides requests from an [`AuthConfig`].
pub struct Authorizer {
    enabled: bool,
    tokens: StaticTokens,
    jwt: Option<Jwt>,
    webhook: Option<Webhook>,
}

impl Authorizer {
    /// Checks and loads the configuration (reads the RS256 key file); the error names the key.
    pub fn new(c: &AuthConfig) -> Result<Authorizer, AuthError> {
        c.validate()?;
        Ok(Authorizer {
            enabled: c.enabled,
            tokens: StaticTokens::new(c),
            jwt: Jwt::new(&c.jwt)?,
            webhook: Webhook::new(&c.webhook)?,
        })
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// May `token` do `action` on `stream` (`None`: the API, not a stream)?
    /// `client` is passed to the webhook.
    pub async fn check(
        &self,
        token: Option<&str>,
        action: Action,
        stream: Option<&str>,
        client: Option<SocketAddr>,
    ) -> Decision {
        if !self.enabled {
            return Decision::Allow;
        }
        let rule = stream.and_then(|s| self.tokens.rule(s));
        if action == Action::Play && rule.is_some_and(|r| r.public_play) {
            return Decision::Allow;
        }
        let Some(token) = token else {
            return Decision::NoToken;
        };
        let hash = token_hash(token);
        if self.tokens.is_admin(&hash) {
            return Decision::Allow;
        }
        if rule.is_some_and(|r| r.grants(action, &hash)) {
            return Decision::Allow;
        }
        // A token some rule knows is valid, just not here: 403 rather than 401.
        let mut known = self.tokens.knows(&hash);
        if let Some(claims) = self.jwt.as_ref().and_then(|j| j.verify(token)) {
            if claims.grants(action, stream) {
                return Decision::Allow;
            }
            known = true;
        }
        if let Some(w) = &self.webhook {
            match w.ask(&hash, token, stream, action, client).await {
                Some(Verdict::Allow) => return Decision::Allow,
                Some(Verdict::Deny) => known = true,
                Some(Verdict::Invalid) | None => {}
            }
        }
        if known {
            Decision::Forbidden
        } else {
            Decision::InvalidToken
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use serde_json::json;

    use super::*;
    use crate::auth::testing::*;

    #[tokio::test]
    async fn auth_off_allows_everything() {
        let a = authorizer("");
        assert!(!a.enabled());
        assert_eq!(check(&a, None, Action::Publish, "x").await, Decision::Allow);
        assert_eq!(
            a.check(None, Action::Admin, None, None).await,
            Decision::Allow
        );
    }

    #[tokio::test]
    async fn static_tokens_per_pattern() {
        let a = authorizer(STATIC);
        use Action::*;
        use Decision::*;
        for (token, action, stream, expected) in [
            (Some("teacher"), Publish, "class-1", Allow),
            (Some("student"), Play, "class-1", Allow),
            // Separate rights: a play token cannot publish, a publish token cannot play.
            (Some("student"), Publish, "class-1", Forbidden),
            (Some("teacher"), Play, "class-1", Forbidden),
            // The first matching rule wins: `class-?` is shadowed by `class-*`.
            (Some("shadowed"), Publish, "class-1", Forbidden),
            // A known token on a stream its rule does not cover.
            (Some("teacher"), Publish, "lobby", Forbidden),
            (Some("teacher"), Publish, "unmatched", Forbidden),
            (Some("unknown"), Publish, "class-1", InvalidToken),
            (None, Publish, "class-1", NoToken),
            (None, Play, "class-1", NoToken),
            (Some("teacher"), Admin, "class-1", Forbidden),
        ] {
            assert_eq!(
                check(&a, token, action, stream).await,
                expected,
                "{token:?} {action:?} {stream}"
            );
        }
        assert_eq!(a.check(Some("teacher"), Admin, None, None).await, Forbidden);
    }

    #[tokio::test]
    async fn public_play_needs_no_token_but_publishing_does() {
        let a = authorizer(STATIC);
        assert_eq!(
            check(&a, None, Action::Play, "lobby").await,
            Decision::Allow
        );
        assert_eq!(
            check(&a, Some("anything"), Action::Play, "lobby").await,
            Decision::Allow
        );
        assert_eq!(
            check(&a, None, Action::Publish, "lobby").await,
            Decision::NoToken
        );
        assert_eq!(
            check(&a, Some("host"), Action::Publish, "lobby").await,
            Decision::Allow
        );
    }

    #[tokio::test]
    async fn admin_tokens_have_every_right() {
        let a = authorizer(STATIC);
        for action in [Action::Publish, Action::Play, Action::Admin] {
            for stream in ["class-1", "lobby", "no-rule-matches"] {
                assert_eq!(
                    check(&a, Some("root-token"), action, stream).await,
                    Decision::Allow
                );
            }
        }
        assert_eq!(
            a.check(Some("root-token"), Action::Admin, None, None).await,
            Decision::Allow
        );
        assert_eq!(
            a.check(None, Action::Admin, None, None).await,
            Decision::NoToken
        );
        assert_eq!(
            a.check(Some("root-token-"), Action::Admin, None, None)
                .await,
            Decision::InvalidToken
        );
    }

    #[tokio::test]
    async fn order_admin_then_rules_then_jwt_then_webhook() {
        let h = hook().await;
        let a = authorizer(&format!(
            "{STATIC}\n[jwt]\nhs256_secret = \"{SECRET}\"\n[webhook]\nurl = \"{}\"\ncache_secs = 0\n",
            h.url
        ));
        // Static and JWT grants never reach the webhook.
        assert_eq!(
            check(&a, Some("root-token"), Action::Publish, "x").await,
            Decision::Allow
        );
        assert_eq!(
            check(&a, Some("teacher"), Action::Publish, "class-1").await,
            Decision::Allow
        );
        let t = hs256(
            json!({"exp": now() + 60, "streams": ["x"], "rights": ["play"]}),
            SECRET,
        );
        assert_eq!(
            check(&a, Some(&t), Action::Play, "x").await,
            Decision::Allow
        );
        assert_eq!(h.calls.load(Ordering::SeqCst), 0);
        // What they do not grant, the webhook still may.
        assert_eq!(
            check(&a, Some("allow-x"), Action::Publish, "class-1").await,
            Decision::Allow
        );
        assert_eq!(
            check(&a, Some(&t), Action::Publish, "x").await,
            Decision::Forbidden
        );
        assert_eq!(h.calls.load(Ordering::SeqCst), 2);
    }
}
