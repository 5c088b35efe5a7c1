//! Bearer tokens as the gateway keeps them: SHA-256 hashes, compared in constant time, so a
//! token is never stored or logged in the clear and the time a check takes reveals nothing.
//! The static tokens of the configuration (admin tokens, per-pattern rules) live here too.

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::digest;

use super::glob::glob_match;
use super::Action;
use crate::config::AuthConfig;

/// SHA-256 of a token: how tokens are kept and compared.
pub type TokenHash = [u8; 32];

/// The hash a token is kept as; the hub records it as the owner of the session it created.
pub fn token_hash(token: &str) -> TokenHash {
    let d = digest::digest(&digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Constant-time equality of two hashes: the time taken says nothing about how much matched.
pub(super) fn same(a: &TokenHash, b: &TokenHash) -> bool {
    verify_slices_are_equal(a, b).is_ok()
}

/// Whether `set` holds `h`, comparing with every member so the time does not say which matched.
fn holds(set: &[TokenHash], h: &TokenHash) -> bool {
    set.iter().fold(false, |found, t| same(t, h) | found)
}

/// The tokens written in the configuration: admin tokens and the `[[auth.streams]]` rules.
pub(super) struct StaticTokens {
    admin: Vec<TokenHash>,
    rules: Vec<Rule>,
}

/// One `[[auth.streams]]` rule, its tokens hashed.
pub(super) struct Rule {
    pattern: String,
    publish: Vec<TokenHash>,
    play: Vec<TokenHash>,
    pub(super) public_play: bool,
}

impl StaticTokens {
    /// Hashes the tokens of a section that passed [`AuthConfig::validate`].
    pub(super) fn new(c: &AuthConfig) -> StaticTokens {
        let hash = |tokens: &[String]| tokens.iter().map(|t| token_hash(t)).collect();
        StaticTokens {
            admin: hash(&c.admin_tokens),
            rules: c
                .streams
                .iter()
                .map(|r| Rule {
                    pattern: r.pattern.clone(),
                    publish: hash(&r.publish_tokens),
                    play: hash(&r.play_tokens),
                    public_play: r.public_play,
                })
                .collect(),
        }
    }

    /// The first rule whose pattern matches `stream`: the one that applies to it.
    pub(super) fn rule(&self, stream: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| glob_match(&r.pattern, stream))
    }

    pub(super) fn is_admin(&self, hash: &TokenHash) -> bool {
        holds(&self.admin, hash)
    }

    /// Whether some rule knows the token, for any stream or right: a valid token, if not one
    /// for this request. Every rule is compared so the time does not say which.
    pub(super) fn knows(&self, hash: &TokenHash) -> bool {
        self.rules.iter().fold(false, |k, r| {
            holds(&r.publish, hash) | holds(&r.play, hash) | k
        })
    }
}

impl Rule {
    /// Whether the rule gives `hash` the right to `action`; admin is never a rule's to give.
    pub(super) fn grants(&self, action: Action, hash: &TokenHash) -> bool {
        match action {
            Action::Publish => holds(&self.publish, hash),
            Action::Play => holds(&self.play, hash),
            Action::Admin => false,
        }
    }
}
