//! Just enough STUN (RFC 8489) to route a binding request to its session before str0m sees it:
//! the local ufrag is the first half of the USERNAME attribute (RFC 8445 §7.2.2).

const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const USERNAME: u16 = 0x0006;

/// Whether a datagram is STUN (first byte 0..=3 and the magic cookie, RFC 7983 demultiplexing).
pub fn is_stun(data: &[u8]) -> bool {
    data.len() >= 20 && data[0] < 4 && data[4..8] == MAGIC_COOKIE
}

/// The local (gateway) ufrag a STUN request is addressed to, if it has a USERNAME.
pub fn local_ufrag(data: &[u8]) -> Option<&str> {
    if !is_stun(data) {
        return None;
    }
    let len = u16::from_be_bytes([data[2], data[3]]) as usize;
    let body = data.get(20..20 + len)?;
    let mut at = 0;
    while at + 4 <= body.len() {
        let kind = u16::from_be_bytes([body[at], body[at + 1]]);
        let alen = u16::from_be_bytes([body[at + 2], body[at + 3]]) as usize;
        let value = body.get(at + 4..at + 4 + alen)?;
        if kind == USERNAME {
            let user = std::str::from_utf8(value).ok()?;
            return user.split(':').next();
        }
        at += 4 + alen.div_ceil(4) * 4;
    }
    None
}

/// A binding request with USERNAME `username` and no integrity, for tests of the routing.
#[cfg(test)]
pub(crate) fn binding_request(username: &str) -> Vec<u8> {
    let mut attrs = Vec::new();
    attrs.extend_from_slice(&0x8029u16.to_be_bytes()); // ICE-CONTROLLING
    attrs.extend_from_slice(&8u16.to_be_bytes());
    attrs.extend_from_slice(&[7; 8]);
    attrs.extend_from_slice(&USERNAME.to_be_bytes());
    attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
    attrs.extend_from_slice(username.as_bytes());
    while attrs.len() % 4 != 0 {
        attrs.push(0);
    }
    let mut msg = vec![0x00, 0x01];
    msg.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    msg.extend_from_slice(&MAGIC_COOKIE);
    msg.extend_from_slice(&[1; 12]);
    msg.extend_from_slice(&attrs);
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_local_ufrag() {
        assert_eq!(local_ufrag(&binding_request("srv1:cli9")), Some("srv1"));
    }

    #[test]
    fn truncated_or_non_stun_is_none() {
        let mut m = binding_request("abc:def");
        m.truncate(30);
        assert_eq!(local_ufrag(&m), None);
        assert_eq!(local_ufrag(&[0x80, 0, 0, 0]), None);
        assert!(!is_stun(&[0x16; 40]));
    }
}
