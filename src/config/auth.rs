//! The `[auth]` section: what may be configured, how it is checked, and how it is shown.
//!
//! Everything here is checked when the configuration loads, so a bad setting stops the gateway
//! before it serves anything; [`crate::auth`] builds its rules from a section that passed.

use std::fmt;

use jsonwebtoken::DecodingKey;
use serde::{Deserialize, Serialize};

/// The `[auth]` section. The default is auth off: every route is public, as without the section.
#[derive(Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Require `Authorization: Bearer` on WHIP, WHEP, session and API requests.
    pub enabled: bool,
    /// Tokens with every right: publish and play any stream, control any session, use `/api`.
    #[serde(deserialize_with = "one_or_many")]
    pub admin_tokens: Vec<String>,
    /// Per stream name pattern; the first rule whose pattern matches a stream applies to it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub streams: Vec<StreamRule>,
    pub jwt: JwtConfig,
    pub webhook: WebhookConfig,
}

/// `[[auth.streams]]`: static tokens for the streams whose name matches `pattern`.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StreamRule {
    /// Glob over stream names: `*` any run of characters, `?` one character, others literal.
    pub pattern: String,
    #[serde(default, deserialize_with = "one_or_many")]
    pub publish_tokens: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub play_tokens: Vec<String>,
    /// Anyone may play, with or without a token.
    #[serde(default)]
    pub public_play: bool,
}

/// `[auth.jwt]`: JWTs signed by the operator's backend. Off unless a key is given.
#[derive(Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// Shared secret for HS256 tokens, at least 32 bytes.
    pub hs256_secret: Option<String>,
    /// Path of a PEM RSA public key (PKCS#1 or SubjectPublicKeyInfo) for RS256 tokens.
    pub rs256_public_key: Option<String>,
    /// If set, the token's `iss` must equal it.
    pub issuer: Option<String>,
    /// If set, the token's `aud` must contain it.
    pub audience: Option<String>,
}

/// `[auth.webhook]`: an HTTP service that decides. Off unless `url` is given.
#[derive(Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://host:port/path` receiving `POST` JSON `{stream, action, token, client}`.
    pub url: Option<String>,
    /// A webhook that has not answered within this many milliseconds denies.
    pub timeout_ms: u64,
    /// Seconds an answer (allow or deny) is reused for the same token, stream and action;
    /// 0 asks every time.
    pub cache_secs: u64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            url: None,
            timeout_ms: 2000,
            cache_secs: 10,
        }
    }
}

/// Smallest HS256 secret accepted: a shorter one can be guessed offline from any token.
const MIN_HS256_SECRET: usize = 32;

/// An `[auth]` section the gateway cannot start with. Each message names the key to fix; none
/// shows a token or the JWT secret.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// `list` is the key of the token list, e.g. `auth.streams[0].play_tokens`.
    #[error("{list}[{index}]: a token must be non-empty visible ASCII without spaces")]
    BadToken { list: String, index: usize },
    #[error(
        "auth.streams[{index}].pattern: {pattern:?} is not a stream pattern: \
         use letters, digits, '-', '_', '.', '*' and '?'"
    )]
    BadPattern { index: usize, pattern: String },
    #[error("auth.jwt: issuer/audience need hs256_secret or rs256_public_key")]
    JwtClaimsWithoutKey,
    #[error(
        "auth.jwt.hs256_secret: use at least {} random bytes \
         (e.g. the output of `openssl rand -base64 32`)",
        MIN_HS256_SECRET
    )]
    ShortHs256Secret,
    #[error("auth.jwt.rs256_public_key: cannot read {path:?}: {source}")]
    ReadRs256Key {
        path: String,
        source: std::io::Error,
    },
    #[error("auth.jwt.rs256_public_key: {path:?} is not a PEM RSA public key: {source}")]
    BadRs256Key {
        path: String,
        source: jsonwebtoken::errors::Error,
    },
    #[error("auth.webhook.url: {url:?} is not a URL: {source}")]
    WebhookUrl {
        url: String,
        source: hyper::http::uri::InvalidUri,
    },
    #[error("auth.webhook.url: {url:?} must be an http://host[:port]/path URL")]
    WebhookNotHttp { url: String },
    #[error("auth.webhook.timeout_ms: must be at least 1")]
    WebhookTimeout,
    #[error(
        "auth.enabled: nothing could ever be allowed; configure admin_tokens, \
         [[auth.streams]], [auth.jwt] or [auth.webhook]"
    )]
    NothingAllowed,
}

