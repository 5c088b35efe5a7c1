//! Datagrams inside an established session, as if from the peer's own address: STUN, DTLS
//! records, SRTP and SRTCP with valid headers and wrong contents.
//!
//! A publisher and a viewer connect through a shard on the deterministic simulation (real ICE,
//! DTLS and SRTP in str0m), and what they send is recorded. Each fuzz input is then a short
//! sequence of crafted datagrams built on those recordings: the first byte always stays in its
//! RFC 7983 class and RTP/RTCP keep a real SSRC and header, so the bytes reach str0m's STUN,
//! DTLS, SRTP and SRTCP code in the live session rather than stopping at the demultiplexer.
//!
//! What must hold: no panic anywhere (a caught one in str0m aborts the fuzzer too), and the
//! shard keeps its sessions' books straight while the simulation runs on.
#![no_main]

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use wishcast::peer::VideoCodec;
use wishcast::sim::{Class, Feed, PeerId, PeerOptions, Sim, Way};
use wishcast::Config;

/// Datagrams kept per peer and class.
const KEEP: usize = 8;

#[derive(Default)]
struct Recorded {
    /// By peer (0: publisher, 1: viewer): what it sent the gateway, by class.
    stun: [Vec<Vec<u8>>; 2],
    dtls: [Vec<Vec<u8>>; 2],
    rtp: [Vec<Vec<u8>>; 2],
    rtcp: [Vec<Vec<u8>>; 2],
}

fn keep(list: &mut Vec<Vec<u8>>, d: &[u8], newest: bool) {
    if list.len() < KEEP {
        list.push(d.to_vec());
    } else if newest {
        list.remove(0);
        list.push(d.to_vec());
    }
}

struct Live {
    sim: Sim,
    peers: [PeerId; 2],
    rec: Recorded,
}

/// A publisher and a viewer connected through one shard, media flowing for a second.
fn live() -> Live {
    let config = Config::default();
    let mut sim = Sim::with_seed(config, 1, 11);
    // The gateway's DTLS (OpenSSL), which the inputs reach; nothing is dropped here.
    sim.set_crypto_provider(wishcast::dtls::crypto_provider());
    let rec = Rc::new(RefCell::new(Recorded::default()));
    let tap = rec.clone();
    sim.set_drop(move |d| {
        if d.way == Way::ToGateway {
            let p = d.peer.0.min(1);
            let mut r = tap.borrow_mut();
            match d.class {
                Class::Stun => keep(&mut r.stun[p], d.contents, true),
                // The handshake's flights, first ones first.
                Class::Dtls => keep(&mut r.dtls[p], d.contents, false),
                Class::Rtp(_) => keep(&mut r.rtp[p], d.contents, true),
                Class::Rtcp => keep(&mut r.rtcp[p], d.contents, true),
                Class::Other => {}
            }
        }
        false
    });
    let opts = PeerOptions::sink(VideoCodec::H264);
    let publisher = sim.add_publisher("live", opts.clone()).expect("publisher");
    let viewer = sim.add_viewer("live", opts).expect("viewer");
    assert!(
        sim.run_until_true(Duration::from_secs(10), |s| s.connected_count() == 2),
        "the peers connect"
    );
    sim.start_feed(publisher, Feed::new(Some(VideoCodec::H264), true));
    // Long enough for RTCP reports both ways and a consent check.
    sim.run_for(Duration::from_secs(6));
    sim.stop_feed(publisher);
    sim.clear_rules();
    assert!(sim.peer(viewer).stats().video_frames > 0, "media flows");
    let rec = Rc::try_unwrap(rec)
        .map(RefCell::into_inner)
        .unwrap_or_default();
    Live {
        sim,
        peers: [publisher, viewer],
        rec,
    }
}

