//! Who may publish, play, control a session or use the API: bearer tokens (RFC 9725 §4.7,
//! RFC 6750) checked by static tokens per stream pattern, JWTs (HS256/RS256) and an HTTP webhook.
//!
//! One middleware, [`require`], maps each request to the right it needs and asks the
//! [`Authorizer`]; the handlers behind it never see a request that was not allowed. Tokens are
//! kept only as SHA-256 hashes, compared in constant time, and never logged: the one place a token
//! leaves the process is the webhook's request body, which exists to carry it.
//!
//! Order of the checks, the first that grants wins: admin token → the first stream rule whose
//! pattern matches (its tokens, or `public_play`) → JWT → webhook.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::digest;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::http::error::ApiError;
use crate::hub::Hub;
use crate::session::SessionId;

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

impl AuthConfig {
    /// Checks the section as [`Authorizer::new`] would; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        Authorizer::new(self).map(drop)
    }
}

/// A right a request needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Publish,
    Play,
    Admin,
}

impl Action {
    fn name(self) -> &'static str {
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

/// SHA-256 of a token: how tokens are kept and compared.
pub type TokenHash = [u8; 32];

pub fn token_hash(token: &str) -> TokenHash {
    let d = digest::digest(&digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Constant-time equality of two hashes: the time taken says nothing about how much matched.
fn same(a: &TokenHash, b: &TokenHash) -> bool {
    verify_slices_are_equal(a, b).is_ok()
}

/// Whether `set` holds `h`, comparing with every member so the time does not say which matched.
fn holds(set: &[TokenHash], h: &TokenHash) -> bool {
    set.iter().fold(false, |found, t| same(t, h) | found)
}

/// Whether stream `name` matches glob `pattern` (`*`: any run, `?`: one character).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            // Let the last `*` swallow one more character and retry.
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// A glob may only use what stream names use, plus `*` and `?`, so a typo cannot silently
/// match nothing.
fn check_glob(pattern: &str) -> Result<(), String> {
    let ok = !pattern.is_empty()
        && pattern.len() <= 128
        && pattern
            .bytes()
            .all(|b| crate::hub::is_stream_name_byte(b) || b == b'*' || b == b'?');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{pattern:?} is not a stream pattern: use letters, digits, '-', '_', '.', '*' and '?'"
        ))
    }
}

/// Hashes a list of tokens after checking each could be sent in an `Authorization` header.
fn hash_tokens(key: &str, tokens: &[String]) -> Result<Vec<TokenHash>, String> {
    tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()) {
                Err(format!(
                    "{key}[{i}]: a token must be non-empty visible ASCII without spaces"
                ))
            } else {
                Ok(token_hash(t))
            }
        })
        .collect()
}

struct Rule {
    pattern: String,
    publish: Vec<TokenHash>,
    play: Vec<TokenHash>,
    public_play: bool,
}

/// The claims read from a JWT besides the registered ones jsonwebtoken checks.
#[derive(Deserialize)]
struct Claims {
    /// Globs of the streams the token is for.
    #[serde(default)]
    streams: Vec<String>,
    /// `publish`, `play`, `admin`.
    #[serde(default)]
    rights: Vec<String>,
}

struct Jwt {
    hs256: Option<DecodingKey>,
    rs256: Option<DecodingKey>,
    issuer: Option<String>,
    audience: Option<String>,
}

/// Smallest HS256 secret accepted: a shorter one can be guessed offline from any token.
const MIN_HS256_SECRET: usize = 32;

