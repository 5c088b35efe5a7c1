//! SRTP and SRTCP for the gateway's own media egress (RFC 3711, RFC 7714).
//!
//! A forwarded packet goes to every viewer, each with its own keys. str0m's send path copies
//! and allocates per packet, so the gateway protects RTP itself: the session keys are derived
//! once, when DTLS-SRTP hands over its keying material (RFC 5764 §4.2), and each packet is then
//! encrypted in place and grows only by its tag.
//!
//! [`SrtcpReceiver`] reads the viewer's SRTCP (its NACKs) beside str0m, which keeps its own
//! copy of the same keys and does the replay checks.
//!
//! # Sharing the keys with str0m
//!
//! str0m holds the same keys for the same direction and may send SRTP and SRTCP with them too.
//! An AES-CM keystream or a GCM nonce must never be used twice under one key: both are fixed by
//! the SSRC and the packet index (RTP: ROC and sequence number; RTCP: SRTCP index). So a packet
//! protected here must never have an (SSRC, index) pair that str0m also sends: RTP from here
//! goes out on SSRCs str0m does not send on, and RTCP from here either carries a sender SSRC
//! (bytes 4..8) other than str0m's or counts its SRTCP index in a range str0m's, counting up
//! from 0, never reaches ([`SrtpSender::starting_rtcp_index`]).

use std::fmt;

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::cipher::{self, EncryptingKey, EncryptionContext, UnboundCipherKey};
use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;

/// The SRTP protection profiles DTLS-SRTP can negotiate here (RFC 5764, RFC 7714).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// SRTP_AES128_CM_HMAC_SHA1_80: AES-128 counter mode, 80-bit HMAC-SHA1 tag (RFC 3711).
    Aes128CmSha1_80,
    /// SRTP_AEAD_AES_128_GCM (RFC 7714).
    AeadAes128Gcm,
    /// SRTP_AEAD_AES_256_GCM (RFC 7714).
    AeadAes256Gcm,
}

impl Profile {
    /// From the profile str0m's DTLS reports with the keying material; `None` for a profile
    /// added to str0m later that this module does not implement.
    pub fn from_str0m(p: str0m::crypto::dtls::SrtpProfile) -> Option<Profile> {
        use str0m::crypto::dtls::SrtpProfile;
        match p {
            SrtpProfile::AES128_CM_SHA1_80 => Some(Profile::Aes128CmSha1_80),
            SrtpProfile::AEAD_AES_128_GCM => Some(Profile::AeadAes128Gcm),
            SrtpProfile::AEAD_AES_256_GCM => Some(Profile::AeadAes256Gcm),
            _ => None,
        }
    }

    /// The master key length in bytes (also the session encryption key length).
    fn key_len(self) -> usize {
        match self {
            Profile::Aes128CmSha1_80 | Profile::AeadAes128Gcm => 16,
            Profile::AeadAes256Gcm => 32,
        }
    }

    /// The master salt length in bytes (also the session salt length): 112 bits for AES-CM,
    /// 96 bits for GCM (RFC 7714 §12).
    fn salt_len(self) -> usize {
        match self {
            Profile::Aes128CmSha1_80 => 14,
            Profile::AeadAes128Gcm | Profile::AeadAes256Gcm => 12,
        }
    }

    /// The length of the DTLS-SRTP keying material: a master key and salt for each end.
    pub fn keying_material_len(self) -> usize {
        2 * (self.key_len() + self.salt_len())
    }

    /// Bytes [`SrtpSender::protect_rtp`] appends (10 for CM-SHA1-80, 16 for GCM).
    pub fn rtp_overhead(self) -> usize {
        match self {
            Profile::Aes128CmSha1_80 => CM_TAG_LEN,
            Profile::AeadAes128Gcm | Profile::AeadAes256Gcm => GCM_TAG_LEN,
        }
    }

    /// Bytes [`SrtpSender::protect_rtcp`] appends: the tag and the 4-byte E-flag and index.
    pub fn rtcp_overhead(self) -> usize {
        self.rtp_overhead() + SRTCP_INDEX_LEN
    }
}

/// The keying material's length does not match the profile.
#[derive(Debug)]
pub struct KeyError;

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SRTP keying material of the wrong length for its profile")
    }
}

impl std::error::Error for KeyError {}

/// The HMAC-SHA1-80 tag: the first 80 bits of HMAC-SHA1 (RFC 3711 §4.2).
const CM_TAG_LEN: usize = 10;
/// The AES-CM profile's session authentication key: 160 bits (RFC 3711 §8.2).
const CM_AUTH_KEY_LEN: usize = 20;
const GCM_TAG_LEN: usize = 16;
/// The E flag and the 31-bit SRTCP index after the RTCP packet.
const SRTCP_INDEX_LEN: usize = 4;
/// The RTCP header and sender SSRC, sent in the clear (RFC 3711 §3.4).
const RTCP_CLEAR_LEN: usize = 8;
const RTP_MIN_HEADER_LEN: usize = 12;
/// Marks an encrypted SRTCP packet in the word after it.
const E_FLAG: u32 = 0x8000_0000;
const SRTCP_INDEX_MASK: u32 = 0x7FFF_FFFF;

/// Key derivation labels (RFC 3711 §4.3.2); RTCP's are RTP's plus 3.
const LABEL_ENCRYPTION: u8 = 0;
const LABEL_AUTH: u8 = 1;
const LABEL_SALT: u8 = 2;
const LABEL_RTCP: u8 = 3;

/// The SRTP key derivation PRF: AES in counter mode under the master key (AES-256 for the
/// 256-bit GCM profile, RFC 7714 §11), with the key derivation rate 0, so r is always 0.
struct Prf {
    aes: EncryptingKey,
    /// The master salt in the top of a 112-bit field: a 96-bit GCM salt gets 16 zero bits on
    /// the right, as libsrtp and str0m do.
    salt: [u8; 14],
}

impl Prf {
    fn new(master_key: &[u8], master_salt: &[u8]) -> Result<Prf, KeyError> {
        let algorithm = match master_key.len() {
            16 => &cipher::AES_128,
            32 => &cipher::AES_256,
            _ => return Err(KeyError),
        };
        if master_salt.len() > 14 {
            return Err(KeyError);
        }
        let key = UnboundCipherKey::new(algorithm, master_key).map_err(|_| KeyError)?;
        let aes = EncryptingKey::ctr(key).map_err(|_| KeyError)?;
        let mut salt = [0; 14];
        salt[..master_salt.len()].copy_from_slice(master_salt);
        Ok(Prf { aes, salt })
    }