thread_local! {
    static LIVE: RefCell<Option<Live>> = const { RefCell::new(None) };
    /// Sessions set up so far: once, unless inputs end them.
    static SETUPS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn set_up() -> Live {
    let n = SETUPS.with(|c| {
        c.set(c.get() + 1);
        c.get()
    });
    let live = live();
    if n.is_power_of_two() {
        let r = &live.rec;
        let count = |l: &[Vec<Vec<u8>>; 2]| [l[0].len(), l[1].len()];
        eprintln!(
            "datagrams: sessions set up {n} times; recorded (publisher, viewer): stun {:?}, \
             dtls {:?}, rtp {:?}, rtcp {:?}",
            count(&r.stun),
            count(&r.dtls),
            count(&r.rtp),
            count(&r.rtcp)
        );
    }
    live
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// A recorded STUN message (binding request or answer) with bytes changed after the first.
    Stun { base: u8, edits: Vec<(u16, u8)> },
    /// A STUN header (magic cookie, length right) with arbitrary type, id and attributes.
    StunMessage {
        class_method: u16,
        id: [u8; 12],
        attrs: Vec<(u16, Vec<u8>)>,
    },
    /// A DTLS record: content type 20-63, DTLS 1.2 or 1.0, any epoch and sequence, right
    /// length.
    Dtls {
        content_type: u8,
        v10: bool,
        epoch: u16,
        seq: u64,
        body: Vec<u8>,
    },
    /// A recorded handshake flight with bytes changed after the first.
    DtlsFlight { base: u8, edits: Vec<(u16, u8)> },
    /// A recorded SRTP packet's header (SSRC, extensions) with a new sequence number and
    /// timestamp, optionally changed extension bytes, and a wrong payload.
    Srtp {
        base: u8,
        seq_delta: i16,
        ts_delta: i32,
        header_edits: Vec<(u8, u8)>,
        payload: Vec<u8>,
    },
    /// A recorded SRTCP packet with bytes changed after its SSRC, or a made-up one.
    Srtcp { base: u8, edits: Vec<(u16, u8)> },
    SrtcpMessage {
        count: u8,
        pt: u8,
        ssrc_from_rtp: bool,
        body: Vec<u8>,
        index: u32,
    },
    /// Time passes on the simulation (str0m timeouts, retransmissions, consent).
    Wait(u8),
}

#[derive(Arbitrary, Debug)]
struct Step {
    /// From the viewer's address instead of the publisher's.
    viewer: bool,
    op: Op,
}

fn pick<'a>(list: &'a [Vec<u8>], i: u8) -> Option<&'a Vec<u8>> {
    (!list.is_empty()).then(|| &list[usize::from(i) % list.len()])
}

fn edit(mut d: Vec<u8>, from: usize, edits: &[(u16, u8)]) -> Vec<u8> {
    if d.len() > from {
        let span = d.len() - from;
        for &(at, b) in edits {
            d[from + usize::from(at) % span] = b;
        }
    }
    d
}

/// The RTP header's length: fixed part, CSRCs, extension.
fn rtp_header_len(d: &[u8]) -> usize {
    let mut n = 12 + 4 * usize::from(d[0] & 0x0f);
    if d[0] & 0x10 != 0 && d.len() >= n + 4 {
        n += 4 + 4 * usize::from(u16::from_be_bytes([d[n + 2], d[n + 3]]));
    }
    n.min(d.len())
}