impl Jwt {
    fn new(c: &JwtConfig) -> Result<Option<Jwt>, String> {
        if c.hs256_secret.is_none() && c.rs256_public_key.is_none() {
            if c.issuer.is_some() || c.audience.is_some() {
                return Err(
                    "auth.jwt: issuer/audience need hs256_secret or rs256_public_key".into(),
                );
            }
            return Ok(None);
        }
        let hs256 = match &c.hs256_secret {
            Some(s) if s.len() < MIN_HS256_SECRET => {
                return Err(format!(
                    "auth.jwt.hs256_secret: use at least {MIN_HS256_SECRET} random bytes \
                     (e.g. the output of `openssl rand -base64 32`)"
                ))
            }
            Some(s) => Some(DecodingKey::from_secret(s.as_bytes())),
            None => None,
        };
        let rs256 = match &c.rs256_public_key {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("auth.jwt.rs256_public_key: cannot read {path:?}: {e}"))?;
                let key = DecodingKey::from_rsa_pem(&pem).map_err(|e| {
                    format!("auth.jwt.rs256_public_key: {path:?} is not a PEM RSA public key: {e}")
                })?;
                Some(key)
            }
            None => None,
        };
        Ok(Some(Jwt {
            hs256,
            rs256,
            issuer: c.issuer.clone(),
            audience: c.audience.clone(),
        }))
    }

    /// The token's claims if it is a JWT signed by a configured key, unexpired, with the
    /// configured issuer and audience.
    fn verify(&self, token: &str) -> Option<Claims> {
        // Not three dot-separated parts: a static or webhook token, not a JWT.
        if token.bytes().filter(|&b| b == b'.').count() != 2 {
            return None;
        }
        let header = jsonwebtoken::decode_header(token).ok()?;
        let key = match header.alg {
            Algorithm::HS256 => self.hs256.as_ref()?,
            Algorithm::RS256 => self.rs256.as_ref()?,
            _ => return None,
        };
        let mut v = Validation::new(header.alg);
        v.set_required_spec_claims(&["exp"]);
        match &self.issuer {
            Some(iss) => v.set_issuer(&[iss]),
            None => v.iss = None,
        }
        match &self.audience {
            Some(aud) => v.set_audience(&[aud]),
            None => v.validate_aud = false,
        }
        match jsonwebtoken::decode::<Claims>(token, key, &v) {
            Ok(data) => Some(data.claims),
            Err(e) => {
                debug!(reason = %e.kind_name(), "JWT rejected");
                None
            }
        }
    }
}

trait KindName {
    fn kind_name(&self) -> &'static str;
}

impl KindName for jsonwebtoken::errors::Error {
    /// A short reason for logs; the error's Display could quote token contents.
    fn kind_name(&self) -> &'static str {
        use jsonwebtoken::errors::ErrorKind as K;
        match self.kind() {
            K::ExpiredSignature => "expired",
            K::InvalidSignature => "bad signature",
            K::InvalidIssuer => "wrong issuer",
            K::InvalidAudience => "wrong audience",
            K::MissingRequiredClaim(_) => "missing claim",
            K::ImmatureSignature => "not yet valid",
            K::InvalidAlgorithm => "wrong algorithm",
            _ => "malformed",
        }
    }
}

impl Claims {
    fn grants(&self, action: Action, stream: Option<&str>) -> bool {
        let has = |r: &str| self.rights.iter().any(|x| x == r);
        if has("admin") {
            return true;
        }
        match (action, stream) {
            (Action::Publish | Action::Play, Some(s)) => {
                has(action.name()) && self.streams.iter().any(|g| glob_match(g, s))
            }
            _ => false,
        }
    }
}

/// What the webhook said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
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

