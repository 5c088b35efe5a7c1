//! Transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01)
//! and a delay-based reading of it, for the gateway's own media egress to a viewer.
//!
//! The egress numbers every packet it sends a viewer with one transport-wide sequence number
//! (the header extension `http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01`)
//! and keeps when and how large each was ([`SendLog`]). The viewer's feedback (RTPFB, FMT 15)
//! says when each arrived. A path that carries less than is sent queues the excess before it
//! drops any: the gaps between arrivals then grow against the gaps between sends, and
//! [`DelayDetector`] sees that trend (the arrival-time filter and over-use detector of GCC,
//! draft-ietf-rmcat-gcc-02 §5, with a least-squares trend in place of its Kalman filter).
//! A viewer is so moved to a smaller layer while its path only queues, before the loss that
//! receiver reports show ([`crate::simulcast::LinkEstimate`]).
//!
//! Everything here reads network input: malformed feedback is an error, never a panic.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A feedback packet's body (its FCI, after the two SSRCs) that does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TwccError {
    /// Shorter than its header, its chunks or its deltas say.
    Truncated,
    /// A status chunk with the reserved symbol, or more statuses than the count.
    BadChunk,
}

/// Statuses one feedback may carry: more is not a sane report of the packets the gateway
/// keeps ([`SEND_LOG`]), and bounds the work per feedback packet.
const MAX_STATUSES: usize = 4096;

/// The packets one feedback reports, in sequence order: the 16-bit sequence number and,
/// if received, its arrival in µs on the viewer's clock (reference time plus deltas).
/// `out` is cleared first and holds nothing after an error.
pub fn parse(fci: &[u8], out: &mut Vec<(u16, Option<i64>)>) -> Result<(), TwccError> {
    out.clear();
    let r = parse_into(fci, out);
    if r.is_err() {
        out.clear();
    }
    r
}

fn parse_into(fci: &[u8], out: &mut Vec<(u16, Option<i64>)>) -> Result<(), TwccError> {
    let header = fci.get(..8).ok_or(TwccError::Truncated)?;
    let base = u16::from_be_bytes([header[0], header[1]]);
    let count = u16::from_be_bytes([header[2], header[3]]) as usize;
    if count > MAX_STATUSES {
        return Err(TwccError::BadChunk);
    }
    // 24 bits, signed, in units of 64 ms.
    let raw = i32::from_be_bytes([header[4], header[5], header[6], 0]) >> 8;
    let reference = i64::from(raw) * 64_000;
    // Statuses first: 0 not received, 1 small delta, 2 large or negative delta.
    let mut statuses: Vec<u8> = Vec::with_capacity(count);
    let mut at = 8;
    while statuses.len() < count {
        let chunk = fci.get(at..at + 2).ok_or(TwccError::Truncated)?;
        let chunk = u16::from_be_bytes([chunk[0], chunk[1]]);
        at += 2;
        let left = count - statuses.len();
        if chunk & 0x8000 == 0 {
            // Run length: a 2-bit symbol and a 13-bit length.
            let symbol = ((chunk >> 13) & 0b11) as u8;
            let run = (chunk & 0x1fff) as usize;
            if symbol == 3 || run == 0 {
                return Err(TwccError::BadChunk);
            }
            statuses.extend(std::iter::repeat_n(symbol, run.min(left)));
        } else if chunk & 0x4000 == 0 {
            // Status vector of 14 one-bit symbols: received (small delta) or not.
            for i in (0..14).rev().take(left) {
                statuses.push(((chunk >> i) & 1) as u8);
            }
        } else {
            // Status vector of 7 two-bit symbols.
            for i in (0..7).rev().take(left) {
                let symbol = ((chunk >> (2 * i)) & 0b11) as u8;
                if symbol == 3 {
                    return Err(TwccError::BadChunk);
                }
                statuses.push(symbol);
            }
        }
    }
    let mut arrival = reference;
    for (i, status) in statuses.into_iter().enumerate() {
        let seq = base.wrapping_add(i as u16);
        let delta = match status {
            0 => {
                out.push((seq, None));
                continue;
            }
            1 => {
                let d = *fci.get(at).ok_or(TwccError::Truncated)?;
                at += 1;
                i64::from(d)
            }
            _ => {
                let d = fci.get(at..at + 2).ok_or(TwccError::Truncated)?;
                at += 2;
                i64::from(i16::from_be_bytes([d[0], d[1]]))
            }
        };
        arrival += delta * 250;
        out.push((seq, Some(arrival)));
    }
    Ok(())
}

