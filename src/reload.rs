//! Changing the configuration of a running gateway (SIGHUP): bearer tokens and the rest of
//! `[auth]`, `[limits]` (but the shard load thresholds), `[[ice_servers]]` and
//! `http.retry_after_secs` take effect for the next request; sessions already up are not
//! touched.
//!
//! Each request reads the current value once from a [`Live`] cell, so a reload in the middle
//! of a request never mixes two configurations. Everything else (listeners, ports, shards,
//! media, timeouts, TLS, HTTP/3) is fixed when the sockets and shard threads start: a reload
//! that changes it says so in the log and keeps the running value.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tracing::{info, warn};

use crate::auth::{AuthError, Authorizer};
use crate::config::Config;
use crate::http::limits::PostRate;
pub use crate::live::Live;

/// Why a new configuration was not applied; the running one stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("auth: {0}")]
    Auth(#[from] AuthError),
}

/// What a reload changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Live sections whose value changed (`auth`, `limits`, `ice_servers`, `http.retry_after_secs`).
    pub applied: Vec<&'static str>,
    /// Options that differ from the running ones but take a restart (`media.shards`); their
    /// running values are kept.
    pub need_restart: Vec<String>,
}

/// The live parts of a running gateway, read per request by the HTTP layer.
pub struct Reloadable {
    pub config: Arc<Live<Config>>,
    pub auth: Arc<Live<Authorizer>>,
    /// The per-address POST limit; `None` when off.
    pub post_rate: Arc<Live<Option<Arc<PostRate>>>>,
}

impl Reloadable {
    pub fn new(config: Config) -> Result<Reloadable, AuthError> {
        let auth = Authorizer::new(&config.auth)?;
        let rate = post_rate(&config);
        Ok(Reloadable {
            config: Arc::new(Live::new(config)),
            auth: Arc::new(Live::new(auth)),
            post_rate: Arc::new(Live::new(rate)),
        })
    }

    /// Applies the live parts of `new`; see the module docs. On an error nothing changes.
    pub fn reload(&self, new: Config) -> Result<Reloaded, ReloadError> {
        new.validate()?;
        let old = self.config.get();
        let need_restart = fixed_changes(&old, &new);
        let mut applied = Vec::new();
        if json(&old.auth) != json(&new.auth) {
            applied.push("auth");
        }
        if live_limits(&old.limits) != live_limits(&new.limits) {
            applied.push("limits");
        }
        if json(&old.ice_servers) != json(&new.ice_servers) {
            applied.push("ice_servers");
        }
        if old.http.retry_after_secs != new.http.retry_after_secs {
            applied.push("http.retry_after_secs");
        }
        // Built before anything is swapped, so a bad key file leaves the old rules in force.
        let auth = if applied.contains(&"auth") {
            Some(Authorizer::new(&new.auth)?)
        } else {
            None
        };
        let rate_changed = (
            old.limits.posts_per_minute_per_ip,
            old.limits.post_burst_per_ip,
        ) != (
            new.limits.posts_per_minute_per_ip,
            new.limits.post_burst_per_ip,
        );
        let mut merged = (*old).clone();
        merged.auth = new.auth;
        merged.limits = crate::config::LimitsConfig {
            // The shards read these from the configuration they started with.
            max_shard_load: old.limits.max_shard_load,
            shed_shard_load: old.limits.shed_shard_load,
            shed_after_secs: old.limits.shed_after_secs,
            ..new.limits
        };
        merged.ice_servers = new.ice_servers;
        merged.http.retry_after_secs = new.http.retry_after_secs;
        if rate_changed {
            // Fresh buckets: every address starts with a full burst under the new rate.
            self.post_rate.set(Arc::new(post_rate(&merged)));
        }
        if let Some(auth) = auth {
            self.auth.set(Arc::new(auth));
        }
        self.config.set(Arc::new(merged));
        Ok(Reloaded {
            applied,
            need_restart,
        })
    }
}

/// Logs what a reload did, naming options but never their values (some are secrets).
pub fn log_reload(result: &Result<Reloaded, ReloadError>) {
    match result {
        Ok(r) => {
            for option in &r.need_restart {
                warn!(option = %option, "configuration changed, but this option needs a restart; the running value is kept");
            }
            info!(changed = ?r.applied, "configuration reloaded");
        }
        Err(e) => warn!(error = %e, "configuration not reloaded; the running one is kept"),
    }
}

/// [`crate::http::limits::limit_posts`] with the limit in force now; no limit when it is off.
pub async fn limit_posts(
    State(rate): State<Arc<Live<Option<Arc<PostRate>>>>>,
    req: Request,
    next: Next,
) -> Response {
    match rate.get().as_ref() {
        Some(rate) => crate::http::limits::limit_posts(State(rate.clone()), req, next).await,
        None => next.run(req).await,
    }
}

