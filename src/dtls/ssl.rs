//! DTLS 1.2 on OpenSSL, for peers with RSA or ECDSA certificates.
//!
//! RFC 8827 §6.5 asks every WebRTC endpoint for TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 as well
//! as TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256. dimpl does ECDSA only, and GStreamer's webrtcbin
//! (and what is built on it) signs its DTLS with an RSA key: as the DTLS server it needs an
//! ECDHE_RSA suite, as the client an RSA CertificateVerify. OpenSSL does both, while our own
//! certificate stays ECDSA P-256.
//!
//! The handshake runs on memory buffers (sans-IO, as str0m expects). Records that OpenSSL
//! writes in one call are packed into as few datagrams as the MTU allows (RFC 6347 §4.1.1):
//! OpenSSL sends each handshake message in a datagram of its own, so a flight of five
//! messages would otherwise be lost five times as often on a lossy path.
//!
//! OpenSSL keeps its flight timer on the system clock and asks [`flight_timer`] for each wait:
//! the schedule is [`ssl_flight_delay`]. OpenSSL gives up on a flight after
//! [`SSL_FLIGHT_RETRANSMITS`] retransmissions, which the schedule spends as 9 quick ones (the
//! first second) and 3 every [`FLIGHT_SLOW_RTO`], so an unanswered flight fails after 8.85 s.

use std::collections::VecDeque;
use std::ffi::{c_int, c_long, c_uint, c_void};
use std::io::{self, Read, Write};
use std::panic::{RefUnwindSafe, UnwindSafe};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use foreign_types::ForeignTypeRef;
use openssl::ex_data::Index;
use openssl::pkey::PKey;
use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslMethod, SslOptions, SslRef, SslStream, SslVerifyMode, SslVersion,
};
use openssl::x509::X509;
use str0m::crypto::dtls::{
    DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, KeyingMaterial,
    ProtocolVersion, SrtpProfile,
};
use str0m::crypto::CryptoError;

use dimpl::CryptoOperation;

use super::{flight_delay, FLIGHT_SLOW_RTO};

/// Retransmissions of one flight OpenSSL makes before it fails the handshake
/// (`DTLS1_TMO_ALERT_COUNT`).
pub const SSL_FLIGHT_RETRANSMITS: u32 = 12;
/// Retransmissions made on the quick schedule ([`flight_delay`]: 50 ms, then every 100 ms);
/// the rest of [`SSL_FLIGHT_RETRANSMITS`] wait [`FLIGHT_SLOW_RTO`] each.
pub const SSL_QUICK_RETRANSMITS: u32 = 9;

/// Suites offered and accepted, ECDSA ones first: AES-128-GCM with both kinds of certificate
/// (RFC 8827 §6.5), then AES-256-GCM and ChaCha20-Poly1305.
const CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
const GROUPS: &str = "X25519:P-256:P-384";
/// The SRTP profiles str0m can run, in dimpl's order of preference.
const SRTP_PROFILES: &str = "SRTP_AEAD_AES_256_GCM:SRTP_AEAD_AES_128_GCM:SRTP_AES128_CM_SHA1_80";
/// RFC 5764 §4.2.
const SRTP_EXPORTER_LABEL: &str = "EXTRACTOR-dtls_srtp";
/// When no MTU is given (str0m always gives one).
const DEFAULT_MTU: usize = 1150;
/// Largest application datagram read at once (an SCTP packet fits in one record).
const READ_BUF_LEN: usize = 16 * 1024;

thread_local! {
    /// Where application data is read into, one per thread rather than per session: a
    /// session seldom reads any, and 16 KiB each was near a tenth of a viewer's memory.
    static READ_BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; READ_BUF_LEN]);
}

/// A timer that is not running, as far ahead as str0m needs it to be.
const NO_TIMER: Duration = Duration::from_secs(365 * 24 * 3600);

// Not in openssl-sys; both are in libssl since 1.1.1.
const DTLS_CTRL_GET_TIMEOUT: c_int = 73;
const DTLS_CTRL_HANDLE_TIMEOUT: c_int = 74;
type DtlsTimerCb = unsafe extern "C" fn(*mut openssl_sys::SSL, c_uint) -> c_uint;
extern "C" {
    fn DTLS_set_timer_cb(s: *mut openssl_sys::SSL, cb: Option<DtlsTimerCb>);
    fn SSL_alloc_buffers(s: *mut openssl_sys::SSL) -> c_int;
    fn SSL_free_buffers(s: *mut openssl_sys::SSL) -> c_int;
}