/// Packets whose send time and size the egress keeps, per viewer: about 1.5 s of a
/// 2.5 Mbit/s stream, many feedback intervals (str0m reports every 50 ms). 8 bytes each.
pub const SEND_LOG: usize = 512;

/// What the egress sent a viewer, by transport-wide sequence number.
#[derive(Debug)]
pub struct SendLog {
    /// The next sequence number to give, extended past 16 bits.
    next: u64,
    /// When the log started: send times are µs since, in 32 bits (wrapping after 71 minutes;
    /// only differences between packets a second apart are used).
    epoch: Instant,
    /// Indexed by sequence number modulo [`SEND_LOG`]: its low 16 bits (to tell a slot
    /// reused), its size, its send time.
    slots: Box<[(u16, u16, u32); SEND_LOG]>,
}

impl SendLog {
    pub fn new(now: Instant) -> SendLog {
        SendLog {
            next: 0,
            epoch: now,
            slots: Box::new([(0, 0, 0); SEND_LOG]),
        }
    }

    /// Numbers a packet of `size` bytes sent at `now`: the 16 bits to write in its header.
    pub fn sent(&mut self, now: Instant, size: usize) -> u16 {
        let seq = self.next;
        self.next += 1;
        let at = now.saturating_duration_since(self.epoch).as_micros() as u32;
        let size = size.min(u16::MAX as usize) as u16;
        self.slots[seq as usize % SEND_LOG] = (seq as u16, size, at);
        seq as u16
    }

    /// The send time (µs, wrapping) and size of the packet whose number ends in `seq`, if it
    /// is among the last [`SEND_LOG`] sent.
    fn get(&self, seq: u16) -> Option<(u32, u16)> {
        let newest = self.next.checked_sub(1)?;
        // The sent number with these low bits at or below the newest.
        let mut ext = (newest & !0xffff) | u64::from(seq);
        if ext > newest {
            ext = ext.checked_sub(1 << 16)?;
        }
        if newest - ext >= SEND_LOG as u64 {
            return None;
        }
        let (low, size, at) = self.slots[ext as usize % SEND_LOG];
        (low == seq).then_some((at, size))
    }
}

/// What the delay trend says of the path ([`DelayDetector::on_feedback`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// Arrivals keep pace with sends.
    Normal,
    /// Arrivals fall behind sends: a queue grows on the path.
    Over,
    /// Arrivals catch up: a queue drains.
    Under,
}

/// Packets sent within this of a group's first form one group: a frame's packets go out
/// together, and their arrival spread says the path's rate, not its queue
/// (draft-ietf-rmcat-gcc-02 §5.2: 5 ms).
const BURST: u32 = 5_000;
/// Delay samples the trend is fitted over.
const TREND_WINDOW: usize = 20;
/// Smoothing of the accumulated delay before the fit (libwebrtc's trendline default).
const SMOOTHING: f64 = 0.9;
/// The fitted slope times this times the samples (at most 60) is compared with the threshold:
/// the slope of a few samples says less than that of many.
const TREND_GAIN: f64 = 4.0;
/// The adaptive threshold (ms): its start, its bounds, and how fast it follows the trend
/// upward and downward per ms (draft-ietf-rmcat-gcc-02 §5.4: 12.5 ms, K_u = 0.01,
/// K_d = 0.00018).
const THRESHOLD_START: f64 = 12.5;
const THRESHOLD_MIN: f64 = 6.0;
const THRESHOLD_MAX: f64 = 600.0;
const K_UP: f64 = 0.01;
const K_DOWN: f64 = 0.000_18;
/// Over-use counts once the trend has stayed over the threshold this long
/// (draft-ietf-rmcat-gcc-02 §5.5: 10 ms).
const OVERUSE_TIME: f64 = 10.0;
/// The window over which the rate that arrived is measured.
const ACKED_WINDOW: i64 = 1_000_000;