fn build(rec: &Recorded, p: usize, op: &Op) -> Option<Vec<u8>> {
    Some(match op {
        Op::Stun { base, edits } => {
            let mut d = edit(pick(&rec.stun[p], *base)?.clone(), 1, edits);
            d[0] &= 0x03;
            d
        }
        Op::StunMessage {
            class_method,
            id,
            attrs,
        } => {
            let mut body = Vec::new();
            for (t, v) in attrs.iter().take(16) {
                let v = &v[..v.len().min(512)];
                body.extend_from_slice(&t.to_be_bytes());
                body.extend_from_slice(&(v.len() as u16).to_be_bytes());
                body.extend_from_slice(v);
                body.resize(body.len().div_ceil(4) * 4, 0);
            }
            let mut d = Vec::with_capacity(20 + body.len());
            d.extend_from_slice(&(class_method & 0x3fff).to_be_bytes());
            d.extend_from_slice(&(body.len() as u16).to_be_bytes());
            d.extend_from_slice(&0x2112_a442u32.to_be_bytes());
            d.extend_from_slice(id);
            d.extend_from_slice(&body);
            d
        }
        Op::Dtls {
            content_type,
            v10,
            epoch,
            seq,
            body,
        } => {
            let body = &body[..body.len().min(1400)];
            let mut d = vec![20 + content_type % 44];
            d.extend_from_slice(if *v10 { &[0xfe, 0xff] } else { &[0xfe, 0xfd] });
            d.extend_from_slice(&epoch.to_be_bytes());
            d.extend_from_slice(&seq.to_be_bytes()[2..]);
            d.extend_from_slice(&(body.len() as u16).to_be_bytes());
            d.extend_from_slice(body);
            d
        }
        Op::DtlsFlight { base, edits } => {
            let mut d = edit(pick(&rec.dtls[p], *base)?.clone(), 1, edits);
            d[0] = 20 + d[0] % 44;
            d
        }
        Op::Srtp {
            base,
            seq_delta,
            ts_delta,
            header_edits,
            payload,
        } => {
            let real = pick(&rec.rtp[p], *base)?;
            let n = rtp_header_len(real);
            let mut d = real[..n].to_vec();
            let seq = u16::from_be_bytes([d[2], d[3]]).wrapping_add(*seq_delta as u16);
            d[2..4].copy_from_slice(&seq.to_be_bytes());
            let ts = u32::from_be_bytes([d[4], d[5], d[6], d[7]]).wrapping_add(*ts_delta as u32);
            d[4..8].copy_from_slice(&ts.to_be_bytes());
            // Extension bytes only: version, flags, SSRC and the lengths stay real.
            if n > 16 {
                for &(at, b) in header_edits {
                    d[16 + usize::from(at) % (n - 16)] = b;
                }
            }
            d.extend_from_slice(&payload[..payload.len().min(1400)]);
            d
        }
        Op::Srtcp { base, edits } => {
            let d = edit(pick(&rec.rtcp[p], *base)?.clone(), 8, edits);
            d
        }
        Op::SrtcpMessage {
            count,
            pt,
            ssrc_from_rtp,
            body,
            index,
        } => {
            let ssrc = if *ssrc_from_rtp {
                rec.rtp[0].first().map(|r| [r[8], r[9], r[10], r[11]])
            } else {
                rec.rtcp[p].first().map(|r| [r[4], r[5], r[6], r[7]])
            }?;
            let body = &body[..body.len().min(1200) / 4 * 4];
            let mut d = vec![0x80 | (count & 0x1f), 200 + pt % 7];
            d.extend_from_slice(&((1 + body.len() / 4) as u16).to_be_bytes());
            d.extend_from_slice(&ssrc);
            d.extend_from_slice(body);
            d.extend_from_slice(&(index | 0x8000_0000).to_be_bytes());
            d.extend_from_slice(&[0u8; 10]);
            d
        }
        Op::Wait(_) => return None,
    })
}

fuzz_target!(|steps: Vec<Step>| {
    LIVE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let live = slot.get_or_insert_with(set_up);
        for step in steps.iter().take(16) {
            let p = usize::from(step.viewer);
            if let Op::Wait(ms) = step.op {
                live.sim.run_for(Duration::from_millis(u64::from(ms) * 4));
                continue;
            }
            let Some(d) = build(&live.rec, p, &step.op) else {
                continue;
            };
            let peer = live.sim.peer(live.peers[p]);
            let (shard, addr) = (peer.shard, peer.addr);
            live.sim.inject(shard, addr, &d);
        }
        live.sim.run_for(Duration::from_millis(20));
        let engine = live.sim.engine(0);
        assert_eq!(engine.counters.panics, 0, "no str0m call panicked");
        assert_eq!(
            live.sim.hub.session_count(),
            engine.session_count(),
            "the hub and the shard agree on the sessions"
        );
        // A session the input ended (a forged close, say) is set up again for the next input.
        if engine.session_count() < 2 || live.sim.connected_count() < 2 {
            *slot = None;
        }
    });
});
