//! DTLS with handshake timers for lossy paths: str0m's own DTLS (dimpl on AWS-LC), configured
//! with a shorter first retransmission and more retries than its defaults.
//!
//! dimpl follows RFC 6347 §4.2.4.1: a lost flight is sent again after 1 s, doubling, at most
//! 4 times. Under 20 % loss a DTLS 1.2 handshake (two round trips, the server's flight in
//! several datagrams) then often needs a second try of some flight and takes seconds, and
//! one in a few hundred runs out of retries and never connects. Browsers start far below 1 s.
//! Here a flight is sent again after [`FLIGHT_START_RTO`], doubling, up to [`FLIGHT_RETRIES`]
//! times; the handshake's overall deadline stays dimpl's 40 s. Both the gateway and the test
//! peers use it.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use str0m::crypto::dtls::{
    DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, ProtocolVersion,
};
use str0m::crypto::{CryptoError, CryptoProvider};

/// First retransmission of an unanswered handshake flight. On a path with a longer round trip
/// the early repeats are a few spare datagrams; the doubling soon passes the round trip.
pub const FLIGHT_START_RTO: Duration = Duration::from_millis(50);
/// Retransmissions per flight (50 ms doubling 10 times passes the 40 s handshake deadline).
pub const FLIGHT_RETRIES: usize = 10;

/// str0m's default crypto (AWS-LC) with this module's DTLS; one per process.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            Arc::new(CryptoProvider {
                dtls_provider: &LOSSY_PATH_DTLS,
                ..str0m::crypto::from_feature_flags()
            })
        })
        .clone()
}

#[derive(Debug)]
struct LossyPathDtls;

static LOSSY_PATH_DTLS: LossyPathDtls = LossyPathDtls;

impl DtlsProvider for LossyPathDtls {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        // ICE has checked the path before DTLS starts, so server cookies add only a round
        // trip (as in str0m's own provider).
        let mut builder = dimpl::Config::builder()
            .use_server_cookie(false)
            .flight_start_rto(FLIGHT_START_RTO)
            .flight_retries(FLIGHT_RETRIES);
        if let Some(mtu) = mtu {
            builder = builder.mtu(mtu);
        }
        let config = Arc::new(
            builder
                .build()
                .map_err(|e| CryptoError::Other(format!("DTLS configuration: {e}")))?,
        );
        let cert = dimpl::DtlsCertificate {
            certificate: cert.certificate.clone(),
            private_key: cert.private_key.clone(),
        };
        let dtls = match version {
            DtlsVersion::Dtls12 => dimpl::Dtls::new_12(config, cert, now),
            DtlsVersion::Dtls13 => dimpl::Dtls::new_13(config, cert, now),
            DtlsVersion::Auto => dimpl::Dtls::new_auto(config, cert, now),
            #[allow(unreachable_patterns)]
            v => return Err(CryptoError::Other(format!("unsupported DTLS version {v}"))),
        };
        Ok(Box::new(Instance(dtls)))
    }
}

struct Instance(dimpl::Dtls);

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Instance")
    }
}

impl DtlsInstance for Instance {
    fn set_active(&mut self, active: bool) {
        self.0.set_active(active);
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.0.handle_packet(packet)
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        self.0.poll_output(buf)
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.0.handle_timeout(now)
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.0.send_application_data(data)
    }

    fn is_active(&self) -> bool {
        self.0.is_active()
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.0.protocol_version()
    }

    fn is_closing(&self) -> bool {
        self.0.is_closing()
    }

    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.0.close()
    }
}