/// One group of packets sent together: the last send and arrival in it, in µs.
#[derive(Debug, Clone, Copy)]
struct Group {
    first_send: u32,
    last_send: u32,
    last_arrival: i64,
}

/// The delay trend of one viewer's path, from its transport-wide feedback.
#[derive(Debug)]
pub struct DelayDetector {
    log: SendLog,
    current: Option<Group>,
    previous: Option<Group>,
    accumulated: f64,
    smoothed: f64,
    /// (arrival ms since the first sample, smoothed accumulated delay ms).
    samples: VecDeque<(f64, f64)>,
    first_arrival: Option<i64>,
    deltas: u32,
    threshold: f64,
    last_update: Option<i64>,
    over_since: Option<f64>,
    last_trend: f64,
    usage: Usage,
    /// Bytes that arrived by feedback: (first arrival, last arrival, bytes), newest last.
    arrived: VecDeque<(i64, i64, u64)>,
    /// The newest arrival seen, for feedbacks that overlap.
    newest_arrival: Option<i64>,
    scratch: Vec<(u16, Option<i64>)>,
}

impl DelayDetector {
    pub fn new(now: Instant) -> DelayDetector {
        DelayDetector {
            log: SendLog::new(now),
            current: None,
            previous: None,
            accumulated: 0.0,
            smoothed: 0.0,
            samples: VecDeque::with_capacity(TREND_WINDOW),
            first_arrival: None,
            deltas: 0,
            threshold: THRESHOLD_START,
            last_update: None,
            over_since: None,
            last_trend: 0.0,
            usage: Usage::Normal,
            arrived: VecDeque::new(),
            newest_arrival: None,
            scratch: Vec::new(),
        }
    }

    /// Numbers a packet of `size` bytes sent now: the sequence number for its header.
    pub fn sent(&mut self, now: Instant, size: usize) -> u16 {
        self.log.sent(now, size)
    }

    /// A feedback packet's FCI: the usage it shows, or the error that made it unreadable.
    pub fn on_feedback(&mut self, fci: &[u8]) -> Result<Usage, TwccError> {
        let mut reports = std::mem::take(&mut self.scratch);
        let parsed = parse(fci, &mut reports);
        if parsed.is_ok() {
            let mut span: Option<(i64, i64, u64)> = None;
            for &(seq, arrival) in &reports {
                let Some((sent, size)) = self.log.get(seq) else {
                    continue;
                };
                let Some(arrival) = arrival else {
                    continue;
                };
                // Counted once: a packet may be reported again in the next feedback.
                if self.newest_arrival.is_none_or(|n| arrival > n) {
                    let s = span.get_or_insert((arrival, arrival, 0));
                    s.0 = s.0.min(arrival);
                    s.1 = s.1.max(arrival);
                    s.2 += u64::from(size);
                }
                self.packet(sent, arrival);
            }
            if let Some(s) = span {
                self.newest_arrival = Some(s.1);
                self.arrived.push_back(s);
                while self
                    .arrived
                    .front()
                    .is_some_and(|a| s.1 - a.1 > ACKED_WINDOW)
                {
                    self.arrived.pop_front();
                }
            }
        }
        self.scratch = reports;
        parsed.map(|()| self.usage)
    }

    /// Bits per second that arrived over about the last second, once that spans 100 ms.
    pub fn acked_bps(&self) -> Option<u64> {
        let first = self.arrived.front()?;
        let last = self.arrived.back()?;
        let span = last.1 - first.0;
        if span < 100_000 {
            return None;
        }
        let bytes: u64 = self.arrived.iter().map(|a| a.2).sum();
        Some(bytes * 8 * 1_000_000 / span as u64)
    }