    /// Fills `out` with the keystream for `label`: x = (label || r) XOR salt, IV = x * 2^16
    /// (RFC 3711 §4.3.1). The 8-bit label lands on byte 7 of the 14-byte salt.
    fn derive(&self, label: u8, out: &mut [u8]) -> Result<(), KeyError> {
        let mut iv = [0; 16];
        iv[..14].copy_from_slice(&self.salt);
        iv[7] ^= label;
        out.fill(0);
        self.aes
            .less_safe_encrypt(out, EncryptionContext::Iv128(FixedLength::from(iv)))
            .map(|_| ())
            .map_err(|_| KeyError)
    }
}

/// The session keys of RTP or of RTCP, for one direction.
enum Cipher {
    /// AES-128 counter mode with HMAC-SHA1-80 (RFC 3711 §4.1.1, §4.2), boxed: an HMAC
    /// context is some 1.7 kB.
    Cm(Box<CmKeys>),
    /// AES-GCM, 128 or 256 (RFC 7714).
    Gcm { aead: LessSafeKey, salt: [u8; 12] },
}

struct CmKeys {
    aes: EncryptingKey,
    auth: hmac::Key,
    salt: [u8; 14],
}

impl Cipher {
    /// Derives the session keys with the labels from `base` (0 for RTP, 3 for RTCP).
    fn derive(profile: Profile, prf: &Prf, base: u8) -> Result<Cipher, KeyError> {
        let mut key = [0; 32];
        let key = &mut key[..profile.key_len()];
        prf.derive(base + LABEL_ENCRYPTION, key)?;
        match profile {
            Profile::Aes128CmSha1_80 => {
                let mut auth = [0; CM_AUTH_KEY_LEN];
                prf.derive(base + LABEL_AUTH, &mut auth)?;
                let mut salt = [0; 14];
                prf.derive(base + LABEL_SALT, &mut salt)?;
                Cipher::cm(key, &auth, salt)
            }
            Profile::AeadAes128Gcm | Profile::AeadAes256Gcm => {
                let mut salt = [0; 12];
                prf.derive(base + LABEL_SALT, &mut salt)?;
                Cipher::gcm(key, salt)
            }
        }
    }

    fn cm(key: &[u8], auth: &[u8], salt: [u8; 14]) -> Result<Cipher, KeyError> {
        let key = UnboundCipherKey::new(&cipher::AES_128, key).map_err(|_| KeyError)?;
        Ok(Cipher::Cm(Box::new(CmKeys {
            aes: EncryptingKey::ctr(key).map_err(|_| KeyError)?,
            auth: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, auth),
            salt,
        })))
    }

    fn gcm(key: &[u8], salt: [u8; 12]) -> Result<Cipher, KeyError> {
        let algorithm = match key.len() {
            16 => &aead::AES_128_GCM,
            32 => &aead::AES_256_GCM,
            _ => return Err(KeyError),
        };
        let key = UnboundKey::new(algorithm, key).map_err(|_| KeyError)?;
        Ok(Cipher::Gcm {
            aead: LessSafeKey::new(key),
            salt,
        })
    }
}

/// The AES-CM IV: (salt * 2^16) XOR (SSRC * 2^64) XOR (index * 2^16) (RFC 3711 §4.1.1), where
/// index is the 48-bit SRTP index or the 31-bit SRTCP index.
fn cm_iv(salt: &[u8; 14], ssrc: u32, index: u64) -> EncryptionContext {
    let mut iv = [0; 16];
    iv[..14].copy_from_slice(salt);
    xor(&mut iv[4..8], &ssrc.to_be_bytes());
    xor(&mut iv[8..14], &index.to_be_bytes()[2..]);
    EncryptionContext::Iv128(FixedLength::from(iv))
}

/// The GCM RTP nonce: (00 00 || SSRC || ROC || SEQ) XOR salt (RFC 7714 §8.1).
fn gcm_rtp_nonce(salt: &[u8; 12], ssrc: u32, roc: u32, seq: u16) -> Nonce {
    let mut iv = *salt;
    xor(&mut iv[2..6], &ssrc.to_be_bytes());
    xor(&mut iv[6..10], &roc.to_be_bytes());
    xor(&mut iv[10..12], &seq.to_be_bytes());
    Nonce::assume_unique_for_key(iv)
}

/// The GCM RTCP nonce: (00 00 || SSRC || 00 00 || 0 || index) XOR salt (RFC 7714 §9.1).
fn gcm_rtcp_nonce(salt: &[u8; 12], ssrc: u32, index: u32) -> Nonce {
    let mut iv = *salt;
    xor(&mut iv[2..6], &ssrc.to_be_bytes());
    xor(&mut iv[8..12], &(index & SRTCP_INDEX_MASK).to_be_bytes());
    Nonce::assume_unique_for_key(iv)
}