impl AuthConfig {
    /// Checks the section as the gateway will load it, reading the RS256 key file; the first
    /// problem found is returned.
    pub fn validate(&self) -> Result<(), AuthError> {
        check_tokens("auth.admin_tokens", &self.admin_tokens)?;
        for (index, rule) in self.streams.iter().enumerate() {
            if !is_pattern(&rule.pattern) {
                return Err(AuthError::BadPattern {
                    index,
                    pattern: rule.pattern.clone(),
                });
            }
            check_tokens(
                &format!("auth.streams[{index}].publish_tokens"),
                &rule.publish_tokens,
            )?;
            check_tokens(
                &format!("auth.streams[{index}].play_tokens"),
                &rule.play_tokens,
            )?;
        }
        self.jwt.validate()?;
        self.webhook.validate()?;
        let nothing = self.admin_tokens.is_empty()
            && self.streams.is_empty()
            && !self.jwt.enabled()
            && self.webhook.url.is_none();
        if self.enabled && nothing {
            return Err(AuthError::NothingAllowed);
        }
        Ok(())
    }
}

impl JwtConfig {
    /// Whether JWTs are checked at all: a key is configured.
    pub(crate) fn enabled(&self) -> bool {
        self.hs256_secret.is_some() || self.rs256_public_key.is_some()
    }

    fn validate(&self) -> Result<(), AuthError> {
        if !self.enabled() && (self.issuer.is_some() || self.audience.is_some()) {
            return Err(AuthError::JwtClaimsWithoutKey);
        }
        if self
            .hs256_secret
            .as_ref()
            .is_some_and(|s| s.len() < MIN_HS256_SECRET)
        {
            return Err(AuthError::ShortHs256Secret);
        }
        self.rs256_key().map(drop)
    }

    /// The RS256 key from the file `rs256_public_key` names, if it names one.
    pub(crate) fn rs256_key(&self) -> Result<Option<DecodingKey>, AuthError> {
        let Some(path) = &self.rs256_public_key else {
            return Ok(None);
        };
        let pem = std::fs::read(path).map_err(|source| AuthError::ReadRs256Key {
            path: path.clone(),
            source,
        })?;
        DecodingKey::from_rsa_pem(&pem)
            .map(Some)
            .map_err(|source| AuthError::BadRs256Key {
                path: path.clone(),
                source,
            })
    }
}

impl WebhookConfig {
    fn validate(&self) -> Result<(), AuthError> {
        if self.uri()?.is_some() && self.timeout_ms == 0 {
            return Err(AuthError::WebhookTimeout);
        }
        Ok(())
    }

    /// The webhook's URI, if one is configured: plain `http` with a host, since the webhook
    /// client speaks nothing else.
    pub(crate) fn uri(&self) -> Result<Option<hyper::Uri>, AuthError> {
        let Some(url) = &self.url else {
            return Ok(None);
        };
        let uri: hyper::Uri = url.parse().map_err(|source| AuthError::WebhookUrl {
            url: url.clone(),
            source,
        })?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(AuthError::WebhookNotHttp { url: url.clone() });
        }
        Ok(Some(uri))
    }
}

/// Checks each token of a list could be sent in an `Authorization` header.
fn check_tokens(list: &str, tokens: &[String]) -> Result<(), AuthError> {
    match tokens
        .iter()
        .position(|t| t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()))
    {
        Some(index) => Err(AuthError::BadToken {
            list: list.to_string(),
            index,
        }),
        None => Ok(()),
    }
}

/// Whether `pattern` is a stream pattern: what stream names use
/// ([`crate::session::is_stream_name_byte`]) plus `*` and `?`, so a typo cannot silently match
/// nothing.
fn is_pattern(pattern: &str) -> bool {
    !pattern.is_empty()
        && pattern.len() <= 128
        && pattern
            .bytes()
            .all(|b| crate::session::is_stream_name_byte(b) || b"*?".contains(&b))
}

/// A list of tokens, or one token alone: `WISHCAST_AUTH__ADMIN_TOKENS=secret` is the likely way
/// to write one in the environment, and a type error would quote the secret in the message.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    match OneOrMany::deserialize(d) {
        Ok(OneOrMany::One(t)) => Ok(vec![t]),
        Ok(OneOrMany::Many(v)) => Ok(v),
        Err(_) => Err(serde::de::Error::custom(
            "expected a token or a list of tokens (value not shown)",
        )),
    }
}

/// Debug output of the configuration shows how many secrets there are, never the secrets, so
/// printing the configuration cannot leak a token into a log.
struct Redacted(usize);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} redacted>", self.0)
    }
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("enabled", &self.enabled)
            .field("admin_tokens", &Redacted(self.admin_tokens.len()))
            .field("streams", &self.streams)
            .field("jwt", &self.jwt)
            .field("webhook", &self.webhook)
            .finish()
    }
}