    fn packet(&mut self, sent: u32, arrival: i64) {
        let Some(mut group) = self.current else {
            self.current = Some(Group {
                first_send: sent,
                last_send: sent,
                last_arrival: arrival,
            });
            return;
        };
        let since_first = sent.wrapping_sub(group.first_send);
        let same_burst = since_first < BURST;
        let older = since_first > u32::MAX / 2;
        if same_burst || older {
            // Same burst, or reordered from an older one: it only moves the group's arrival.
            if same_burst {
                group.last_send = group.last_send.max(sent);
            }
            group.last_arrival = group.last_arrival.max(arrival);
            self.current = Some(group);
            return;
        }
        if let Some(prev) = self.previous {
            let send_delta = f64::from(group.last_send.wrapping_sub(prev.last_send)) / 1000.0;
            let arrival_delta = (group.last_arrival - prev.last_arrival) as f64 / 1000.0;
            self.delta(arrival_delta - send_delta, group.last_arrival);
        }
        self.previous = Some(group);
        self.current = Some(Group {
            first_send: sent,
            last_send: sent,
            last_arrival: arrival,
        });
    }

    /// One group's delay variation `d` (ms), the group having arrived at `arrival` (µs).
    fn delta(&mut self, d: f64, arrival: i64) {
        self.deltas = self.deltas.saturating_add(1);
        self.accumulated += d;
        self.smoothed = SMOOTHING * self.smoothed + (1.0 - SMOOTHING) * self.accumulated;
        let first = *self.first_arrival.get_or_insert(arrival);
        let x = (arrival - first) as f64 / 1000.0;
        if self.samples.len() == TREND_WINDOW {
            self.samples.pop_front();
        }
        self.samples.push_back((x, self.smoothed));
        if self.samples.len() < TREND_WINDOW {
            return;
        }
        let trend = slope(&self.samples).unwrap_or(self.last_trend);
        let modified = trend * f64::from(self.deltas.min(60)) * TREND_GAIN;
        let elapsed = self
            .last_update
            .map_or(0.0, |t| ((arrival - t) as f64 / 1000.0).clamp(0.0, 100.0));
        self.last_update = Some(arrival);
        if modified > self.threshold {
            let since = *self.over_since.get_or_insert(x);
            // Over-use once it lasted, and only while the trend is not falling already.
            if x - since >= OVERUSE_TIME && trend >= self.last_trend {
                self.usage = Usage::Over;
            }
        } else {
            self.over_since = None;
            self.usage = if modified < -self.threshold {
                Usage::Under
            } else {
                Usage::Normal
            };
        }
        self.last_trend = trend;
        // The threshold follows the trend: slowly down, faster up, and not at all for a
        // spike far above it (draft-ietf-rmcat-gcc-02 §5.4).
        let gap = modified.abs() - self.threshold;
        if gap <= 15.0 {
            let k = if gap < 0.0 { K_DOWN } else { K_UP };
            self.threshold =
                (self.threshold + k * gap * elapsed).clamp(THRESHOLD_MIN, THRESHOLD_MAX);
        }
    }
}

/// The least-squares slope of `points`, if they are not all at one x.
fn slope(points: &VecDeque<(f64, f64)>) -> Option<f64> {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), (x, y)| {
        (num + (x - mx) * (y - my), den + (x - mx) * (x - mx))
    });
    (den > 0.0).then(|| num / den)
}

