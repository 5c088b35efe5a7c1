//! JWTs signed by the operator's backend (HS256 with a shared secret, RS256 with a public key):
//! the token itself says which streams it is for and with which rights.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tracing::debug;

use super::glob::glob_match;
use super::{Action, AuthError};
use crate::config::JwtConfig;

/// The claims read from a JWT besides the registered ones jsonwebtoken checks.
#[derive(Deserialize)]
pub(super) struct Claims {
    /// Globs of the streams the token is for.
    #[serde(default)]
    streams: Vec<String>,
    /// `publish`, `play`, `admin`.
    #[serde(default)]
    rights: Vec<String>,
}

/// The configured keys, and the issuer and audience every JWT must name.
pub(super) struct Jwt {
    hs256: Option<DecodingKey>,
    rs256: Option<DecodingKey>,
    issuer: Option<String>,
    audience: Option<String>,
}

impl Jwt {
    /// The keys of a section that passed [`crate::config::AuthConfig::validate`], which only
    /// checked the RS256 key file: it is read again here. `None` when no key is configured.
    pub(super) fn new(c: &JwtConfig) -> Result<Option<Jwt>, AuthError> {
        if !c.enabled() {
            return Ok(None);
        }
        Ok(Some(Jwt {
            hs256: c
                .hs256_secret
                .as_ref()
                .map(|s| DecodingKey::from_secret(s.as_bytes())),
            rs256: c.rs256_key()?,
            issuer: c.issuer.clone(),
            audience: c.audience.clone(),
        }))
    }

    /// The token's claims if it is a JWT signed by a configured key, unexpired, with the
    /// configured issuer and audience.
    pub(super) fn verify(&self, token: &str) -> Option<Claims> {
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
    /// Whether the claims give `action` on `stream`: `admin` gives everything, `publish` and
    /// `play` only on the streams the token's globs match.
    pub(super) fn grants(&self, action: Action, stream: Option<&str>) -> bool {
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

#[cfg(test)]
mod tests {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::json;

    use crate::auth::testing::*;
    use crate::auth::{Action, Authorizer, Decision};

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
        assert!(e.to_string().contains("auth.jwt.rs256_public_key"), "{e}");
    }
}