fn xor(into: &mut [u8], with: &[u8]) {
    for (a, b) in into.iter_mut().zip(with) {
        *a ^= b;
    }
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// HMAC-SHA1 over the concatenation of `parts`, without copying them together.
fn hmac_sha1(key: &hmac::Key, parts: &[&[u8]]) -> hmac::Tag {
    let mut ctx = hmac::Context::with_key(key);
    for part in parts {
        ctx.update(part);
    }
    ctx.sign()
}

/// The session keys of one direction: SRTP and SRTCP.
struct Keys {
    profile: Profile,
    rtp: Cipher,
    rtcp: Cipher,
}

impl Keys {
    /// The client's master key and salt if `client`, else the server's (RFC 5764 §4.2:
    /// client key | server key | client salt | server salt).
    fn new(profile: Profile, keying_material: &[u8], client: bool) -> Result<Keys, KeyError> {
        let (master_key, master_salt) = master(profile, keying_material, client)?;
        Keys::from_master(profile, master_key, master_salt)
    }

    fn from_master(profile: Profile, key: &[u8], salt: &[u8]) -> Result<Keys, KeyError> {
        if key.len() != profile.key_len() || salt.len() != profile.salt_len() {
            return Err(KeyError);
        }
        let prf = Prf::new(key, salt)?;
        Ok(Keys {
            profile,
            rtp: Cipher::derive(profile, &prf, 0)?,
            rtcp: Cipher::derive(profile, &prf, LABEL_RTCP)?,
        })
    }

    /// Checks and decrypts an SRTCP packet into `out`; see [`SrtcpReceiver::unprotect_rtcp`].
    fn unprotect_rtcp(&self, packet: &[u8], out: &mut Vec<u8>) -> bool {
        out.clear();
        let tag_len = self.profile.rtp_overhead();
        if packet.len() < RTCP_CLEAR_LEN + SRTCP_INDEX_LEN + tag_len {
            return false;
        }
        let ssrc = be_u32(&packet[4..8]);
        match &self.rtcp {
            Cipher::Cm(cm) => {
                let CmKeys { aes, auth, salt } = cm.as_ref();
                // packet || E|index || tag; the tag covers everything before it.
                let (authenticated, tag) = packet.split_at(packet.len() - CM_TAG_LEN);
                let expected = hmac_sha1(auth, &[authenticated]);
                if verify_slices_are_equal(&expected.as_ref()[..CM_TAG_LEN], tag).is_err() {
                    return false;
                }
                let (rtcp, e_index) = authenticated.split_at(authenticated.len() - SRTCP_INDEX_LEN);
                let e_index = be_u32(e_index);
                out.extend_from_slice(rtcp);
                if e_index & E_FLAG != 0 {
                    let iv = cm_iv(salt, ssrc, u64::from(e_index & SRTCP_INDEX_MASK));
                    if aes
                        .less_safe_encrypt(&mut out[RTCP_CLEAR_LEN..], iv)
                        .is_err()
                    {
                        out.clear();
                        return false;
                    }
                }
                true
            }
            Cipher::Gcm { aead, salt } => {
                // packet || tag || E|index (RFC 7714 §9, §17).
                let (rest, e_index_bytes) = packet.split_at(packet.len() - SRTCP_INDEX_LEN);
                let (rtcp, tag) = rest.split_at(rest.len() - GCM_TAG_LEN);
                let e_index = be_u32(e_index_bytes);
                let nonce = gcm_rtcp_nonce(salt, ssrc, e_index);
                out.extend_from_slice(rtcp);
                let opened = if e_index & E_FLAG != 0 {
                    // AAD: the clear header and E|index; the rest is ciphertext.
                    let mut aad = [0; RTCP_CLEAR_LEN + SRTCP_INDEX_LEN];
                    aad[..RTCP_CLEAR_LEN].copy_from_slice(&rtcp[..RTCP_CLEAR_LEN]);
                    aad[RTCP_CLEAR_LEN..].copy_from_slice(e_index_bytes);
                    let body = &mut out[RTCP_CLEAR_LEN..];
                    aead.open_in_place_separate_tag(nonce, Aad::from(aad), tag, body)
                        .is_ok()
                } else {
                    // Authenticated only: the whole packet and E|index are the AAD.
                    out.extend_from_slice(e_index_bytes);
                    let opened = aead
                        .open_in_place_separate_tag(nonce, Aad::from(&out[..]), tag, &mut [])
                        .is_ok();
                    out.truncate(rtcp.len());
                    opened
                };
                if !opened {
                    out.clear();
                }
                opened
            }
        }
    }

    /// Checks and decrypts an SRTP packet in place (the tests' receiving end).
    #[cfg(test)]
    fn unprotect_rtp(&self, packet: &mut Vec<u8>, header_len: usize, roc: u32) -> bool {
        let tag_len = self.profile.rtp_overhead();
        if header_len < RTP_MIN_HEADER_LEN || packet.len() < header_len + tag_len {
            return false;
        }
        let seq = u16::from_be_bytes([packet[2], packet[3]]);
        let ssrc = be_u32(&packet[8..12]);
        let end = packet.len() - tag_len;
        let ok = match &self.rtp {
            Cipher::Cm(cm) => {
                let CmKeys { aes, auth, salt } = cm.as_ref();
                let (authenticated, tag) = packet.split_at(end);
                let expected = hmac_sha1(auth, &[authenticated, &roc.to_be_bytes()]);
                if verify_slices_are_equal(&expected.as_ref()[..CM_TAG_LEN], tag).is_err() {
                    return false;
                }
                let iv = cm_iv(salt, ssrc, (u64::from(roc) << 16) | u64::from(seq));
                aes.less_safe_encrypt(&mut packet[header_len..end], iv)
                    .is_ok()
            }
            Cipher::Gcm { aead, salt } => {
                let nonce = gcm_rtp_nonce(salt, ssrc, roc, seq);
                let (header, rest) = packet.split_at_mut(header_len);
                let (body, tag) = rest.split_at_mut(end - header_len);
                aead.open_in_place_separate_tag(nonce, Aad::from(&*header), tag, body)
                    .is_ok()
            }
        };
        if ok {
            packet.truncate(end);
        }
        ok
    }
}

/// The master key and salt of one end in DTLS-SRTP keying material (RFC 5764 §4.2).
fn master(profile: Profile, km: &[u8], client: bool) -> Result<(&[u8], &[u8]), KeyError> {
    if km.len() != profile.keying_material_len() {
        return Err(KeyError);
    }
    let (kl, sl) = (profile.key_len(), profile.salt_len());
    let (key_at, salt_at) = if client {
        (0, 2 * kl)
    } else {
        (kl, 2 * kl + sl)
    };
    Ok((&km[key_at..key_at + kl], &km[salt_at..salt_at + sl]))
}

/// One direction's SRTP + SRTCP session keys.
pub struct SrtpSender {
    keys: Keys,
    /// The next SRTCP index (31 bits).
    srtcp_index: u32,
}

impl SrtpSender {
    /// The keys this end sends with: the client's half when `local_is_client` (this end is the
    /// DTLS client), else the server's.
    pub fn new(
        profile: Profile,
        keying_material: &[u8],
        local_is_client: bool,
    ) -> Result<SrtpSender, KeyError> {
        Ok(SrtpSender {
            keys: Keys::new(profile, keying_material, local_is_client)?,
            srtcp_index: 0,
        })
    }

    /// Counts this sender's SRTCP index up from `index` instead of 0: where str0m sends RTCP
    /// with the same keys and SSRCs (its own count starting at 0), the two counts never meet.
    pub fn starting_rtcp_index(mut self, index: u32) -> SrtpSender {
        self.srtcp_index = index & SRTCP_INDEX_MASK;
        self
    }

    pub fn profile(&self) -> Profile {
        self.keys.profile
    }

    /// Protects an RTP packet in place. `packet` is a whole RTP packet (a header of
    /// `header_len` bytes, with CSRCs and extensions, then the payload and any padding); `roc`
    /// is the rollover counter for this SSRC (with 64-bit sequence numbers, `seq >> 16`). The
    /// payload is encrypted and the tag appended: GCM's 16 bytes, or CM's HMAC-SHA1-80 over
    /// header || ciphertext || ROC. The SSRC and sequence number are read from the header.
    ///
    /// A `header_len` under 12 or past the end is a caller bug; the packet is then cleared, so
    /// that nothing goes out unprotected.
    pub fn protect_rtp(&self, packet: &mut Vec<u8>, header_len: usize, roc: u32) {
        if header_len < RTP_MIN_HEADER_LEN || header_len > packet.len() {
            packet.clear();
            return;
        }
        let seq = u16::from_be_bytes([packet[2], packet[3]]);
        let ssrc = be_u32(&packet[8..12]);
        let ok = match &self.keys.rtp {
            Cipher::Cm(cm) => {
                let CmKeys { aes, auth, salt } = cm.as_ref();
                let iv = cm_iv(salt, ssrc, (u64::from(roc) << 16) | u64::from(seq));
                let ok = aes.less_safe_encrypt(&mut packet[header_len..], iv).is_ok();
                let tag = hmac_sha1(auth, &[&packet[..], &roc.to_be_bytes()]);
                packet.extend_from_slice(&tag.as_ref()[..CM_TAG_LEN]);
                ok
            }
            Cipher::Gcm { aead, salt } => {
                let nonce = gcm_rtp_nonce(salt, ssrc, roc, seq);
                let (header, payload) = packet.split_at_mut(header_len);
                match aead.seal_in_place_separate_tag(nonce, Aad::from(&*header), payload) {
                    Ok(tag) => {
                        packet.extend_from_slice(tag.as_ref());
                        true
                    }
                    Err(_) => false,
                }
            }
        };
        if !ok {
            packet.clear();
        }
    }

    /// Protects a (compound) RTCP packet in place with this sender's next SRTCP index:
    /// everything after the first 8 bytes is encrypted and E-flag|index appended, then CM's
    /// 10-byte tag after it; GCM's 16-byte tag comes before E|index (RFC 7714 §9). The SSRC in
    /// the IV is bytes 4..8.
    ///
    /// The index wraps after 2^31 packets, when RFC 3711 wants new keys; at 100 packets a
    /// second that is eight months. A packet under 8 bytes is cleared.
    pub fn protect_rtcp(&mut self, packet: &mut Vec<u8>) {
        if packet.len() < RTCP_CLEAR_LEN {
            packet.clear();
            return;
        }
        let index = self.srtcp_index;
        self.srtcp_index = (index + 1) & SRTCP_INDEX_MASK;
        let e_index = (E_FLAG | index).to_be_bytes();
        let ssrc = be_u32(&packet[4..8]);
        let ok = match &self.keys.rtcp {
            Cipher::Cm(cm) => {
                let CmKeys { aes, auth, salt } = cm.as_ref();
                let iv = cm_iv(salt, ssrc, u64::from(index));
                let ok = aes
                    .less_safe_encrypt(&mut packet[RTCP_CLEAR_LEN..], iv)
                    .is_ok();
                packet.extend_from_slice(&e_index);
                let tag = hmac_sha1(auth, &[&packet[..]]);
                packet.extend_from_slice(&tag.as_ref()[..CM_TAG_LEN]);
                ok
            }
            Cipher::Gcm { aead, salt } => {
                let nonce = gcm_rtcp_nonce(salt, ssrc, index);
                let mut aad = [0; RTCP_CLEAR_LEN + SRTCP_INDEX_LEN];
                aad[..RTCP_CLEAR_LEN].copy_from_slice(&packet[..RTCP_CLEAR_LEN]);
                aad[RTCP_CLEAR_LEN..].copy_from_slice(&e_index);
                let body = &mut packet[RTCP_CLEAR_LEN..];
                match aead.seal_in_place_separate_tag(nonce, Aad::from(aad), body) {
                    Ok(tag) => {
                        packet.extend_from_slice(tag.as_ref());
                        packet.extend_from_slice(&e_index);
                        true
                    }
                    Err(_) => false,
                }
            }
        };
        if !ok {
            packet.clear();
        }
    }
}

impl fmt::Debug for SrtpSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpSender")
            .field("profile", &self.keys.profile)
            .field("srtcp_index", &self.srtcp_index)
            .finish_non_exhaustive()
    }
}