/// How long a viewer's estimate waits after a cut for the delay to settle: a cut moves the
/// viewer down only at the smaller layer's next keyframe, and its queue drains after that.
pub const CUT_INTERVAL: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    /// A feedback FCI: base, count, reference (64 ms units), fb count, chunks, deltas.
    fn fci(base: u16, count: u16, reference: u32, chunks: &[u16], deltas: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&base.to_be_bytes());
        b.extend_from_slice(&count.to_be_bytes());
        b.extend_from_slice(&(reference << 8 | 7).to_be_bytes());
        for c in chunks {
            b.extend_from_slice(&c.to_be_bytes());
        }
        b.extend_from_slice(deltas);
        b
    }

    #[test]
    fn a_run_of_received_packets_reads_each_arrival() {
        // Run length chunk: symbol 1 (small delta), 3 packets; deltas 4, 8, 0 (x 250 µs).
        let b = fci(65534, 3, 2, &[0b0010_0000_0000_0011], &[4, 8, 0]);
        let mut out = Vec::new();
        parse(&b, &mut out).expect("parses");
        assert_eq!(
            out,
            vec![
                (65534, Some(128_000 + 1_000)),
                (65535, Some(128_000 + 3_000)),
                (0, Some(128_000 + 3_000)),
            ]
        );
    }

    #[test]
    fn status_vectors_say_which_arrived_and_large_deltas_may_go_back() {
        // Two-bit vector: received small, not received, received large; then padding
        // statuses past the count are ignored.
        let two = 0b1100_0000_0000_0000 | (1 << 12) | (2 << 8);
        let mut deltas = vec![40];
        deltas.extend_from_slice(&(-8i16).to_be_bytes());
        let b = fci(10, 3, 0, &[two], &deltas);
        let mut out = Vec::new();
        parse(&b, &mut out).expect("parses");
        assert_eq!(out, vec![(10, Some(10_000)), (11, None), (12, Some(8_000))]);
        // One-bit vector: 14 statuses, of which the count keeps 2.
        let one = 0b1000_0000_0000_0000 | (1 << 13);
        let b = fci(7, 2, 0, &[one], &[1]);
        parse(&b, &mut out).expect("parses");
        assert_eq!(out, vec![(7, Some(250)), (8, None)]);
    }

    #[test]
    fn a_negative_reference_time_is_sign_extended() {
        let b = fci(0, 1, 0xff_ffff, &[0b0010_0000_0000_0001], &[0]);
        let mut out = Vec::new();
        parse(&b, &mut out).expect("parses");
        assert_eq!(out, vec![(0, Some(-64_000))]);
    }

    #[test]
    fn malformed_feedback_is_an_error_and_leaves_nothing() {
        let mut out = vec![(1, None)];
        assert_eq!(parse(&[0; 7], &mut out), Err(TwccError::Truncated));
        assert!(out.is_empty());
        // Deltas missing.
        let b = fci(0, 3, 0, &[0b0010_0000_0000_0011], &[1]);
        assert_eq!(parse(&b, &mut out), Err(TwccError::Truncated));
        assert!(out.is_empty());
        // Reserved symbol in a run, and a run of 0.
        let b = fci(0, 3, 0, &[0b0110_0000_0000_0011], &[]);
        assert_eq!(parse(&b, &mut out), Err(TwccError::BadChunk));
        let b = fci(0, 3, 0, &[0b0010_0000_0000_0000], &[]);
        assert_eq!(parse(&b, &mut out), Err(TwccError::BadChunk));
        // Chunks missing.
        let b = fci(0, 30, 0, &[0b0010_0000_0000_0011], &[1, 1, 1]);
        assert_eq!(parse(&b, &mut out), Err(TwccError::Truncated));
        // Any bytes at all: an answer, never a panic.
        for seed in 0..2000u32 {
            let bytes: Vec<u8> = (0..(seed % 40))
                .map(|i| (seed.wrapping_mul(2_654_435_761).wrapping_add(i * 97) >> 7) as u8)
                .collect();
            let _ = parse(&bytes, &mut out);
        }
    }

    #[test]
    fn the_log_finds_recent_packets_across_the_16_bit_wrap_and_forgets_old_ones() {
        let t0 = Instant::now();
        let mut log = SendLog::new(t0);
        let mut last = 0;
        for i in 0..70_000u32 {
            last = log.sent(
                t0 + Duration::from_micros(u64::from(i) * 100),
                1000 + i as usize % 7,
            );
        }
        assert_eq!(last, (69_999u32 % 65_536) as u16);
        let (at, size) = log.get(last).expect("newest kept");
        assert_eq!((at, size), (6_999_900, (1000 + 69_999 % 7) as u16));
        let older = last.wrapping_sub(SEND_LOG as u16 - 1);
        assert!(log.get(older).is_some(), "the oldest kept");
        assert!(
            log.get(older.wrapping_sub(1)).is_none(),
            "one older is gone"
        );
    }

    /// Frames of `packets` packets of 1,200 bytes every 33 ms through a path of `bps` with
    /// a queue and up to `jitter` µs of delay more per packet, reported every 100 ms: the
    /// usages seen.
    fn run(bps: f64, packets: usize, frames: usize, jitter: u64) -> (Vec<Usage>, Option<u64>) {
        let mut noise = 0x2545_f491_4f6c_dd1du64;
        let t0 = Instant::now();
        let mut d = DelayDetector::new(t0);
        let mut free_at = 0.0f64; // µs the path's queue empties
        let mut pending: Vec<(u16, i64)> = Vec::new();
        let mut usages = Vec::new();
        let mut next_report = 100_000.0;
        for f in 0..frames {
            let sent = f as f64 * 33_333.0;
            while sent >= next_report {
                usages.push(
                    d.on_feedback(&feedback(&pending))
                        .expect("own feedback parses"),
                );
                pending.clear();
                next_report += 100_000.0;
            }
            for _ in 0..packets {
                let seq = d.sent(t0 + Duration::from_micros(sent as u64), 1200);
                free_at = free_at.max(sent) + 1200.0 * 8.0 / bps * 1e6;
                noise ^= noise << 13;
                noise ^= noise >> 7;
                noise ^= noise << 17;
                let extra = if jitter > 0 { noise % jitter } else { 0 };
                pending.push((seq, free_at as i64 + 20_000 + extra as i64));
            }
        }
        (usages, d.acked_bps())
    }

    /// A feedback FCI reporting `packets` (consecutive numbers) received at their times.
    fn feedback(packets: &[(u16, i64)]) -> Vec<u8> {
        let Some(&(base, first)) = packets.first() else {
            return fci(0, 0, 0, &[], &[]);
        };
        let reference = (first / 64_000) as u32;
        let mut prev = i64::from(reference) * 64_000;
        let mut chunks = Vec::new();
        let mut deltas = Vec::new();
        for &(_, at) in packets {
            let d = (at - prev) / 250;
            prev += d * 250;
            chunks.push(2u16);
            deltas.extend_from_slice(&(d as i16).to_be_bytes());
        }
        // Two-bit vectors of "large delta".
        let vectors: Vec<u16> = chunks
            .chunks(7)
            .map(|c| {
                c.iter()
                    .enumerate()
                    .fold(0xc000, |v, (i, s)| v | (s << (12 - 2 * i)))
            })
            .collect();
        fci(base, packets.len() as u16, reference, &vectors, &deltas)
    }

    #[test]
    fn a_path_with_room_stays_normal() {
        // 10 packets per frame at 30 fps: 2.9 Mbit/s through 10 Mbit/s.
        let (usages, acked) = run(10e6, 10, 300, 0);
        assert!(!usages.contains(&Usage::Over), "{usages:?}");
        // Up to 50 ms of jitter on each packet, reordering them: now and then a report may
        // read as over-use, but not most.
        let (usages, _) = run(10e6, 10, 900, 50_000);
        let over = usages.iter().filter(|u| **u == Usage::Over).count();
        assert!(
            over * 10 < usages.len(),
            "{over} of {}: {usages:?}",
            usages.len()
        );
        let acked = acked.expect("a rate");
        assert!((2_600_000..3_200_000).contains(&acked), "{acked}");
    }

    #[test]
    fn a_path_that_queues_shows_over_use_within_a_second() {
        // 2.9 Mbit/s into 2 Mbit/s: the queue grows 30 ms each 100 ms.
        let (usages, acked) = run(2e6, 10, 300, 0);
        let first = usages.iter().position(|u| *u == Usage::Over);
        assert!(
            first.is_some_and(|i| i <= 10),
            "over-use by the 10th report: {usages:?}"
        );
        let acked = acked.expect("a rate");
        assert!(
            (1_800_000..2_200_000).contains(&acked),
            "what arrived: {acked}"
        );
    }
}