impl fmt::Debug for StreamRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamRule")
            .field("pattern", &self.pattern)
            .field("publish_tokens", &Redacted(self.publish_tokens.len()))
            .field("play_tokens", &Redacted(self.play_tokens.len()))
            .field("public_play", &self.public_play)
            .finish()
    }
}

impl fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtConfig")
            .field(
                "hs256_secret",
                &Redacted(usize::from(self.hs256_secret.is_some())),
            )
            .field("rs256_public_key", &self.rs256_public_key)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry credentials in its query.
        f.debug_struct("WebhookConfig")
            .field("url", &Redacted(usize::from(self.url.is_some())))
            .field("timeout_ms", &self.timeout_ms)
            .field("cache_secs", &self.cache_secs)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::auth::testing::{parse, SECRET, STATIC};

    #[test]
    fn invalid_settings_are_named() {
        let err = |text: &str| parse(text).validate().expect_err("rejected").to_string();
        let e = err("enabled = true\n[[streams]]\npattern = \"class/[1]\"\n");
        assert!(e.contains("auth.streams[0].pattern"), "{e}");
        let e = err("[jwt]\nrs256_public_key = \"/nonexistent/wishcast.pem\"\n");
        assert!(e.contains("auth.jwt.rs256_public_key"), "{e}");
        assert!(e.contains("/nonexistent/wishcast.pem"), "{e}");
        let e = err("[jwt]\nhs256_secret = \"short\"\n");
        assert!(e.contains("auth.jwt.hs256_secret"), "{e}");
        let e = err("[webhook]\nurl = \"https://auth.example.net/check\"\n");
        assert!(e.contains("auth.webhook.url"), "{e}");
        let e = err("enabled = true\n");
        assert!(e.contains("auth.enabled"), "{e}");
        let e = err("admin_tokens = [\"has space\"]\n");
        assert!(e.contains("auth.admin_tokens[0]"), "{e}");
        // Through the whole configuration, as the gateway loads it.
        let e = crate::Config::from_toml_str("[auth.jwt]\nrs256_public_key = \"/nope.pem\"\n")
            .expect_err("bad key path");
        assert!(e.to_string().contains("auth.jwt.rs256_public_key"), "{e}");
    }

    /// Patterns are stream names plus `*` and `?`.
    #[test]
    fn patterns_use_the_stream_name_characters() {
        for b in 0..=127u8 {
            let pattern = char::from(b).to_string();
            let stream_name = crate::session::is_stream_name(&pattern);
            assert_eq!(
                is_pattern(&pattern),
                stream_name || b == b'*' || b == b'?',
                "{pattern:?}"
            );
        }
        assert!(!is_pattern(""));
        assert!(is_pattern(&"a".repeat(128)));
        assert!(!is_pattern(&"a".repeat(129)));
        assert!(!is_pattern("é"));
    }

    #[test]
    fn a_single_token_is_a_list_of_one_and_bad_values_are_not_echoed() {
        let c = parse(
            "admin_tokens = \"only-one\"\n[[streams]]\npattern = \"*\"\nplay_tokens = \"p\"\n",
        );
        assert_eq!(c.admin_tokens, vec!["only-one".to_string()]);
        assert_eq!(c.streams[0].play_tokens, vec!["p".to_string()]);
        let e = crate::Config::load(
            None,
            vec![(
                "WISHCAST_AUTH__ADMIN_TOKENS".to_string(),
                "{ x = 1 }".to_string(),
            )],
        )
        .expect_err("a table is not a token");
        assert!(!e.to_string().contains("x = 1"), "{e}");
        let c = crate::Config::load(
            None,
            vec![
                ("WISHCAST_AUTH__ENABLED".to_string(), "true".to_string()),
                (
                    "WISHCAST_AUTH__ADMIN_TOKENS".to_string(),
                    "env-secret".to_string(),
                ),
            ],
        )
        .expect("one token from the environment");
        assert_eq!(c.auth.admin_tokens, vec!["env-secret".to_string()]);
    }

    #[test]
    fn debug_output_hides_secrets() {
        let c = parse(&format!(
            "{STATIC}\n[jwt]\nhs256_secret = \"{SECRET}\"\n[webhook]\nurl = \"http://h/?key=hook-secret\"\n"
        ));
        let shown = format!("{c:?}");
        for secret in ["root-token", "teacher", "student", SECRET, "hook-secret"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("class-*"), "{shown}");
    }
}
