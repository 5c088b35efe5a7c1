//! CPU cost of a DTLS handshake, both ends in one thread on memory buffers (no loss, no
//! sockets): the gateway's end and the peer's end timed apart, on the thread's CPU clock.
//!
//! `cargo bench --bench dtls`. Compares dimpl (the DTLS before OpenSSL, still the
//! simulation's) with OpenSSL for ECDSA peers and for RSA-2048 peers, with the gateway as DTLS
//! client (what an `actpass` offer gets) and as server. Each handshake includes creating both
//! ends; certificates are made once. Prints the fastest of 3 trials of `N` handshakes.

use std::time::{Duration, Instant};

use str0m::crypto::dtls::{DtlsCert, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion};
use wishcast::dtls::{crypto_provider, ecdsa_certificate, rsa_certificate};

const N: usize = 200;
const TRIALS: usize = 3;
const MTU: usize = 1150;

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec for the kernel to fill in.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// One end and the CPU time spent in its calls.
struct End {
    d: Box<dyn DtlsInstance>,
    cpu: Duration,
    connected: bool,
}

impl End {
    fn new(provider: &dyn DtlsProvider, cert: &DtlsCert, active: bool, now: Instant) -> End {
        let t = thread_cpu();
        let mut d = provider
            .new_dtls(cert, now, DtlsVersion::Dtls12, Some(MTU))
            .expect("dtls");
        d.set_active(active);
        d.handle_timeout(now).expect("init");
        if active {
            d.handle_packet(&[]).expect("start");
        }
        End {
            d,
            cpu: thread_cpu() - t,
            connected: false,
        }
    }

    fn drain(&mut self, buf: &mut [u8]) -> Vec<Vec<u8>> {
        let t = thread_cpu();
        let mut out = Vec::new();
        loop {
            match self.d.poll_output(buf) {
                DtlsOutput::Packet(p) => out.push(p.to_vec()),
                DtlsOutput::Timeout(_) => break,
                DtlsOutput::Connected => self.connected = true,
                _ => {}
            }
        }
        self.cpu += thread_cpu() - t;
        out
    }

    fn receive(&mut self, p: &[u8]) {
        let t = thread_cpu();
        self.d.handle_packet(p).expect("packet");
        self.cpu += thread_cpu() - t;
    }
}

struct Case {
    name: &'static str,
    provider: &'static dyn DtlsProvider,
    gateway_client: bool,
    peer_rsa: bool,
}

/// CPU per handshake at the gateway's end and at the peer's, fastest trial.
fn run(case: &Case, gateway: &DtlsCert, peer: &DtlsCert) -> (Duration, Duration) {
    let mut best: Option<(Duration, Duration)> = None;
    let mut buf = vec![0; 4096];
    for _ in 0..TRIALS {
        let (mut gw_cpu, mut peer_cpu) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..N {
            let now = Instant::now();
            let mut ends = [
                End::new(case.provider, gateway, case.gateway_client, now),
                End::new(case.provider, peer, !case.gateway_client, now),
            ];
            for _ in 0..20 {
                let mut quiet = true;
                for i in 0..2 {
                    for p in ends[i].drain(&mut buf) {
                        quiet = false;
                        ends[1 - i].receive(&p);
                    }
                }
                if quiet {
                    break;
                }
            }
            assert!(ends[0].connected && ends[1].connected, "{}", case.name);
            gw_cpu += ends[0].cpu;
            peer_cpu += ends[1].cpu;
        }
        let r = (gw_cpu / N as u32, peer_cpu / N as u32);
        best = Some(match best {
            Some(b) if b.0 + b.1 <= r.0 + r.1 => b,
            _ => r,
        });
    }
    best.expect("a trial")
}

fn main() {
    let openssl = crypto_provider().dtls_provider;
    let dimpl = wishcast::dtls::simulation_crypto_provider().dtls_provider;
    let gateway = ecdsa_certificate();
    let ecdsa = ecdsa_certificate();
    let rsa = rsa_certificate();
    let cases = [
        Case {
            name: "dimpl, ECDSA peer, gateway client (before)",
            provider: dimpl,
            gateway_client: true,
            peer_rsa: false,
        },
        Case {
            name: "dimpl, ECDSA peer, gateway server (before)",
            provider: dimpl,
            gateway_client: false,
            peer_rsa: false,
        },
        Case {
            name: "OpenSSL, ECDSA peer, gateway client",
            provider: openssl,
            gateway_client: true,
            peer_rsa: false,
        },
        Case {
            name: "OpenSSL, ECDSA peer, gateway server",
            provider: openssl,
            gateway_client: false,
            peer_rsa: false,
        },
        Case {
            name: "OpenSSL, RSA-2048 peer, gateway client",
            provider: openssl,
            gateway_client: true,
            peer_rsa: true,
        },
        Case {
            name: "OpenSSL, RSA-2048 peer, gateway server",
            provider: openssl,
            gateway_client: false,
            peer_rsa: true,
        },
    ];
    println!(
        "DTLS 1.2 handshakes in one thread, fastest of {TRIALS} trials of {N}; CPU per handshake"
    );
    println!("| case | gateway's end | peer's end | both |");
    println!("|---|---:|---:|---:|");
    for case in &cases {
        let peer = if case.peer_rsa { &rsa } else { &ecdsa };
        let (g, p) = run(case, &gateway, peer);
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!(
            "| {} | {:.0} µs | {:.0} µs | {:.0} µs |",
            case.name,
            us(g),
            us(p),
            us(g + p)
        );
    }
}