/// The other direction's SRTCP, to read a peer's RTCP (its NACKs) beside str0m.
pub struct SrtcpReceiver {
    keys: Keys,
}

impl SrtcpReceiver {
    /// The remote end's keys: the server's half when `local_is_client`, else the client's.
    pub fn new(
        profile: Profile,
        keying_material: &[u8],
        local_is_client: bool,
    ) -> Result<SrtcpReceiver, KeyError> {
        Ok(SrtcpReceiver {
            keys: Keys::new(profile, keying_material, !local_is_client)?,
        })
    }

    pub fn profile(&self) -> Profile {
        self.keys.profile
    }

    /// Authenticates and decrypts an SRTCP packet into `out` (cleared first): the plain
    /// compound RTCP without index and tag. False if it is too short or fails authentication,
    /// and `out` is then empty. No replay check: str0m keeps one, and this copy only reads.
    pub fn unprotect_rtcp(&self, packet: &[u8], out: &mut Vec<u8>) -> bool {
        self.keys.unprotect_rtcp(packet, out)
    }

    /// Checks and decrypts the peer's SRTP in place, for the tests' round trips.
    #[cfg(test)]
    fn unprotect_rtp(&self, packet: &mut Vec<u8>, header_len: usize, roc: u32) -> bool {
        self.keys.unprotect_rtp(packet, header_len, roc)
    }
}

