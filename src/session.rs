//! What names a session everywhere: its id, its role and the rule for stream names. A leaf
//! module, so the signalling, the configuration, the directory and the shards share these
//! without importing each other.

use std::fmt;
use std::str::FromStr;

/// Whether `b` may appear in a stream name: letters, digits, `-`, `_`, `.`. Names are URL path
/// segments and glob subjects, so nothing that needs escaping.
pub fn is_stream_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.".contains(&b)
}

/// Whether `name` is a valid stream name: 1 to 128 bytes of [`is_stream_name_byte`].
pub fn is_stream_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 128 && name.bytes().all(is_stream_name_byte)
}

/// Whether the peer sends media (WHIP) or receives it (WHEP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Publish,
    Play,
}

impl Role {
    /// The name the API and the logs use: `publish` or `play`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Publish => "publish",
            Role::Play => "play",
        }
    }
}

/// A session's public id: 128 random bits, shown as 32 lower-case hex digits in the resource
/// URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u128);

impl SessionId {
    pub fn random() -> SessionId {
        SessionId(rand::random())
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// The one rule for reading a session id from a URL: exactly the spelling the gateway issued
/// (32 lower-case hex digits), so no upper-case or `+`-prefixed alias names the same session.
impl FromStr for SessionId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let canonical = s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !canonical {
            return Err(());
        }
        u128::from_str_radix(s, 16).map(SessionId).map_err(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_id_round_trips_as_hex() {
        let id = SessionId::random();
        assert_eq!(id.to_string().parse::<SessionId>(), Ok(id));
        assert!("xyz".parse::<SessionId>().is_err());
    }

    #[test]
    fn only_the_issued_spelling_names_a_session() {
        let id = SessionId(0xabcdef);
        let text = id.to_string();
        assert_eq!(text.parse::<SessionId>(), Ok(id));
        assert!(text.to_uppercase().parse::<SessionId>().is_err());
        assert!(format!("+{}", &text[1..]).parse::<SessionId>().is_err());
        assert!(text[1..].parse::<SessionId>().is_err());
    }
}