/// The wait before retransmission number `sends + 1` of a flight sent `sends` times so far
/// since its first send.
pub fn ssl_flight_delay(retransmitted: u32) -> Duration {
    if retransmitted < SSL_QUICK_RETRANSMITS {
        flight_delay(retransmitted, Duration::ZERO)
    } else {
        FLIGHT_SLOW_RTO
    }
}

/// The current flight's retransmissions, kept with the `Ssl` for [`flight_timer`].
#[derive(Default)]
struct FlightCount {
    retransmitted: u32,
    /// Every wait asked for, oldest first (only with `record`, for tests).
    record: Option<Vec<Duration>>,
}

fn flight_index() -> Index<Ssl, Mutex<FlightCount>> {
    static INDEX: OnceLock<Index<Ssl, Mutex<FlightCount>>> = OnceLock::new();
    *INDEX.get_or_init(|| Ssl::new_ex_index().expect("an SSL ex_data index"))
}

/// OpenSSL asks this for the wait before the next retransmission: with `previous_us` 0 when
/// a new flight has just been sent, else when the flight has just been sent again.
unsafe extern "C" fn flight_timer(ssl: *mut openssl_sys::SSL, previous_us: c_uint) -> c_uint {
    // SAFETY: OpenSSL calls this with the live SSL it was set on.
    let ssl = unsafe { SslRef::from_ptr(ssl) };
    let delay = match ssl.ex_data(flight_index()) {
        Some(count) => {
            let mut count = count.lock().unwrap_or_else(|e| e.into_inner());
            if previous_us == 0 {
                count.retransmitted = 0;
            } else {
                count.retransmitted += 1;
            }
            let delay = ssl_flight_delay(count.retransmitted);
            if let Some(record) = &mut count.record {
                record.push(delay);
            }
            delay
        }
        None => ssl_flight_delay(0),
    };
    delay.as_micros().min(u128::from(c_uint::MAX)) as c_uint
}

/// The provider str0m asks for each session's DTLS.
#[derive(Debug)]
pub(super) struct OpensslDtls;

pub(super) static OPENSSL_DTLS: OpensslDtls = OpensslDtls;

impl DtlsProvider for OpensslDtls {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        // ECDSA P-256: what every WebRTC endpoint accepts (RFC 8827 §6.5).
        str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        _version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        // DTLS 1.3 is not asked for by str0m's defaults, and OpenSSL 3.0 has none: every
        // version setting gets DTLS 1.2.
        let instance = Instance::new(cert, now, mtu.unwrap_or(DEFAULT_MTU), false)
            .map_err(|e| CryptoError::Other(format!("DTLS setup: {e}")))?;
        Ok(Box::new(instance))
    }
}

/// Contexts kept for reuse: one per shard's certificate, and a few more.
const CONTEXTS: usize = 64;

/// One context per certificate: the sessions of a shard share its certificate, and building
/// a context parses the certificate and key again.
fn context(cert: &DtlsCert) -> Result<SslContext, openssl::error::ErrorStack> {
    static KEPT: Mutex<VecDeque<(Vec<u8>, SslContext)>> = Mutex::new(VecDeque::new());
    let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, ctx)) = kept.iter().find(|(der, _)| *der == cert.certificate) {
        return Ok(ctx.clone());
    }
    let mut b = SslContext::builder(SslMethod::dtls())?;
    b.set_min_proto_version(Some(SslVersion::DTLS1_2))?;
    b.set_cipher_list(CIPHERS)?;
    b.set_groups_list(GROUPS)?;
    b.set_tlsext_use_srtp(SRTP_PROFILES)?;
    let x509 = X509::from_der(&cert.certificate)?;
    let key = PKey::private_key_from_der(&cert.private_key)?;
    b.set_certificate(&x509)?;
    b.set_private_key(&key)?;
    b.check_private_key()?;
    // Self-signed certificates all: str0m checks the peer's against the SDP fingerprint
    // (RFC 8122). A server asks the client for one with this, and both ends require it.
    b.set_verify_callback(
        SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
        |_, _| true,
    );
    b.set_options(SslOptions::NO_QUERY_MTU | SslOptions::NO_RENEGOTIATION);
    // OpenSSL ignores RELEASE_BUFFERS for DTLS: `Instance::with_buffers` frees them instead.
    let ctx = b.build();
    if kept.len() == CONTEXTS {
        kept.pop_front();
    }
    kept.push_back((cert.certificate.clone(), ctx.clone()));
    Ok(ctx)
}