struct Webhook {
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
    fn new(c: &WebhookConfig) -> Result<Option<Webhook>, String> {
        let Some(url) = &c.url else {
            return Ok(None);
        };
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| format!("auth.webhook.url: {url:?} is not a URL: {e}"))?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(format!(
                "auth.webhook.url: {url:?} must be an http://host[:port]/path URL"
            ));
        }
        if c.timeout_ms == 0 {
            return Err("auth.webhook.timeout_ms: must be at least 1".into());
        }
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
    async fn ask(
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

/// Decides requests from an [`AuthConfig`].
pub struct Authorizer {
    enabled: bool,
    admin: Vec<TokenHash>,
    rules: Vec<Rule>,
    jwt: Option<Jwt>,
    webhook: Option<Webhook>,
}

impl Authorizer {
    /// Checks and loads the configuration (reads the RS256 key file); the message names the key.
    pub fn new(c: &AuthConfig) -> Result<Authorizer, String> {
        let admin = hash_tokens("auth.admin_tokens", &c.admin_tokens)?;
        let rules = c
            .streams
            .iter()
            .enumerate()
            .map(|(i, r)| {
                check_glob(&r.pattern).map_err(|e| format!("auth.streams[{i}].pattern: {e}"))?;
                Ok(Rule {
                    pattern: r.pattern.clone(),
                    publish: hash_tokens(
                        &format!("auth.streams[{i}].publish_tokens"),
                        &r.publish_tokens,
                    )?,
                    play: hash_tokens(&format!("auth.streams[{i}].play_tokens"), &r.play_tokens)?,
                    public_play: r.public_play,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let jwt = Jwt::new(&c.jwt)?;
        let webhook = Webhook::new(&c.webhook)?;
        if c.enabled && admin.is_empty() && rules.is_empty() && jwt.is_none() && webhook.is_none() {
            return Err(
                "auth.enabled: nothing could ever be allowed; configure admin_tokens, \
                 [[auth.streams]], [auth.jwt] or [auth.webhook]"
                    .into(),
            );
        }
        Ok(Authorizer {
            enabled: c.enabled,
            admin,
            rules,
            jwt,
            webhook,
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
        let rule = stream.and_then(|s| self.rules.iter().find(|r| glob_match(&r.pattern, s)));
        if action == Action::Play && rule.is_some_and(|r| r.public_play) {
            return Decision::Allow;
        }
        let Some(token) = token else {
            return Decision::NoToken;
        };
        let hash = token_hash(token);
        if holds(&self.admin, &hash) {
            return Decision::Allow;
        }
        if let Some(rule) = rule {
            let granted = match action {
                Action::Publish => holds(&rule.publish, &hash),
                Action::Play => holds(&rule.play, &hash),
                Action::Admin => false,
            };
            if granted {
                return Decision::Allow;
            }
        }
        // A token some rule knows is valid, just not here: 403 rather than 401.
        let mut known = self.rules.iter().fold(false, |k, r| {
            holds(&r.publish, &hash) | holds(&r.play, &hash) | k
        });
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

/// What the middleware needs to decide: the rules, and the sessions' owners.
#[derive(Clone)]
pub struct Guard {
    pub auth: Arc<Authorizer>,
    pub hub: Arc<Hub>,
}

/// Puts [`require`] in front of every route. With auth off the router is returned as it is.
pub fn layer(router: Router, auth: Arc<Authorizer>, hub: Arc<Hub>) -> Router {
    if !auth.enabled() {
        return router;
    }
    router.layer(axum::middleware::from_fn_with_state(
        Guard { auth, hub },
        require,
    ))
}

/// The right a request needs, from its method and path.
#[derive(Debug, PartialEq, Eq)]
enum Need {
    Open,
    /// `/whip/{s}` or `/whep/{s}`: publish or play `s`.
    Endpoint(Action, String),
    /// `/whip/{s}/{id}`, `/whep/{s}/{id}`: the creating token or an admin.
    Session(String),
    /// `/api/*` and anything unknown.
    Admin,
}

fn need(method: &Method, path: &str) -> Need {
    // CORS preflights carry no credentials (Fetch standard), and OPTIONS reveals nothing.
    if method == Method::OPTIONS {
        return Need::Open;
    }
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    match segments.as_slice() {
        ["healthz"] | ["readyz"] | ["metrics"] => Need::Open,
        ["whip", s] => Need::Endpoint(Action::Publish, percent_decode(s)),
        ["whep", s] => Need::Endpoint(Action::Play, percent_decode(s)),
        ["whip" | "whep", _, id] => Need::Session(percent_decode(id)),
        // Everything else, `/api/*` included, is for admins: a route added later is protected
        // until someone decides otherwise.
        _ => Need::Admin,
    }
}

/// The stream name as the router's `Path` extractor will see it, so a pattern is matched against
/// the same name the handler serves (`%61` is `a` to both).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive, RFC 9110 §11.1).
fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_string())
}

/// The middleware: lets a request through only with the right it needs, and records the hash of
/// the token that created a session so only that token (or an admin) may control it.
pub async fn require(State(guard): State<Guard>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let need = need(&method, req.uri().path());
    let token = bearer(req.headers());
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let auth = &guard.auth;
    match need {
        Need::Open => next.run(req).await,
        Need::Admin => {
            match auth
                .check(token.as_deref(), Action::Admin, None, client)
                .await
            {
                Decision::Allow => next.run(req).await,
                d => deny(d, "admin access"),
            }
        }
        Need::Endpoint(action, stream) => {
            match auth
                .check(token.as_deref(), action, Some(&stream), client)
                .await
            {
                Decision::Allow => {}
                d => {
                    let what = format!("{} on stream {stream:?}", action.name());
                    return deny(d, &what);
                }
            }
            let res = next.run(req).await;
            if method == Method::POST && res.status() == StatusCode::CREATED {
                if let (Some(t), Some(id)) = (&token, created_session(&res)) {
                    guard.hub.set_owner(id, token_hash(t));
                }
            }
            res
        }
        Need::Session(id) => {
            let entry = id
                .parse::<SessionId>()
                .ok()
                .filter(|parsed| parsed.to_string() == id)
                .and_then(|id| guard.hub.session(id));
            let decision = match (&entry, &token) {
                // Nothing to protect: the handler answers 404.
                (None, Some(_)) => Decision::Allow,
                (None, None) => Decision::NoToken,
                // Created without a token (public play): as open as its creation was.
                (Some(e), _) if e.owner.is_none() => Decision::Allow,
                (Some(e), Some(t)) if e.owner.is_some_and(|o| same(&o, &token_hash(t))) => {
                    Decision::Allow
                }
                (Some(e), t) => {
                    auth.check(t.as_deref(), Action::Admin, Some(&e.stream), client)
                        .await
                }
            };
            match decision {
                Decision::Allow => next.run(req).await,
                d => deny(
                    d,
                    "control of this session: only the token that created it, or an admin token",
                ),
            }
        }
    }
}

/// The session a 201 created, from its `Location` (`/whip/{stream}/{id}`).
fn created_session(res: &Response) -> Option<SessionId> {
    let location = res.headers().get(header::LOCATION)?.to_str().ok()?;
    let id = location.rsplit('/').next()?;
    id.parse().ok()
}

/// A 401 or 403 through the project's error mapping, readable by browsers on other origins:
/// this layer sits outside the router's CORS middleware.
fn deny(d: Decision, what: &str) -> Response {
    debug!(right = what, decision = ?d, "request denied");
    let err = match d {
        Decision::Forbidden => ApiError::Forbidden(what.to_string()),
        Decision::InvalidToken => ApiError::Unauthorized {
            invalid_token: true,
        },
        Decision::NoToken | Decision::Allow => ApiError::Unauthorized {
            invalid_token: false,
        },
    };
    err.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::routing::{any, post};
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::{json, Value};
    use tower::ServiceExt;

    use crate::session::Role;

    const SECRET: &str = "0123456789abcdef0123456789abcdef-hs256";

    fn parse(text: &str) -> AuthConfig {
        toml::from_str(text).expect("auth config parses")
    }

    fn authorizer(text: &str) -> Authorizer {
        Authorizer::new(&parse(text)).expect("valid auth config")
    }

    const STATIC: &str = r#"
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

    async fn check(a: &Authorizer, token: Option<&str>, action: Action, stream: &str) -> Decision {
        a.check(token, action, Some(stream), None).await
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn hs256(claims: Value, secret: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("encode JWT")
    }

    #[test]
    fn globs_match_like_shell_patterns() {
        for (p, n, m) in [
            ("class-*", "class-1", true),
            ("class-*", "class-", true),
            ("class-*", "clas-1", false),
            ("class-?", "class-1", true),
            ("class-?", "class-12", false),
            ("*", "anything", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("*.live", "event.live", true),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("Exact", "exact", false),
        ] {
            assert_eq!(glob_match(p, n), m, "{p:?} vs {n:?}");
        }
    }

    #[test]
    fn invalid_settings_are_named() {
        let err = |text: &str| Authorizer::new(&parse(text)).err().expect("rejected");
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
    async fn hs256_jwts() {
        let a = authorizer(&format!(
            "enabled = true\n[jwt]\nhs256_secret = \"{SECRET}\"\n"
        ));
        let good =
            json!({"exp": now() + 600, "streams": ["class-*"], "rights": ["publish", "play"]});
        let t = hs256(good.clone(), SECRET);
        assert_eq!(
            check(&a, Some(&t), Action::Publish, "class-7").await,
            Decision::Allow
        );
        assert_eq!(
            check(&a, Some(&t), Action::Play, "class-7").await,
            Decision::Allow
        );
        // Valid, but for other streams or without the right: 403.
        assert_eq!(
            check(&a, Some(&t), Action::Publish, "staff").await,
            Decision::Forbidden
        );
        assert_eq!(
            a.check(Some(&t), Action::Admin, None, None).await,
            Decision::Forbidden
        );
        let play_only = hs256(
            json!({"exp": now() + 600, "streams": ["*"], "rights": ["play"]}),
            SECRET,
        );
        assert_eq!(
            check(&a, Some(&play_only), Action::Publish, "x").await,
            Decision::Forbidden
        );
        assert_eq!(
            check(&a, Some(&play_only), Action::Play, "x").await,
            Decision::Allow
        );
        // Expired (beyond the leeway), no exp, wrong secret: not valid at all.
        let expired = hs256(
            json!({"exp": now() - 3600, "streams": ["*"], "rights": ["publish"]}),
            SECRET,
        );
        assert_eq!(
            check(&a, Some(&expired), Action::Publish, "x").await,
            Decision::InvalidToken
        );
        let no_exp = hs256(json!({"streams": ["*"], "rights": ["publish"]}), SECRET);
        assert_eq!(
            check(&a, Some(&no_exp), Action::Publish, "x").await,
            Decision::InvalidToken
        );
        let forged = hs256(good, "another-secret-of-32-bytes-or-more!!");
        assert_eq!(
            check(&a, Some(&forged), Action::Publish, "class-7").await,
            Decision::InvalidToken
        );
        let admin = hs256(json!({"exp": now() + 600, "rights": ["admin"]}), SECRET);
        assert_eq!(
            a.check(Some(&admin), Action::Admin, None, None).await,
            Decision::Allow
        );
        assert_eq!(
            check(&a, Some(&admin), Action::Publish, "any").await,
            Decision::Allow
        );
        assert_eq!(
            check(&a, Some("not.a.jwt"), Action::Play, "x").await,
            Decision::InvalidToken
        );
    }

    #[tokio::test]
    async fn jwt_issuer_and_audience() {
        let a = authorizer(&format!(
            "enabled = true\n[jwt]\nhs256_secret = \"{SECRET}\"\nissuer = \"https://auth.example\"\naudience = \"wishcast\"\n"
        ));
        let claims = |iss: &str, aud: &str| {
            hs256(
                json!({"exp": now() + 600, "iss": iss, "aud": aud, "streams": ["*"], "rights": ["play"]}),
                SECRET,
            )
        };
        let ok = claims("https://auth.example", "wishcast");
        assert_eq!(
            check(&a, Some(&ok), Action::Play, "s").await,
            Decision::Allow
        );
        let iss = claims("https://evil.example", "wishcast");
        assert_eq!(
            check(&a, Some(&iss), Action::Play, "s").await,
            Decision::InvalidToken
        );
        let aud = claims("https://auth.example", "other");
        assert_eq!(
            check(&a, Some(&aud), Action::Play, "s").await,
            Decision::InvalidToken
        );
    }

    /// A PEM file that is removed when dropped.
    struct TempFile(std::path::PathBuf);

    impl TempFile {
        fn new(contents: &str) -> TempFile {
            let path = std::env::temp_dir()
                .join(format!("wishcast-auth-test-{}.pem", rand::random::<u64>()));
            std::fs::write(&path, contents).expect("write temp file");
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[tokio::test]
    async fn rs256_jwts_with_a_generated_key() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("RSA key");
        let public = TempFile::new(&key.public_key_pem());
        let a = authorizer(&format!(
            "enabled = true\n[jwt]\nrs256_public_key = {:?}\n",
            public.0.display().to_string()
        ));
        let signing = EncodingKey::from_rsa_pem(key.serialize_pem().as_bytes()).expect("RSA pem");
        let claims = json!({"exp": now() + 600, "streams": ["cam-?"], "rights": ["publish"]});
        let t = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &signing)
            .expect("sign RS256");
        assert_eq!(
            check(&a, Some(&t), Action::Publish, "cam-1").await,
            Decision::Allow
        );
        assert_eq!(
            check(&a, Some(&t), Action::Publish, "cam-10").await,
            Decision::Forbidden
        );
        // Algorithm confusion: the public key used as an HMAC secret is not accepted.
        let confused = hs256(claims, &key.public_key_pem());
        assert_eq!(
            check(&a, Some(&confused), Action::Publish, "cam-1").await,
            Decision::InvalidToken
        );
        // Another key's signature.
        let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("RSA key");
        let other = EncodingKey::from_rsa_pem(other.serialize_pem().as_bytes()).expect("pem");
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::RS256),
            &json!({"exp": now() + 600, "streams": ["*"], "rights": ["publish"]}),
            &other,
        )
        .expect("sign");
        assert_eq!(
            check(&a, Some(&t), Action::Publish, "cam-1").await,
            Decision::InvalidToken
        );
        // A file that is not a key is named at load time.
        let junk = TempFile::new("not a key");
        let e = Authorizer::new(&parse(&format!(
            "[jwt]\nrs256_public_key = {:?}\n",
            junk.0.display().to_string()
        )))
        .err()
        .expect("junk key rejected");
        assert!(e.contains("auth.jwt.rs256_public_key"), "{e}");
    }

    /// A webhook on loopback: `allow-*` tokens get 204, `invalid` 401, `slow` an answer after
    /// 2 s, everything else 403. It counts calls and keeps the bodies.
    struct Hook {
        url: String,
        calls: Arc<AtomicUsize>,
        bodies: Arc<Mutex<Vec<Value>>>,
    }

    async fn hook() -> Hook {
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

    #[test]
    fn requests_map_to_the_right_they_need() {
        use Need::*;
        let m = |method: Method, path: &str| need(&method, path);
        assert_eq!(
            m(Method::POST, "/whip/s"),
            Endpoint(Action::Publish, "s".into())
        );
        assert_eq!(
            m(Method::GET, "/whip/s"),
            Endpoint(Action::Publish, "s".into())
        );
        assert_eq!(
            m(Method::HEAD, "/whep/s"),
            Endpoint(Action::Play, "s".into())
        );
        assert_eq!(m(Method::OPTIONS, "/whip/s"), Open);
        assert_eq!(m(Method::OPTIONS, "/whep/s/abc"), Open);
        assert_eq!(m(Method::DELETE, "/whep/s/abc"), Session("abc".into()));
        assert_eq!(m(Method::PATCH, "/whip/s/abc"), Session("abc".into()));
        assert_eq!(m(Method::GET, "/api/streams"), Admin);
        assert_eq!(m(Method::GET, "/api"), Admin);
        assert_eq!(m(Method::GET, "/healthz"), Open);
        assert_eq!(m(Method::GET, "/readyz"), Open);
        assert_eq!(m(Method::GET, "/metrics"), Open);
        assert_eq!(m(Method::GET, "/"), Admin);
        assert_eq!(m(Method::GET, "/whip/a/b/c"), Admin);
        // Matched against the decoded name the handler serves.
        assert_eq!(
            m(Method::POST, "/whip/%61bcd"),
            Endpoint(Action::Publish, "abcd".into())
        );
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }

    #[test]
    fn bearer_tokens_are_read_from_authorization() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(
                header::AUTHORIZATION,
                axum::http::HeaderValue::from_str(v).expect("value"),
            );
            bearer(&m)
        };
        assert_eq!(h("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(h("bearer  abc ").as_deref(), Some("abc"));
        assert_eq!(h("Basic abc"), None);
        assert_eq!(h("Bearer "), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }

    /// The middleware on a router standing in for the gateway's: POST registers a session in the
    /// hub and answers 201 with its Location; everything else answers 204.
    fn app(auth: &str) -> (Router, Arc<Hub>) {
        let hub = Arc::new(Hub::new(1));
        let h = hub.clone();
        let create = move |axum::extract::Path(stream): axum::extract::Path<String>,
                           method: Method| {
            let h = h.clone();
            async move {
                if method != Method::POST {
                    return StatusCode::NO_CONTENT.into_response();
                }
                let id = SessionId::random();
                let none = (Vec::new(), Vec::new());
                // Stand-in: publishers and viewers alike register as publishers of their own
                // stream name, which is all ownership needs.
                let name = format!("{stream}-{id}");
                if h.register(id, &name, Role::Publish, &Default::default(), none)
                    .is_err()
                {
                    return StatusCode::CONFLICT.into_response();
                }
                let location = format!("/whip/{stream}/{id}");
                (StatusCode::CREATED, [(header::LOCATION, location)]).into_response()
            }
        };
        let router = Router::new()
            .route("/whip/{stream}", any(create.clone()))
            .route("/whep/{stream}", any(create))
            .route(
                "/whip/{stream}/{id}",
                any(|| async { StatusCode::NO_CONTENT }),
            )
            .route("/api/streams", any(|| async { StatusCode::OK }))
            .route("/healthz", any(|| async { StatusCode::OK }));
        let auth = Arc::new(authorizer(auth));
        // CORS around auth, as the gateway stacks them.
        let app =
            layer(router, auth, hub.clone()).layer(axum::middleware::from_fn(crate::http::cors));
        (app, hub)
    }

    async fn send(app: &Router, method: Method, path: &str, token: Option<&str>) -> Response {
        let mut req = axum::http::Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req.body(axum::body::Body::empty()).expect("request");
        app.clone().oneshot(req).await.expect("infallible")
    }

    async fn problem(res: Response) -> Value {
        let body = axum::body::to_bytes(res.into_body(), 1 << 16)
            .await
            .expect("body");
        serde_json::from_slice(&body).expect("problem+json")
    }

    #[tokio::test]
    async fn middleware_statuses_and_challenges() {
        let (app, _) = app(STATIC);
        let r = send(&app, Method::POST, "/whip/class-1", None).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.headers()
                .get(header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok()),
            Some("Bearer realm=\"wishcast\"")
        );
        assert_eq!(
            r.headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("application/problem+json")
        );
        assert_eq!(
            r.headers()
                .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
                .and_then(|v| v.to_str().ok()),
            Some("*")
        );
        let p = problem(r).await;
        assert_eq!(p["status"], 401);
        assert!(
            p["detail"].as_str().unwrap_or_default().contains("Bearer"),
            "{p}"
        );

        let r = send(&app, Method::POST, "/whip/class-1", Some("wrong")).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.headers()
                .get(header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok()),
            Some("Bearer realm=\"wishcast\", error=\"invalid_token\"")
        );
        let r = send(&app, Method::POST, "/whip/class-1", Some("student")).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let p = problem(r).await;
        assert!(
            p["detail"].as_str().unwrap_or_default().contains("publish"),
            "{p}"
        );

        assert_eq!(
            send(&app, Method::POST, "/whip/class-1", Some("teacher"))
                .await
                .status(),
            StatusCode::CREATED
        );
        assert_eq!(
            send(&app, Method::GET, "/whip/class-1", Some("teacher"))
                .await
                .status(),
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            send(&app, Method::HEAD, "/whip/class-1", None)
                .await
                .status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            send(&app, Method::OPTIONS, "/whip/class-1", None)
                .await
                .status(),
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            send(&app, Method::POST, "/whep/lobby", None).await.status(),
            StatusCode::CREATED
        );
        assert_eq!(
            send(&app, Method::GET, "/api/streams", None).await.status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            send(&app, Method::GET, "/api/streams", Some("teacher"))
                .await
                .status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            send(&app, Method::GET, "/api/streams", Some("root-token"))
                .await
                .status(),
            StatusCode::OK
        );
        assert_eq!(
            send(&app, Method::GET, "/healthz", None).await.status(),
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn sessions_answer_only_their_creator_or_an_admin() {
        let (app, hub) = app(&format!(
            "{STATIC}\n[[streams]]\npattern = \"*\"\npublish_tokens = [\"other\"]\n"
        ));
        let r = send(&app, Method::POST, "/whip/class-1", Some("teacher")).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let location = r
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .expect("Location")
            .to_string();
        let id: SessionId = location
            .rsplit('/')
            .next()
            .and_then(|s| s.parse().ok())
            .expect("id");
        assert_eq!(
            hub.session(id).and_then(|s| s.owner),
            Some(token_hash("teacher")),
            "the creator's token hash is recorded"
        );
        for method in [Method::PATCH, Method::DELETE, Method::GET] {
            let status = |t| {
                let (app, location, method) = (app.clone(), location.clone(), method.clone());
                async move { send(&app, method, &location, t).await.status() }
            };
            assert_eq!(status(None).await, StatusCode::UNAUTHORIZED, "{method}");
            assert_eq!(
                status(Some("student")).await,
                StatusCode::FORBIDDEN,
                "{method}"
            );
            assert_eq!(
                status(Some("other")).await,
                StatusCode::FORBIDDEN,
                "{method}"
            );
            assert_eq!(
                status(Some("garbage")).await,
                StatusCode::UNAUTHORIZED,
                "{method}"
            );
            assert_eq!(
                status(Some("teacher")).await,
                StatusCode::NO_CONTENT,
                "{method}"
            );
            assert_eq!(
                status(Some("root-token")).await,
                StatusCode::NO_CONTENT,
                "{method}"
            );
        }
        assert_eq!(
            send(&app, Method::OPTIONS, &location, None).await.status(),
            StatusCode::NO_CONTENT
        );
        // Unknown sessions: 401 without a token, else on to the handler (404 in the gateway).
        let unknown = format!("/whip/class-1/{}", SessionId::random());
        assert_eq!(
            send(&app, Method::DELETE, &unknown, None).await.status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            send(&app, Method::DELETE, &unknown, Some("teacher"))
                .await
                .status(),
            StatusCode::NO_CONTENT
        );
        // A public viewer's session, created without a token, is as open as its creation.
        let r = send(&app, Method::POST, "/whep/lobby", None).await;
        let location = r
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .expect("Location")
            .to_string();
        assert_eq!(
            send(&app, Method::DELETE, &location, None).await.status(),
            StatusCode::NO_CONTENT
        );
    }

    #[tokio::test]
    async fn auth_off_adds_no_layer() {
        let (app, hub) = app("");
        let r = send(&app, Method::POST, "/whip/x", None).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        assert!(hub.lock().sessions.values().all(|s| s.owner.is_none()));
        assert_eq!(
            send(&app, Method::GET, "/api/streams", None).await.status(),
            StatusCode::OK
        );
    }
}