impl fmt::Debug for SrtcpReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtcpReceiver")
            .field("profile", &self.keys.profile)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Profile; 3] = [
        Profile::Aes128CmSha1_80,
        Profile::AeadAes128Gcm,
        Profile::AeadAes256Gcm,
    ];

    fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        digits
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect()
    }

    /// Keying material whose four parts all differ.
    fn keying_material(profile: Profile) -> Vec<u8> {
        (0..profile.keying_material_len())
            .map(|i| (i as u8).wrapping_mul(37).wrapping_add(11))
            .collect()
    }

    /// An RTP packet with two CSRCs and a one-byte-header extension, so that the header is
    /// longer than 12 bytes; returns it and its header length.
    fn rtp_packet(ssrc: u32, seq: u16, payload_len: usize) -> (Vec<u8>, usize) {
        let mut p = vec![0x92, 96];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&0x0102_0304_u32.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&[0xC1, 0xC1, 0xC1, 0xC1, 0xC2, 0xC2, 0xC2, 0xC2]);
        p.extend_from_slice(&[0xBE, 0xDE, 0x00, 0x01, 0x10, 0xAA, 0x00, 0x00]);
        let header_len = p.len();
        p.extend((0..payload_len).map(|i| i as u8));
        (p, header_len)
    }

    /// A compound RTCP packet: a receiver report with one block, then a generic NACK.
    fn rtcp_packet() -> Vec<u8> {
        let mut p = vec![0x81, 201, 0, 7, 0xAB, 0xCD, 0xEF, 0x01];
        p.extend((0..24).map(|i| i as u8));
        p.extend_from_slice(&[0x81, 205, 0, 3, 0xAB, 0xCD, 0xEF, 0x01]);
        p.extend_from_slice(&[0x11, 0x22, 0x33, 0x44, 0x12, 0x34, 0x00, 0x05]);
        p
    }

    /// The session encryption key, authentication key (CM only) and salt for RTP (`base` 0)
    /// or RTCP (`base` 3).
    fn session(profile: Profile, km: &[u8], client: bool, base: u8) -> [Vec<u8>; 3] {
        let (key, salt) = master(profile, km, client).unwrap();
        let prf = Prf::new(key, salt).unwrap();
        let mut out = [
            vec![0; profile.key_len()],
            vec![0; CM_AUTH_KEY_LEN],
            vec![0; profile.salt_len()],
        ];
        prf.derive(base + LABEL_ENCRYPTION, &mut out[0]).unwrap();
        prf.derive(base + LABEL_AUTH, &mut out[1]).unwrap();
        prf.derive(base + LABEL_SALT, &mut out[2]).unwrap();
        out
    }

    fn gcm_keys(profile: Profile, key: &[u8], salt: &[u8]) -> Keys {
        let salt: [u8; 12] = salt.try_into().unwrap();
        Keys {
            profile,
            rtp: Cipher::gcm(key, salt).unwrap(),
            rtcp: Cipher::gcm(key, salt).unwrap(),
        }
    }

    #[test]
    fn kdf_matches_rfc3711_b3() {
        // RFC 3711 Appendix B.3.
        let prf = Prf::new(
            &hex("E1F97A0D3E018BE0D64FA32C06DE4139"),
            &hex("0EC675AD498AFEEBB6960B3AABE6"),
        )
        .unwrap();
        let mut key = [0; 16];
        prf.derive(LABEL_ENCRYPTION, &mut key).unwrap();
        assert_eq!(key[..], hex("C61E7A93744F39EE10734AFE3FF7A087"));
        let mut salt = [0; 14];
        prf.derive(LABEL_SALT, &mut salt).unwrap();
        assert_eq!(salt[..], hex("30CBBC08863D8C85D49DB34A9AE1"));
        // B.3 lists 94 bytes of authentication key; SHA1-80 uses the first 20.
        let mut auth = [0; 94];
        prf.derive(LABEL_AUTH, &mut auth).unwrap();
        let expected = hex(
            "CEBE321F6FF7716B6FD4AB49AF256A156D38BAA48F0A0ACF3C34E2359E6CDBCE
             E049646C43D9327AD175578EF72270986371C10C9A369AC2F94A8C5FBCDDDC25
             6D6E919A48B610EF17C2041E474035766B68642C59BBFC2F34DB60DBDFB2",
        );
        assert_eq!(auth[..], expected);
    }

    #[test]
    fn kdf_256_matches_rfc6188() {
        // RFC 6188 §7.2, the AES_256_CM_PRF that AEAD_AES_256_GCM keys with (RFC 7714 §11).
        let prf = Prf::new(
            &hex("f0f04914b513f2763a1b1fa130f10e2998f6f6e43e4309d1e622a0e332b9f1b6"),
            &hex("3b04803de51ee7c96423ab5b78d2"),
        )
        .unwrap();
        let mut key = [0; 32];
        prf.derive(LABEL_ENCRYPTION, &mut key).unwrap();
        assert_eq!(
            key[..],
            hex("5ba1064e30ec51613cad926c5a28ef731ec7fb397f70a960653caf06554cd8c4")
        );
        let mut salt = [0; 14];
        prf.derive(LABEL_SALT, &mut salt).unwrap();
        assert_eq!(salt[..], hex("fa31791685ca444a9e07c6c64e93"));
        let mut auth = [0; 20];
        prf.derive(LABEL_AUTH, &mut auth).unwrap();
        assert_eq!(auth[..], hex("fd9c32d39ed5fbb5a9dc96b30818454d1313dc05"));
    }

    #[test]
    fn gcm_kdf_pads_the_96_bit_salt_on_the_right() {
        // RFC 7714 §11 runs the RFC 3711 PRF on a 96-bit salt; libsrtp and str0m (which
        // browsers talk to) put it in the high bits of the 112-bit field. No published vector
        // covers this, so it is checked against the 112-bit PRF on salt || 0000.
        let key = hex("E1F97A0D3E018BE0D64FA32C06DE4139");
        let salt = hex("0EC675AD498AFEEBB6960B3A");
        let mut padded = salt.clone();
        padded.extend_from_slice(&[0, 0]);
        let (short, long) = (
            Prf::new(&key, &salt).unwrap(),
            Prf::new(&key, &padded).unwrap(),
        );
        for label in 0..6 {
            let (mut a, mut b) = ([0; 32], [0; 32]);
            short.derive(label, &mut a).unwrap();
            long.derive(label, &mut b).unwrap();
            assert_eq!(a, b);
        }
        let mut trimmed = padded.clone();
        trimmed[13] = 1;
        let (mut a, mut b) = ([0; 16], [0; 16]);
        short.derive(0, &mut a).unwrap();
        Prf::new(&key, &trimmed).unwrap().derive(0, &mut b).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn aes_cm_keystream_matches_rfc3711_b2() {
        // RFC 3711 Appendix B.2: SSRC 0, ROC 0, sequence number 0, so a zero payload encrypts
        // to the keystream itself. Blocks 0xFEFF.. show the 16-bit block counter carrying.
        let salt: [u8; 14] = hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD").try_into().unwrap();
        let key = hex("2B7E151628AED2A6ABF7158809CF4F3C");
        let sender = SrtpSender {
            keys: Keys {
                profile: Profile::Aes128CmSha1_80,
                rtp: Cipher::cm(&key, &[0; 20], salt).unwrap(),
                rtcp: Cipher::cm(&key, &[0; 20], salt).unwrap(),
            },
            srtcp_index: 0,
        };
        let mut packet = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        packet.resize(12 + 16 * 0xFF02, 0);
        sender.protect_rtp(&mut packet, 12, 0);
        let keystream = &packet[12..];
        for (block, expected) in [
            (0x0000, "E03EAD0935C95E80E166B16DD92B4EB4"),
            (0x0001, "D23513162B02D0F72A43A2FE4A5F97AB"),
            (0x0002, "41E95B3BB0A2E8DD477901E4FCA894C0"),
            (0xFEFF, "EC8CDF7398607CB0F2D21675EA9EA1E4"),
            (0xFF00, "362B7C3C6773516318A077D7FC5073AE"),
            (0xFF01, "6A2CC3787889374FBEB4C81B17BA6C44"),
        ] {
            assert_eq!(
                keystream[16 * block..16 * (block + 1)],
                hex(expected),
                "{block:#x}"
            );
        }
    }

    /// RFC 7714 §16 (AES-128) and §17 (AES-256): session key, session salt, RTP packet
    /// protected with ROC 0, RTCP packet protected with SRTCP index 0x5D4, and the same RTCP
    /// authenticated only (E = 0).
    fn check_rfc7714(profile: Profile, key: &str, rtp: &str, rtcp: &str, tagged_tag: &str) {
        let keys = gcm_keys(profile, &hex(key), &hex("517569642070726f2071756f"));
        let plain_rtp = hex(
            "8040f17b8041f8d35501a0b247616c6c696120657374206f6d6e69732064697669736120696e20
             7061727465732074726573",
        );
        let plain_rtcp = hex(
            "81c8000d4d6172734e5450314e545032525450200000042a0000e9304c756e61deadbeefdeadbeef
             deadbeefdeadbeefdeadbeef",
        );
        let mut sender = SrtpSender {
            keys,
            srtcp_index: 0x5D4,
        };
        let receiver = SrtcpReceiver {
            keys: gcm_keys(profile, &hex(key), &hex("517569642070726f2071756f")),
        };

        let mut packet = plain_rtp.clone();
        sender.protect_rtp(&mut packet, 12, 0);
        assert_eq!(packet, hex(rtp));
        assert!(receiver.unprotect_rtp(&mut packet, 12, 0));
        assert_eq!(packet, plain_rtp);

        let mut packet = plain_rtcp.clone();
        sender.protect_rtcp(&mut packet);
        assert_eq!(packet, hex(rtcp));
        assert_eq!(sender.srtcp_index, 0x5D5);
        let mut out = Vec::new();
        assert!(receiver.unprotect_rtcp(&packet, &mut out));
        assert_eq!(out, plain_rtcp);

        let mut tagged = plain_rtcp.clone();
        tagged.extend_from_slice(&hex(tagged_tag));
        tagged.extend_from_slice(&hex("000005d4"));
        assert!(receiver.unprotect_rtcp(&tagged, &mut out));
        assert_eq!(out, plain_rtcp);
        tagged[20] ^= 1;
        assert!(!receiver.unprotect_rtcp(&tagged, &mut out));
        assert!(out.is_empty());
    }

    #[test]
    fn gcm_128_matches_rfc7714_vectors() {
        check_rfc7714(
            Profile::AeadAes128Gcm,
            "000102030405060708090a0b0c0d0e0f",
            "8040f17b8041f8d35501a0b2f24de3a3fb34de6cacba861c9d7e4bcabe633bd50d294e6f42a5f47a
             51c7d19b36de3adf8833899d7f27beb16a9152cf765ee4390cce",
            "81c8000d4d61727363e94885dcdab67ca727d7662f6b7e997ff5c0f76c06f32dc676a5f1730d6fda
             4ce09b4686303ded0bb9275bc84aa45896cf4d2fc5abf87245d9eade800005d4",
            "841dd9683dd78ec92ae58790125f62b3",
        );
    }

    #[test]
    fn gcm_256_matches_rfc7714_vectors() {
        check_rfc7714(
            Profile::AeadAes256Gcm,
            "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
            "8040f17b8041f8d35501a0b232b1de78a822fe12ef9f78fa332e33aab18012389a58e2f3b50b2a02
             76ffae0f1ba63799b87b7aa3db36dfffd6b0f9bb7878d7a76c13",
            "81c8000d4d617273d50ae4d1f5ce5d304ba297e47d470c282c3ece5dbffe0a50a2eaa5c1110555be
             8415f658c61de0476f1b6fad1d1eb30c4446839f57ff6f6cb26ac3be800005d4",
            "91db4afbfeee5a978fab4393ed2615fe",
        );
    }

    #[test]
    fn cm_srtcp_matches_a_captured_packet() {
        // A browser's SRTCP sender report and SDES (index 1) with the DTLS keying material it
        // was sent under, from str0m's test data: it checks the whole chain (the client's half
        // of the keying material, the KDF's RTCP labels, the IV, the tag) in one go.
        let km = hex(
            "2CB02346B42276A672CFD143AEC2D5EEDDDE55F0AD7BCAC22666F1C6386173ED6EB25CB7D26A61A1
             EE2C210ADAE760AAA2FD67B672C41AED105F9D36",
        );
        let srtcp = hex(
            "80C800063CD7CC13B7C831DCB776CD8DC26FDA1D9BFC8EE6589A1A8A49289CAEB264200C37D2D0A4
             AFAC6385FFC60DEC7D06D4873DD3A8CC80000001B7BB526521D1E73C0FC0",
        );
        let plain = hex(
            "80c800063cd7cc13e2ee35c8604e618c26f32734000000430000140781ca00063cd7cc130110386e
             467532685766724d44724766346f0000",
        );
        let receiver = SrtcpReceiver::new(Profile::Aes128CmSha1_80, &km, false).unwrap();
        let mut out = Vec::new();
        assert!(receiver.unprotect_rtcp(&srtcp, &mut out));
        assert_eq!(out, plain);

        let mut sender = SrtpSender::new(Profile::Aes128CmSha1_80, &km, true).unwrap();
        sender.srtcp_index = 1;
        let mut packet = plain.clone();
        sender.protect_rtcp(&mut packet);
        assert_eq!(packet, srtcp);

        // The server's half does not open it.
        let wrong = SrtcpReceiver::new(Profile::Aes128CmSha1_80, &km, true).unwrap();
        assert!(!wrong.unprotect_rtcp(&srtcp, &mut out));
    }

    #[test]
    fn rtp_round_trips_for_every_profile() {
        let ssrc = 0x1122_3344;
        for profile in ALL {
            let km = keying_material(profile);
            let sender = SrtpSender::new(profile, &km, true).unwrap();
            assert_eq!(sender.profile(), profile);
            let receiver = SrtcpReceiver::new(profile, &km, false).unwrap();
            // The receiver for the other direction holds the other keys.
            let other_way = SrtcpReceiver::new(profile, &km, true).unwrap();
            for roc in [0, 1, 0x1234_5678, u32::MAX] {
                for payload_len in [0, 1, 15, 16, 17, 1200] {
                    let (plain, hl) = rtp_packet(ssrc, 0xFFFE, payload_len);
                    let mut packet = plain.clone();
                    sender.protect_rtp(&mut packet, hl, roc);
                    let what = format!("{profile:?} roc {roc} payload {payload_len}");
                    assert_eq!(packet.len(), plain.len() + profile.rtp_overhead(), "{what}");
                    assert_eq!(packet[..hl], plain[..hl], "{what}");
                    if payload_len >= 16 {
                        assert_ne!(packet[hl..plain.len()], plain[hl..], "{what}");
                    }

                    let mut wrong = packet.clone();
                    assert!(!receiver.unprotect_rtp(&mut wrong, hl, roc.wrapping_add(1)));
                    let mut wrong = packet.clone();
                    assert!(!other_way.unprotect_rtp(&mut wrong, hl, roc), "{what}");
                    let mut tampered_at = vec![1, 3, 9, hl - 1, packet.len() - 1];
                    if payload_len > 0 {
                        tampered_at.push(hl);
                    }
                    for at in tampered_at {
                        let mut tampered = packet.clone();
                        tampered[at] ^= 0x01;
                        assert!(
                            !receiver.unprotect_rtp(&mut tampered, hl, roc),
                            "{what} {at}"
                        );
                    }
                    assert!(receiver.unprotect_rtp(&mut packet, hl, roc), "{what}");
                    assert_eq!(packet, plain, "{what}");
                }

                // The ROC is in the keystream or nonce, not only in the tag.
                let (plain, hl) = rtp_packet(ssrc, 7, 64);
                let (mut a, mut b) = (plain.clone(), plain.clone());
                sender.protect_rtp(&mut a, hl, roc);
                sender.protect_rtp(&mut b, hl, roc.wrapping_add(1));
                assert_ne!(a[hl..hl + 64], b[hl..hl + 64]);
            }
        }
    }

    #[test]
    fn the_two_halves_of_the_keying_material_differ() {
        for profile in ALL {
            let km = keying_material(profile);
            let (plain, hl) = rtp_packet(1, 2, 32);
            let mut outputs = Vec::new();
            for client in [true, false] {
                let mut packet = plain.clone();
                SrtpSender::new(profile, &km, client)
                    .unwrap()
                    .protect_rtp(&mut packet, hl, 0);
                outputs.push(packet);
            }
            assert_ne!(outputs[0], outputs[1], "{profile:?}");
        }
    }

    #[test]
    fn rtcp_round_trips_for_every_profile() {
        for profile in ALL {
            let km = keying_material(profile);
            let mut sender = SrtpSender::new(profile, &km, false).unwrap();
            let receiver = SrtcpReceiver::new(profile, &km, true).unwrap();
            let plain = rtcp_packet();
            let mut out = vec![1, 2, 3];
            for index in 0..3_u32 {
                let mut packet = plain.clone();
                sender.protect_rtcp(&mut packet);
                assert_eq!(packet.len(), plain.len() + profile.rtcp_overhead());
                assert_eq!(packet[..8], plain[..8]);
                assert_ne!(packet[8..plain.len()], plain[8..]);
                let e_index_at = match profile {
                    Profile::Aes128CmSha1_80 => plain.len(),
                    _ => plain.len() + GCM_TAG_LEN,
                };
                let e_index = be_u32(&packet[e_index_at..]);
                assert_eq!(e_index, E_FLAG | index, "{profile:?}");

                assert!(receiver.unprotect_rtcp(&packet, &mut out), "{profile:?}");
                assert_eq!(out, plain);
                for at in 0..packet.len() {
                    let mut tampered = packet.clone();
                    tampered[at] ^= 0x80;
                    assert!(!receiver.unprotect_rtcp(&tampered, &mut out), "{at}");
                    assert!(out.is_empty());
                }
                for len in 0..8 + profile.rtcp_overhead() {
                    assert!(!receiver.unprotect_rtcp(&packet[..len], &mut out));
                }
            }
            // A bare 8-byte RTCP header (an empty RR) is protected too.
            let mut packet = plain[..8].to_vec();
            sender.protect_rtcp(&mut packet);
            assert!(receiver.unprotect_rtcp(&packet, &mut out));
            assert_eq!(out, plain[..8]);
        }
    }

    #[test]
    fn srtcp_index_wraps_at_31_bits() {
        let km = keying_material(Profile::AeadAes128Gcm);
        let mut sender = SrtpSender::new(Profile::AeadAes128Gcm, &km, true).unwrap();
        let receiver = SrtcpReceiver::new(Profile::AeadAes128Gcm, &km, false).unwrap();
        sender.srtcp_index = SRTCP_INDEX_MASK;
        let mut out = Vec::new();
        for expected in [E_FLAG | SRTCP_INDEX_MASK, E_FLAG] {
            let mut packet = rtcp_packet();
            sender.protect_rtcp(&mut packet);
            assert_eq!(be_u32(&packet[packet.len() - 4..]), expected);
            assert!(receiver.unprotect_rtcp(&packet, &mut out));
        }
    }

    #[test]
    fn malformed_input_is_cleared_not_sent_in_the_clear() {
        for profile in ALL {
            let mut sender = SrtpSender::new(profile, &keying_material(profile), true).unwrap();
            let (plain, hl) = rtp_packet(1, 1, 10);
            for bad in [0, 11, plain.len() + 1] {
                let mut packet = plain.clone();
                sender.protect_rtp(&mut packet, bad, 0);
                assert!(packet.is_empty(), "{profile:?} {bad}");
            }
            let mut packet = plain.clone();
            sender.protect_rtp(&mut packet, hl + 10, 0);
            assert_eq!(packet.len(), plain.len() + profile.rtp_overhead());
            let mut packet = vec![0x80, 201, 0, 1, 0, 0, 0];
            sender.protect_rtcp(&mut packet);
            assert!(packet.is_empty());
        }
    }

    #[test]
    fn keying_material_length_is_checked() {
        for profile in ALL {
            let len = profile.keying_material_len();
            for wrong in [0, len - 1, len + 1] {
                let km = vec![0; wrong];
                assert!(SrtpSender::new(profile, &km, true).is_err());
                assert!(SrtcpReceiver::new(profile, &km, true).is_err());
            }
        }
        assert_eq!(Profile::Aes128CmSha1_80.keying_material_len(), 60);
        assert_eq!(Profile::AeadAes128Gcm.keying_material_len(), 56);
        assert_eq!(Profile::AeadAes256Gcm.keying_material_len(), 88);
        assert!(!KeyError.to_string().is_empty());
    }

    #[test]
    fn profiles_map_from_str0m() {
        use str0m::crypto::dtls::SrtpProfile;
        for p in SrtpProfile::ALL {
            let ours = Profile::from_str0m(*p).unwrap();
            assert_eq!(ours.keying_material_len(), p.keying_material_len(), "{p}");
        }
        assert_eq!(
            Profile::from_str0m(SrtpProfile::AES128_CM_SHA1_80),
            Some(Profile::Aes128CmSha1_80)
        );
        assert_eq!(
            Profile::from_str0m(SrtpProfile::AEAD_AES_256_GCM),
            Some(Profile::AeadAes256Gcm)
        );
    }

    #[test]
    fn sender_and_receiver_can_move_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<SrtpSender>();
        send_sync::<SrtcpReceiver>();
    }

    /// str0m's own SRTP pieces (its aws-lc-rs ciphers and its IV and tag helpers) open what
    /// this module protects, given the session keys this module derived.
    #[test]
    fn str0m_opens_what_we_protect() {
        use str0m::crypto::{AeadAes128Gcm, AeadAes256Gcm, Aes128CmSha1_80};

        let provider = str0m::crypto::from_feature_flags();
        let srtp = provider.srtp_provider;
        let hmac = provider.sha1_hmac_provider;
        let (ssrc, seq, roc) = (0xCAFE_F00D_u32, 0xFFF0_u16, 3_u32);
        for profile in ALL {
            for client in [true, false] {
                let km = keying_material(profile);
                let mut sender = SrtpSender::new(profile, &km, client).unwrap();
                let [key, auth, salt] = session(profile, &km, client, 0);
                let [rkey, rauth, rsalt] = session(profile, &km, client, LABEL_RTCP);

                let (plain, hl) = rtp_packet(ssrc, seq, 1200);
                let mut packet = plain.clone();
                sender.protect_rtp(&mut packet, hl, roc);
                let body = &packet[hl..];
                let mut out = vec![0; body.len()];
                match profile {
                    Profile::Aes128CmSha1_80 => {
                        let index = (u64::from(roc) << 16) | u64::from(seq);
                        let (authenticated, tag) = packet.split_at(packet.len() - CM_TAG_LEN);
                        let sha1 = |k: &[u8], d: &[&[u8]]| hmac.sha1_hmac(k, d);
                        assert!(Aes128CmSha1_80::rtp_verify(
                            sha1,
                            &auth,
                            authenticated,
                            index,
                            tag
                        ));
                        let iv = Aes128CmSha1_80::rtp_iv(salt.try_into().unwrap(), ssrc, index);
                        let mut cipher = srtp
                            .aes_128_cm_sha1_80()
                            .create_cipher(key.try_into().unwrap(), false);
                        let ciphertext = &authenticated[hl..];
                        cipher.decrypt(&iv, ciphertext, &mut out).unwrap();
                        out.truncate(ciphertext.len());
                    }
                    Profile::AeadAes128Gcm => {
                        let salt = salt.try_into().unwrap();
                        let iv = AeadAes128Gcm::rtp_iv(salt, ssrc, roc, seq);
                        let mut cipher = srtp
                            .aead_aes_128_gcm()
                            .create_cipher(key.try_into().unwrap(), false);
                        let n = cipher
                            .decrypt(&iv, &[&packet[..hl]], body, &mut out)
                            .unwrap();
                        out.truncate(n);
                    }
                    Profile::AeadAes256Gcm => {
                        let salt = salt.try_into().unwrap();
                        let iv = AeadAes256Gcm::rtp_iv(salt, ssrc, roc, seq);
                        let mut cipher = srtp
                            .aead_aes_256_gcm()
                            .create_cipher(key.try_into().unwrap(), false);
                        let n = cipher
                            .decrypt(&iv, &[&packet[..hl]], body, &mut out)
                            .unwrap();
                        out.truncate(n);
                    }
                }
                assert_eq!(out, plain[hl..], "{profile:?} RTP");

                // SRTCP, with a nonzero index.
                let plain = rtcp_packet();
                let rtcp_ssrc = be_u32(&plain[4..8]);
                sender.protect_rtcp(&mut Vec::from(&plain[..]));
                let mut packet = plain.clone();
                sender.protect_rtcp(&mut packet);
                let index = 1;
                let n = plain.len() - 8;
                let mut out = vec![0; n + GCM_TAG_LEN];
                match profile {
                    Profile::Aes128CmSha1_80 => {
                        let (authenticated, tag) = packet.split_at(packet.len() - CM_TAG_LEN);
                        let sha1 = |k: &[u8], d: &[&[u8]]| hmac.sha1_hmac(k, d);
                        assert!(Aes128CmSha1_80::rtcp_verify(
                            sha1,
                            &rauth,
                            authenticated,
                            tag
                        ));
                        let iv = Aes128CmSha1_80::rtp_iv(
                            rsalt.try_into().unwrap(),
                            rtcp_ssrc,
                            u64::from(index),
                        );
                        let mut cipher = srtp
                            .aes_128_cm_sha1_80()
                            .create_cipher(rkey.try_into().unwrap(), false);
                        cipher.decrypt(&iv, &packet[8..8 + n], &mut out).unwrap();
                    }
                    Profile::AeadAes128Gcm | Profile::AeadAes256Gcm => {
                        let e_index = &packet[packet.len() - 4..];
                        assert_eq!(be_u32(e_index), E_FLAG | index);
                        let aads: [&[u8]; 2] = [&packet[..8], e_index];
                        let sealed = &packet[8..packet.len() - 4];
                        let rsalt = rsalt.try_into().unwrap();
                        let got = if profile == Profile::AeadAes128Gcm {
                            let iv = AeadAes128Gcm::rtcp_iv(rsalt, rtcp_ssrc, index);
                            let mut cipher = srtp
                                .aead_aes_128_gcm()
                                .create_cipher(rkey.try_into().unwrap(), false);
                            cipher.decrypt(&iv, &aads, sealed, &mut out).unwrap()
                        } else {
                            let iv = AeadAes256Gcm::rtcp_iv(rsalt, rtcp_ssrc, index);
                            let mut cipher = srtp
                                .aead_aes_256_gcm()
                                .create_cipher(rkey.try_into().unwrap(), false);
                            cipher.decrypt(&iv, &aads, sealed, &mut out).unwrap()
                        };
                        assert_eq!(got, n);
                    }
                }
                assert_eq!(out[..n], plain[8..], "{profile:?} RTCP");
            }
        }
    }

    /// Nanoseconds per protect_rtp of a 1200-byte packet, per profile. Run in release:
    /// `cargo test --release --lib srtp -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn measure_protect_rtp() {
        use std::hint::black_box;
        use std::time::Instant;

        const ROUNDS: u32 = 200_000;
        for profile in ALL {
            let sender = SrtpSender::new(profile, &keying_material(profile), true).unwrap();
            let mut packet = vec![0x80, 96, 0, 1, 0, 0, 0, 1, 0x12, 0x34, 0x56, 0x78];
            packet.resize(1200, 0xA5);
            packet.reserve(profile.rtp_overhead());
            let mut seq = 0_u16;
            let mut run = |rounds: u32| {
                let start = Instant::now();
                for _ in 0..rounds {
                    packet.truncate(1200);
                    seq = seq.wrapping_add(1);
                    packet[2..4].copy_from_slice(&seq.to_be_bytes());
                    sender.protect_rtp(black_box(&mut packet), 12, 0);
                }
                start.elapsed()
            };
            run(ROUNDS / 10);
            let elapsed = run(ROUNDS);
            let ns = elapsed.as_nanos() as f64 / f64::from(ROUNDS);
            println!("{profile:?}: {ns:.0} ns per 1200-byte protect_rtp");
        }
    }
}