/// Datagrams in, records out: the memory OpenSSL reads and writes through.
#[derive(Default)]
struct Io {
    incoming: VecDeque<Vec<u8>>,
    records: Vec<Vec<u8>>,
}

impl Read for Io {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.incoming.pop_front() {
            Some(d) => {
                let n = d.len().min(buf.len());
                buf[..n].copy_from_slice(&d[..n]);
                Ok(n)
            }
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for Io {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.records.push(buf.to_vec());
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum Out {
    Packet(Vec<u8>),
    PeerCert(Vec<u8>),
    Keying(KeyingMaterial, SrtpProfile),
    Connected,
    Data(Vec<u8>),
    CloseNotify,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before `set_active`.
    Idle,
    Handshaking,
    Connected,
    /// Closed by either end, or failed.
    Closed,
}

/// One session's DTLS.
pub(super) struct Instance {
    stream: SslStream<Io>,
    state: State,
    active: bool,
    /// str0m's time at the last call: timeouts are given on its clock.
    now: Instant,
    mtu: usize,
    out: VecDeque<Out>,
    /// The next timeout, found after each call into OpenSSL, and whether OpenSSL's flight
    /// timer runs at all.
    timeout: Instant,
    timer_running: bool,
}

// The stream's raw pointers are only touched through `&mut self`; a panic inside a call
// leaves at worst one session's DTLS broken, which str0m's owner then drops.
impl UnwindSafe for Instance {}
impl RefUnwindSafe for Instance {}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("state", &self.state)
            .finish()
    }
}

/// dimpl's error type, which str0m's interface uses, has no room for OpenSSL's text: that
/// goes to the debug log.
fn failed(op: CryptoOperation, what: &str, e: impl std::fmt::Display) -> DtlsImplError {
    tracing::debug!("DTLS {what}: {e}");
    DtlsImplError::CryptoError(dimpl::CryptoError::OperationFailed(op))
}

impl Instance {
    /// `record` keeps every flight wait asked for (tests of the schedule).
    fn new(
        cert: &DtlsCert,
        now: Instant,
        mtu: usize,
        record: bool,
    ) -> Result<Instance, openssl::error::ErrorStack> {
        let ctx = context(cert)?;
        let mut ssl = Ssl::new(&ctx)?;
        ssl.set_mtu(mtu as u32)?;
        ssl.set_ex_data(
            flight_index(),
            Mutex::new(FlightCount {
                retransmitted: 0,
                record: record.then(Vec::new),
            }),
        );
        // SAFETY: a valid SSL, and a callback of the signature OpenSSL declares.
        unsafe { DTLS_set_timer_cb(ssl.as_ptr(), Some(flight_timer)) };
        let stream = SslStream::new(ssl, Io::default())?;
        Ok(Instance {
            stream,
            state: State::Idle,
            active: false,
            now,
            mtu,
            out: VecDeque::new(),
            timeout: now + NO_TIMER,
            timer_running: false,
        })
    }

    fn ssl_ptr(&self) -> *mut openssl_sys::SSL {
        self.stream.ssl().as_ptr()
    }

    /// Runs `f`, a call into OpenSSL, with the record layer's buffers there, and frees them
    /// after it once the handshake is done.
    ///
    /// OpenSSL keeps a DTLS connection's read and write buffers (32.6 KiB, measured by
    /// `kept_after_the_handshake`) for its whole life: its RELEASE_BUFFERS mode skips DTLS.
    /// After the handshake a session reads or writes a record only now and then (a flight
    /// sent again, an alert), so the buffers are allocated around each call instead.
    /// OpenSSL's DTLS write path does not allocate them itself, hence the explicit
    /// allocation before the call.
    fn with_buffers<R>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<R, DtlsImplError>,
    ) -> Result<R, DtlsImplError> {
        if self.state == State::Connected {
            // SAFETY: a valid SSL; allocates only what is missing.
            if unsafe { SSL_alloc_buffers(self.ssl_ptr()) } != 1 {
                self.state = State::Closed;
                return Err(failed(CryptoOperation::Decrypt, "buffers", "no memory"));
            }
        }
        let r = f(self);
        if self.state == State::Connected {
            // SAFETY: a valid SSL, between calls; OpenSSL declines while a record is
            // pending in either buffer.
            unsafe { SSL_free_buffers(self.ssl_ptr()) };
        }
        r
    }

    /// Reads whatever has come in, moving the handshake on, then picks up what was written.
    fn drive(&mut self) -> Result<(), DtlsImplError> {
        let result = self.with_buffers(|i| i.advance());
        if result.is_err() {
            self.state = State::Closed;
        }
        self.collect();
        result
    }

