//! What a shard counts: plain integers on the packet path, published for other threads after
//! each pass.

/// Counters of what a shard dropped or did, for tests and (later) metrics.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    pub datagrams_in: u64,
    pub datagrams_unknown_source: u64,
    pub datagrams_invalid: u64,
    pub packets_forwarded: u64,
    pub packets_no_codec: u64,
    /// Keyframe requests handed to str0m; it may merge several in one instant into one PLI.
    pub keyframe_requests_sent: u64,
    pub gop_cache_hits: u64,
    pub sessions_expired: u64,
    /// str0m calls that panicked; each cost its session only.
    pub panics: u64,
    /// NACKs received from viewers and sent to publishers, PLIs likewise, and packets resent
    /// from viewers' resend buffers: moved forward at each statistics event (every
    /// `media.stats_interval_secs`) by what str0m counted since the previous one.
    pub nacks_received: u64,
    pub nacks_sent: u64,
    pub plis_received: u64,
    pub plis_sent: u64,
    pub packets_retransmitted: u64,
    /// Seconds from a viewer's 201 to its first video packet, since last published.
    pub first_frames: Vec<f64>,
}

/// A shard's counters as other threads read them; the shard thread stores its [`Counters`]
/// here after each pass, so the hot path only increments plain integers.
#[derive(Debug, Default)]
pub struct SharedCounters {
    pub datagrams_in: std::sync::atomic::AtomicU64,
    pub datagrams_dropped: std::sync::atomic::AtomicU64,
    pub packets_forwarded: std::sync::atomic::AtomicU64,
    pub packets_no_codec: std::sync::atomic::AtomicU64,
    pub keyframe_requests_sent: std::sync::atomic::AtomicU64,
    pub gop_cache_hits: std::sync::atomic::AtomicU64,
    pub sessions_expired: std::sync::atomic::AtomicU64,
    pub nacks_received: std::sync::atomic::AtomicU64,
    pub nacks_sent: std::sync::atomic::AtomicU64,
    pub plis_received: std::sync::atomic::AtomicU64,
    pub plis_sent: std::sync::atomic::AtomicU64,
    pub packets_retransmitted: std::sync::atomic::AtomicU64,
    /// Nanoseconds the shard thread spent working rather than waiting.
    pub busy_ns: std::sync::atomic::AtomicU64,
    /// Time-to-first-frame samples not yet taken by a scrape (bounded).
    pub first_frames: std::sync::Mutex<Vec<f64>>,
}

impl SharedCounters {
    pub fn publish(&self, c: &Counters) {
        use std::sync::atomic::Ordering::Relaxed;
        self.datagrams_in.store(c.datagrams_in, Relaxed);
        self.datagrams_dropped
            .store(c.datagrams_unknown_source + c.datagrams_invalid, Relaxed);
        self.packets_forwarded.store(c.packets_forwarded, Relaxed);
        self.packets_no_codec.store(c.packets_no_codec, Relaxed);
        self.keyframe_requests_sent
            .store(c.keyframe_requests_sent, Relaxed);
        self.gop_cache_hits.store(c.gop_cache_hits, Relaxed);
        self.sessions_expired.store(c.sessions_expired, Relaxed);
        self.nacks_received.store(c.nacks_received, Relaxed);
        self.nacks_sent.store(c.nacks_sent, Relaxed);
        self.plis_received.store(c.plis_received, Relaxed);
        self.plis_sent.store(c.plis_sent, Relaxed);
        self.packets_retransmitted
            .store(c.packets_retransmitted, Relaxed);
    }

    /// Moves the engine's time-to-first-frame samples here, keeping at most 4096 unscraped.
    pub fn take_first_frames(&self, c: &mut Counters) {
        if c.first_frames.is_empty() {
            return;
        }
        let mut v = self.first_frames.lock().unwrap_or_else(|p| p.into_inner());
        if v.len() < 4096 {
            v.append(&mut c.first_frames);
        }
        c.first_frames.clear();
    }
}