fn post_rate(config: &Config) -> Option<Arc<PostRate>> {
    PostRate::new(
        config.limits.posts_per_minute_per_ip,
        config.limits.post_burst_per_ip,
    )
}

/// `[limits]` keys the shards read from the configuration they started with: a reload leaves
/// them as they run.
const FIXED_LIMITS: [&str; 3] = ["max_shard_load", "shed_shard_load", "shed_after_secs"];

/// The live part of `[limits]`, for comparing.
fn live_limits(limits: &crate::config::LimitsConfig) -> Option<serde_json::Value> {
    let mut v = json(limits)?;
    if let Some(map) = v.as_object_mut() {
        for key in FIXED_LIMITS {
            map.remove(key);
        }
    }
    Some(v)
}

/// Options outside the live parts whose value differs, as `section.key`.
fn fixed_changes(old: &Config, new: &Config) -> Vec<String> {
    let (Ok(serde_json::Value::Object(old)), Ok(serde_json::Value::Object(new))) =
        (serde_json::to_value(old), serde_json::to_value(new))
    else {
        return Vec::new();
    };
    let mut changed = Vec::new();
    for (section, old_value) in &old {
        if matches!(section.as_str(), "auth" | "ice_servers") {
            continue;
        }
        let new_value = new.get(section).unwrap_or(&serde_json::Value::Null);
        match (old_value, new_value) {
            (serde_json::Value::Object(o), serde_json::Value::Object(n)) => {
                for (key, v) in o {
                    let live = match section.as_str() {
                        "http" => key == "retry_after_secs",
                        "limits" => !FIXED_LIMITS.contains(&key.as_str()),
                        _ => false,
                    };
                    if live {
                        continue;
                    }
                    if n.get(key) != Some(v) {
                        changed.push(format!("{section}.{key}"));
                    }
                }
            }
            (o, n) if o != n => changed.push(section.clone()),
            _ => {}
        }
    }
    changed
}

/// A section in its serialized form, for comparing: the sections hold floats and vectors of
/// structs, and do not derive `PartialEq`.
fn json<T: serde::Serialize>(section: &T) -> Option<serde_json::Value> {
    serde_json::to_value(section).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::from_toml_str(text).expect("config")
    }

    #[test]
    fn live_parts_apply_and_fixed_ones_are_named() {
        let r = Reloadable::new(config("[media]\nshards = 2\n")).expect("start");
        let taken = r.config.get();
        let done = r
            .reload(config(
                "[media]\nshards = 3\n[limits]\nmax_viewers = 5\n\
                 [[ice_servers]]\nurl = \"stun:stun.example.net\"\n",
            ))
            .expect("reload");
        assert_eq!(done.applied, vec!["limits", "ice_servers"]);
        assert_eq!(done.need_restart, vec!["media.shards"]);
        let mut load = (*r.config.get()).clone();
        load.limits.shed_shard_load = 0.5;
        let done = r.reload(load).expect("reload");
        assert_eq!(done.need_restart, vec!["limits.shed_shard_load"]);
        assert!(done.applied.is_empty());
        let now = r.config.get();
        assert_eq!(now.limits.max_viewers, 5);
        assert_eq!(now.ice_servers.len(), 1);
        assert_eq!(now.media.shards, 2, "the running shard count is kept");
        assert_eq!(
            taken.limits.max_viewers, 10_000,
            "a value taken before stays"
        );
        let again = r.reload((*now).clone()).expect("same again");
        assert_eq!(again, Reloaded::default());
    }

    #[test]
    fn a_bad_auth_section_keeps_the_old_rules() {
        let r = Reloadable::new(Config::default()).expect("start");
        let mut bad = Config::default();
        bad.auth.enabled = true;
        bad.auth.jwt.rs256_public_key = Some("does/not/exist.pem".into());
        bad.limits.max_viewers = 1;
        assert!(r.reload(bad).is_err());
        assert!(!r.auth.get().enabled());
        assert_eq!(r.config.get().limits.max_viewers, 10_000);
    }

    #[test]
    fn the_post_rate_is_rebuilt_only_when_it_changes() {
        let r = Reloadable::new(Config::default()).expect("start");
        let before = r.post_rate.get();
        let mut c = Config::default();
        c.limits.max_sessions = 7;
        r.reload(c.clone()).expect("reload");
        assert!(Arc::ptr_eq(&before, &r.post_rate.get()), "buckets kept");
        c.limits.posts_per_minute_per_ip = 0;
        r.reload(c).expect("reload");
        assert!(r.post_rate.get().is_none(), "the limit is off");
    }
}