    fn advance(&mut self) -> Result<(), DtlsImplError> {
        if self.state == State::Handshaking {
            match self.stream.do_handshake() {
                Ok(()) => self.connected()?,
                Err(e) if e.code() == ErrorCode::WANT_READ || e.code() == ErrorCode::WANT_WRITE => {
                    return Ok(())
                }
                Err(e) => return Err(failed(CryptoOperation::VerifySignature, "handshake", e)),
            }
        }
        while self.state == State::Connected {
            let read = READ_BUF.with_borrow_mut(|buf| match self.stream.ssl_read(buf) {
                Ok(n) => Ok(buf[..n].to_vec()),
                Err(e) => Err(e),
            });
            match read {
                Ok(data) if data.is_empty() => {}
                Ok(data) => self.out.push_back(Out::Data(data)),
                Err(e) if e.code() == ErrorCode::WANT_READ || e.code() == ErrorCode::WANT_WRITE => {
                    break
                }
                Err(e) if e.code() == ErrorCode::ZERO_RETURN => {
                    self.out.push_back(Out::CloseNotify);
                    self.state = State::Closed;
                }
                Err(e) => return Err(failed(CryptoOperation::Decrypt, "read", e)),
            }
        }
        Ok(())
    }

    fn connected(&mut self) -> Result<(), DtlsImplError> {
        let ssl = self.stream.ssl();
        let cert = ssl
            .peer_certificate()
            .ok_or_else(|| {
                failed(
                    CryptoOperation::VerifySignature,
                    "handshake",
                    "no peer certificate",
                )
            })?
            .to_der()
            .map_err(|e| failed(CryptoOperation::VerifySignature, "peer certificate", e))?;
        let profile = match ssl.selected_srtp_profile().map(|p| p.name()) {
            Some("SRTP_AEAD_AES_256_GCM") => SrtpProfile::AEAD_AES_256_GCM,
            Some("SRTP_AEAD_AES_128_GCM") => SrtpProfile::AEAD_AES_128_GCM,
            Some("SRTP_AES128_CM_SHA1_80") => SrtpProfile::AES128_CM_SHA1_80,
            other => {
                return Err(failed(
                    CryptoOperation::ExtractSrtpKeyingMaterial,
                    "SRTP profile",
                    format!("{other:?}"),
                ))
            }
        };
        let mut keying = vec![0; profile.keying_material_len()];
        ssl.export_keying_material(&mut keying, SRTP_EXPORTER_LABEL, None)
            .map_err(|e| {
                failed(
                    CryptoOperation::ExtractSrtpKeyingMaterial,
                    "SRTP keying material",
                    e,
                )
            })?;
        self.out.push_back(Out::PeerCert(cert));
        self.out
            .push_back(Out::Keying(KeyingMaterial::new(&keying), profile));
        self.out.push_back(Out::Connected);
        self.state = State::Connected;
        Ok(())
    }

    /// Packs the records written since the last call into datagrams of at most the MTU,
    /// and reads the flight timer.
    fn collect(&mut self) {
        let records = std::mem::take(&mut self.stream.get_mut().records);
        let mut datagram: Vec<u8> = Vec::new();
        for record in records {
            if !datagram.is_empty() && datagram.len() + record.len() > self.mtu {
                self.out
                    .push_back(Out::Packet(std::mem::take(&mut datagram)));
            }
            datagram.extend_from_slice(&record);
        }
        if !datagram.is_empty() {
            self.out.push_back(Out::Packet(datagram));
        }
        let mut left = libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        };
        // SAFETY: a valid SSL and a timeval for OpenSSL to fill in.
        let running = unsafe {
            openssl_sys::SSL_ctrl(
                self.ssl_ptr(),
                DTLS_CTRL_GET_TIMEOUT,
                0,
                &mut left as *mut libc::timeval as *mut c_void,
            )
        } == 1;
        self.timer_running = running;
        self.timeout = if running {
            let left = Duration::from_secs(left.tv_sec.max(0) as u64)
                + Duration::from_micros(left.tv_usec.max(0) as u64);
            self.now + left
        } else {
            self.now + NO_TIMER
        };
    }
}

