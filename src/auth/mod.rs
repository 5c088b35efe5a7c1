//! Who may publish, play, control a session or use the API: bearer tokens (RFC 9725 §4.7,
//! RFC 6750) checked by static tokens per stream pattern, JWTs (HS256/RS256) and an HTTP webhook.
//!
//! How a request is authorized:
//!
//! 1. [`require`], the one middleware in front of every route, maps the request's method and
//!    path to the right it needs ([`Action`]) and reads its bearer token.
//! 2. The [`Authorizer`] decides. The first check that grants wins: admin token → the first
//!    stream rule whose pattern matches (its tokens, or `public_play`) → JWT → webhook. A token
//!    one of them recognises but that lacks the right is refused with 403, any other with 401.
//! 3. A refusal is answered through [`crate::http::error::ApiError`], the one mapping of errors
//!    to status, `WWW-Authenticate` and problem+json; the handlers behind the middleware never
//!    see a request that was not allowed. A session's requests are allowed to the token that
//!    created it, or an admin.
//!
//! Tokens are kept only as SHA-256 hashes, compared in constant time, and never logged: the one
//! place a token leaves the process is the webhook's request body, which exists to carry it.
//!
//! The `[auth]` section itself, and its checks at start-up, are [`crate::config::AuthConfig`];
//! what it can fail with is [`AuthError`].

mod authorizer;
mod glob;
mod jwt;
mod middleware;
mod token;
mod webhook;

#[cfg(test)]
pub(crate) mod testing;

pub use crate::config::AuthError;
pub use authorizer::{Action, Authorizer, Decision};
pub use glob::glob_match;
pub use middleware::{layer, require, Guard};
pub use token::{token_hash, TokenHash};