impl DtlsInstance for Instance {
    fn set_active(&mut self, active: bool) {
        if self.state != State::Idle {
            return;
        }
        self.active = active;
        // SAFETY: a valid SSL, before its handshake starts.
        unsafe {
            if active {
                openssl_sys::SSL_set_connect_state(self.ssl_ptr());
            } else {
                openssl_sys::SSL_set_accept_state(self.ssl_ptr());
            }
        }
        self.state = State::Handshaking;
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        match self.state {
            State::Idle | State::Closed => return Ok(()),
            _ => {}
        }
        // An empty packet starts a client's handshake (str0m's way to ask for ClientHello).
        if !packet.is_empty() {
            self.stream.get_mut().incoming.push_back(packet.to_vec());
        }
        self.drive()
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        let needed = match self.out.front() {
            None => return DtlsOutput::Timeout(self.timeout),
            Some(Out::Packet(b) | Out::PeerCert(b) | Out::Data(b)) => b.len(),
            Some(_) => 0,
        };
        if needed > buf.len() {
            return DtlsOutput::BufferTooSmall { needed };
        }
        match self.out.pop_front() {
            Some(Out::Packet(b)) => {
                buf[..needed].copy_from_slice(&b);
                DtlsOutput::Packet(&buf[..needed])
            }
            Some(Out::PeerCert(b)) => {
                buf[..needed].copy_from_slice(&b);
                DtlsOutput::PeerCert(&buf[..needed])
            }
            Some(Out::Data(b)) => {
                buf[..needed].copy_from_slice(&b);
                DtlsOutput::ApplicationData(&buf[..needed])
            }
            Some(Out::Keying(k, p)) => {
                super::keys_handed_out(&k, p, self.active);
                DtlsOutput::KeyingMaterial(k, p)
            }
            Some(Out::Connected) => DtlsOutput::Connected,
            Some(Out::CloseNotify) => DtlsOutput::CloseNotify,
            None => DtlsOutput::Timeout(self.timeout),
        }
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.now = self.now.max(now);
        if self.state == State::Idle || self.state == State::Closed {
            return Ok(());
        }
        // OpenSSL sends the flight again if its timer, on the system clock, has run out.
        // After the handshake its timer does not run (`collect` reads it): nothing to do.
        if self.state == State::Connected && !self.timer_running {
            return Ok(());
        }
        let r = self.with_buffers(|i| {
            // SAFETY: a valid SSL.
            Ok(unsafe {
                openssl_sys::SSL_ctrl(
                    i.ssl_ptr(),
                    DTLS_CTRL_HANDLE_TIMEOUT,
                    0 as c_long,
                    std::ptr::null_mut(),
                )
            })
        })?;
        if r < 0 {
            self.state = State::Closed;
            self.collect();
            tracing::debug!(
                "DTLS flight unanswered after {SSL_FLIGHT_RETRANSMITS} retransmissions"
            );
            return Err(DtlsImplError::Timeout(dimpl::TimeoutError::Connect));
        }
        self.collect();
        Ok(())
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        if self.state != State::Connected {
            return Ok(0);
        }
        if data.is_empty() {
            return Ok(0);
        }
        let r = self.with_buffers(|i| {
            i.stream
                .ssl_write(data)
                .map_err(|e| failed(CryptoOperation::Encrypt, "write", e))
        });
        self.collect();
        r
    }

    fn is_active(&self) -> bool {
        self.active
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        matches!(self.state, State::Connected).then_some(ProtocolVersion::DTLS1_2)
    }

    fn is_closing(&self) -> bool {
        self.state == State::Closed && !self.out.is_empty()
    }

    fn is_closed(&self) -> bool {
        self.state == State::Closed && self.out.is_empty()
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        if self.state == State::Connected {
            // close_notify; the peer's answer is not waited for.
            let _ = self.with_buffers(|i| {
                let _ = i.stream.shutdown();
                Ok(())
            });
            self.collect();
        }
        self.state = State::Closed;
        Ok(())
    }
}

#[cfg(test)]
impl Instance {
    /// An instance that keeps every flight wait OpenSSL asks for.
    pub(super) fn recording(cert: &DtlsCert, now: Instant) -> Instance {
        Instance::new(cert, now, DEFAULT_MTU, true).expect("dtls")
    }

    /// The waits asked for so far, oldest first.
    pub(super) fn waits(&self) -> Vec<Duration> {
        self.stream
            .ssl()
            .ex_data(flight_index())
            .and_then(|c| c.lock().ok().and_then(|c| c.record.clone()))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtls::{
        ecdsa_certificate, rsa_certificate, FLIGHT_MAX_RTO, FLIGHT_START_RTO, LOSSY_PATH_DTLS,
    };

    /// One end of a handshake and what it has put out.
    struct End {
        d: Box<dyn DtlsInstance>,
        connected: bool,
        peer_cert: Option<Vec<u8>>,
        keying: Option<(Vec<u8>, SrtpProfile)>,
        data: Vec<Vec<u8>>,
        timeout: Instant,
    }

    impl End {
        fn new(mut d: Box<dyn DtlsInstance>, active: bool, now: Instant) -> End {
            d.set_active(active);
            d.handle_timeout(now).expect("init");
            if active {
                d.handle_packet(&[]).expect("start");
            }
            End {
                d,
                connected: false,
                peer_cert: None,
                keying: None,
                data: Vec::new(),
                timeout: now,
            }
        }

        fn openssl(cert: &DtlsCert, active: bool, now: Instant) -> End {
            let d = OPENSSL_DTLS
                .new_dtls(cert, now, DtlsVersion::Dtls12, Some(DEFAULT_MTU))
                .expect("dtls");
            End::new(d, active, now)
        }

        /// The datagrams put out until the timeout.
        fn drain(&mut self) -> Vec<Vec<u8>> {
            let mut buf = vec![0; 2000];
            let mut out = Vec::new();
            loop {
                match self.d.poll_output(&mut buf) {
                    DtlsOutput::Packet(p) => out.push(p.to_vec()),
                    DtlsOutput::Timeout(t) => {
                        self.timeout = t;
                        return out;
                    }
                    DtlsOutput::Connected => self.connected = true,
                    DtlsOutput::PeerCert(c) => self.peer_cert = Some(c.to_vec()),
                    DtlsOutput::KeyingMaterial(k, p) => self.keying = Some((k.to_vec(), p)),
                    DtlsOutput::ApplicationData(a) => self.data.push(a.to_vec()),
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
    }

    /// Datagrams back and forth without loss until neither end has more; the datagram
    /// counts of each flight.
    fn exchange(ends: &mut [End; 2]) -> Vec<usize> {
        let mut flights = Vec::new();
        for _ in 0..20 {
            let mut quiet = true;
            for i in 0..2 {
                let out = ends[i].drain();
                if !out.is_empty() {
                    quiet = false;
                    flights.push(out.len());
                }
                for p in out {
                    assert!(p.len() <= DEFAULT_MTU, "{} bytes", p.len());
                    ends[1 - i].d.handle_packet(&p).expect("packet");
                }
            }
            if quiet {
                break;
            }
        }
        flights
    }

    #[test]
    fn rsa_and_ecdsa_peers_connect_either_way_round() {
        let ecdsa = ecdsa_certificate();
        let rsa = rsa_certificate();
        for (client, server) in [(&ecdsa, &ecdsa), (&rsa, &ecdsa), (&ecdsa, &rsa)] {
            let now = Instant::now();
            let mut ends = [
                End::openssl(client, true, now),
                End::openssl(server, false, now),
            ];
            let flights = exchange(&mut ends);
            let [c, s] = &mut ends;
            assert!(c.connected && s.connected, "flights {flights:?}");
            assert_eq!(c.peer_cert.as_deref(), Some(&server.certificate[..]));
            assert_eq!(s.peer_cert.as_deref(), Some(&client.certificate[..]));
            let (key, profile) = c.keying.clone().expect("client keys");
            assert_eq!(profile, SrtpProfile::AEAD_AES_256_GCM);
            assert_eq!(s.keying.as_ref().map(|k| &k.0), Some(&key));
            assert_eq!(c.d.protocol_version(), Some(ProtocolVersion::DTLS1_2));
            // Four flights, each packed into one datagram, or two with an RSA certificate.
            assert_eq!(flights.len(), 4, "{flights:?}");
            assert!(flights.iter().all(|&n| n <= 2), "{flights:?}");

            assert_eq!(c.d.send_application_data(b"sctp").expect("send"), 4);
            exchange(&mut ends);
            assert_eq!(ends[1].data, vec![b"sctp".to_vec()]);
        }
    }

    /// The server's last flight is lost: it is done, its record buffers freed, when the
    /// client sends its flight again. It answers with its last flight, and both ends then
    /// exchange data and close, each call allocating the buffers it needs.
    #[test]
    fn a_server_done_and_without_buffers_answers_a_flight_sent_again() {
        let cert = ecdsa_certificate();
        let now = Instant::now();
        let mut ends = [
            End::openssl(&cert, true, now),
            End::openssl(&cert, false, now),
        ];
        // ClientHello, the server's flight, the client's last flight.
        for from in [0, 1, 0] {
            for p in ends[from].drain() {
                ends[1 - from].d.handle_packet(&p).expect("packet");
            }
        }
        let last = ends[1].drain();
        assert!(ends[1].connected && !last.is_empty(), "the server is done");
        assert!(!ends[0].connected);
        // Lost. The client's timer runs on the system clock.
        let mut resent = Vec::new();
        while resent.is_empty() {
            std::thread::sleep(ends[0].timeout.saturating_duration_since(Instant::now()));
            ends[0].d.handle_timeout(Instant::now()).expect("timeout");
            resent = ends[0].drain();
            assert!(now.elapsed() < Duration::from_secs(5), "never sent again");
        }
        for p in resent {
            ends[1].d.handle_packet(&p).expect("packet");
        }
        exchange(&mut ends);
        assert!(ends[0].connected, "the client is done too");
        assert_eq!(ends[0].keying, ends[1].keying);

        assert_eq!(ends[0].d.send_application_data(b"one").expect("send"), 3);
        assert_eq!(ends[1].d.send_application_data(b"two").expect("send"), 3);
        exchange(&mut ends);
        assert_eq!(ends[1].data, vec![b"one".to_vec()]);
        assert_eq!(ends[0].data, vec![b"two".to_vec()]);
        ends[0].d.close().expect("close");
        let mut buf = vec![0; 2000];
        let mut closed = false;
        while let DtlsOutput::Packet(p) = ends[0].d.poll_output(&mut buf) {
            let p = p.to_vec();
            ends[1].d.handle_packet(&p).expect("close_notify");
            while !matches!(ends[1].d.poll_output(&mut buf), DtlsOutput::Timeout(_)) {
                closed = true;
            }
        }
        assert!(
            closed && ends[1].d.is_closed(),
            "the server read close_notify"
        );
    }

    /// What a session's DTLS keeps on the heap after its handshake, and what OpenSSL's
    /// record buffers would add (they are freed between calls): `cargo test --release --lib
    /// kept_after -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn kept_after_the_handshake() {
        fn heap() -> usize {
            // SAFETY: reads glibc's allocator statistics.
            unsafe { libc::mallinfo2() }.uordblks
        }
        const PAIRS: usize = 100;
        let cert = ecdsa_certificate();
        // One handshake first, so the shared context and certificate are in place.
        let now = Instant::now();
        let mut warm = [
            End::openssl(&cert, true, now),
            End::openssl(&cert, false, now),
        ];
        exchange(&mut warm);
        let before = heap();
        let mut pairs = Vec::new();
        for _ in 0..PAIRS {
            let mut ends = [
                End::openssl(&cert, true, now),
                End::openssl(&cert, false, now),
            ];
            exchange(&mut ends);
            assert!(ends[0].connected && ends[1].connected);
            pairs.push(ends);
        }
        let kept = heap().saturating_sub(before) / (2 * PAIRS);
        let freed = heap();
        for p in &pairs {
            for e in p {
                // SAFETY: a valid SSL between calls.
                let d = e.d.as_ref() as *const dyn DtlsInstance as *const Instance;
                unsafe { SSL_alloc_buffers((*d).ssl_ptr()) };
            }
        }
        let buffers = heap().saturating_sub(freed) / (2 * PAIRS);
        eprintln!(
            "per session after the handshake: {:.1} KiB kept; the record buffers would add {:.1} KiB",
            kept as f64 / 1024.0,
            buffers as f64 / 1024.0
        );
        assert!(buffers > 0);
    }

    #[test]
    fn openssl_and_dimpl_interoperate_with_ecdsa() {
        let cert = ecdsa_certificate();
        let dimpl = |active| {
            let d = LOSSY_PATH_DTLS
                .new_dtls(
                    &cert,
                    Instant::now(),
                    DtlsVersion::Dtls12,
                    Some(DEFAULT_MTU),
                )
                .expect("dimpl");
            End::new(d, active, Instant::now())
        };
        for openssl_client in [true, false] {
            let now = Instant::now();
            let openssl = End::openssl(&cert, openssl_client, now);
            let mut ends = if openssl_client {
                [openssl, dimpl(false)]
            } else {
                [dimpl(true), openssl]
            };
            exchange(&mut ends);
            assert!(ends[0].connected && ends[1].connected);
            assert_eq!(
                ends[0].keying.as_ref().map(|k| &k.0),
                ends[1].keying.as_ref().map(|k| &k.0)
            );
        }
    }

    #[test]
    fn the_schedule_spends_openssls_retransmissions_quick_then_slow() {
        let waits: Vec<Duration> = (0..SSL_FLIGHT_RETRANSMITS).map(ssl_flight_delay).collect();
        assert_eq!(waits[0], FLIGHT_START_RTO);
        assert!(waits[1..SSL_QUICK_RETRANSMITS as usize]
            .iter()
            .all(|w| *w == FLIGHT_MAX_RTO));
        assert!(waits[SSL_QUICK_RETRANSMITS as usize..]
            .iter()
            .all(|w| *w == FLIGHT_SLOW_RTO));
        // The quick sends take the first second; the flight fails 8.85 s after its first.
        let quick: Duration = waits[..SSL_QUICK_RETRANSMITS as usize].iter().sum();
        assert_eq!(quick, Duration::from_millis(850));
        let all: Duration = (0..=SSL_FLIGHT_RETRANSMITS).map(ssl_flight_delay).sum();
        assert_eq!(all, Duration::from_millis(8850));
    }

    /// On the system clock, as OpenSSL times it: about 9 s.
    #[test]
    fn an_unanswered_flight_is_sent_on_the_schedule_then_fails() {
        let cert = ecdsa_certificate();
        let start = Instant::now();
        let mut d = Instance::recording(&cert, start);
        d.set_active(true);
        d.handle_timeout(start).expect("init");
        d.handle_packet(&[]).expect("start");
        let mut buf = vec![0; 2000];
        let mut sends = Vec::new();
        loop {
            let mut datagrams = 0;
            let timeout = loop {
                match d.poll_output(&mut buf) {
                    DtlsOutput::Packet(_) => datagrams += 1,
                    DtlsOutput::Timeout(t) => break t,
                    other => panic!("unexpected {other:?}"),
                }
            };
            if datagrams > 0 {
                assert_eq!(datagrams, 1, "one datagram per send");
                sends.push(Instant::now());
            }
            std::thread::sleep(timeout.saturating_duration_since(Instant::now()));
            if d.handle_timeout(Instant::now()).is_err() {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "never failed");
        }
        let retransmissions = SSL_FLIGHT_RETRANSMITS as usize;
        assert_eq!(sends.len(), retransmissions + 1);
        let waits = d.waits();
        let schedule: Vec<Duration> = (0..=SSL_FLIGHT_RETRANSMITS).map(ssl_flight_delay).collect();
        assert_eq!(waits[..=retransmissions], schedule[..]);
        // Never sooner than the schedule; OpenSSL takes a timer with less than 15 ms left as
        // run out.
        for (i, w) in sends.windows(2).enumerate() {
            let gap = w[1] - w[0];
            assert!(
                gap + Duration::from_millis(15) >= schedule[i],
                "send {i}: {gap:?}"
            );
        }
    }

    /// Handshakes on the system clock through 20 % random loss each way and a 10 ms path,
    /// an RSA certificate on one end in every other run: all connect (about 10 s in all).
    #[test]
    fn handshakes_through_20_percent_loss_all_connect() {
        let ecdsa = ecdsa_certificate();
        let rsa = rsa_certificate();
        let delay = Duration::from_millis(10);
        let mut took = Vec::new();
        for seed in 0..100u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let start = Instant::now();
            let server = if seed % 2 == 1 { &rsa } else { &ecdsa };
            let mut ends = [
                End::openssl(&ecdsa, true, start),
                End::openssl(server, false, start),
            ];
            let mut wire: Vec<(Instant, usize, Vec<u8>)> = Vec::new();
            loop {
                for (i, end) in ends.iter_mut().enumerate() {
                    for p in end.drain() {
                        if rng.f64() >= 0.2 {
                            wire.push((Instant::now() + delay, 1 - i, p));
                        }
                    }
                }
                if ends[0].connected && ends[1].connected {
                    break;
                }
                let next = ends
                    .iter()
                    .map(|e| e.timeout)
                    .chain(wire.iter().map(|w| w.0))
                    .min()
                    .expect("time");
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
                let now = Instant::now();
                let (due, later): (Vec<_>, Vec<_>) = wire.drain(..).partition(|w| w.0 <= now);
                wire = later;
                for (_, to, p) in due {
                    // A datagram the handshake cannot use is the peer's problem, not a failure.
                    let _ = ends[to].d.handle_packet(&p);
                }
                for (i, end) in ends.iter_mut().enumerate() {
                    if end.timeout <= now {
                        end.d
                            .handle_timeout(now)
                            .unwrap_or_else(|e| panic!("seed {seed}, end {i}: {e}"));
                    }
                }
            }
            took.push(start.elapsed());
        }
        took.sort();
        println!(
            "20 % loss, 100 handshakes: median {:?}, p90 {:?}, worst {:?}",
            took[50], took[90], took[99]
        );
    }
}
