//! Prometheus metrics through the `metrics` facade, one recorder per gateway.
//!
//! The recorder is not installed globally: two gateways in one process (tests, embedders) keep
//! apart, and recording goes through [`Metrics::record`]. Data-plane numbers are not recorded
//! per packet: shards count in plain integers and the scrape reads them ([`Snapshot`]), so
//! `/metrics` costs the packet path nothing.

use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

/// Buckets for request durations and time to first frame, in seconds.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

/// The gateway's state at scrape time.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub publishers: usize,
    pub viewers: usize,
    pub streams: usize,
    pub live_streams: usize,
    /// The shards' counters, summed.
    pub stats: crate::shard::counters::Counters,
    /// Per shard: seconds its thread spent working (not waiting).
    pub shard_busy_secs: Vec<f64>,
    /// Per shard: the fraction of the last measurement window its thread was busy (0 to 1),
    /// what admission control and load shedding go by.
    pub shard_load: Vec<f64>,
    /// Times to first frame (201 to first video packet sent) since the last scrape.
    pub first_frames: Vec<f64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let builder = PrometheusBuilder::new();
        let builder = builder
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        Metrics { recorder, handle }
    }

    /// Runs `f` with this gateway's recorder behind the `metrics` macros.
    pub fn record<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.recorder, f)
    }

    /// One HTTP request: route template (never the raw path, to bound cardinality), method,
    /// status and duration.
    pub fn http_request(&self, route: &str, method: &str, status: u16, secs: f64) {
        let labels = [
            ("route", route.to_string()),
            ("method", method.to_string()),
            ("status", status.to_string()),
        ];
        self.record(|| {
            metrics::counter!("wishcast_http_requests_total", &labels).increment(1);
            metrics::histogram!(
                "wishcast_http_request_duration_seconds",
                "route" => route.to_string()
            )
            .record(secs);
        });
    }

    /// The Prometheus text exposition of everything, with `snap` as the current state.
    pub fn render(&self, snap: &Snapshot) -> String {
        let s = &snap.stats;
        self.record(|| {
            use metrics::{counter, gauge, histogram};
            gauge!("wishcast_sessions", "kind" => "publish").set(snap.publishers as f64);
            gauge!("wishcast_sessions", "kind" => "play").set(snap.viewers as f64);
            gauge!("wishcast_streams").set(snap.streams as f64);
            gauge!("wishcast_streams_live").set(snap.live_streams as f64);
            counter!("wishcast_datagrams_received_total").absolute(s.datagrams_in);
            counter!("wishcast_datagrams_dropped_total").absolute(s.datagrams_dropped());
            counter!("wishcast_packets_forwarded_total").absolute(s.packets_forwarded);
            counter!("wishcast_packets_without_codec_total").absolute(s.packets_no_codec);
            counter!("wishcast_twcc_feedback_malformed_total").absolute(s.twcc_malformed);
            counter!("wishcast_keyframe_requests_total").absolute(s.keyframe_requests_sent);
            counter!("wishcast_unrepaired_losses_total").absolute(s.unrepaired_losses);
            counter!("wishcast_gop_cache_hits_total").absolute(s.gop_cache_hits);
            counter!("wishcast_sessions_expired_total").absolute(s.sessions_expired);
            counter!("wishcast_str0m_panics_total").absolute(s.panics);
            counter!("wishcast_nacks_received_total").absolute(s.nacks_received);
            counter!("wishcast_packets_retransmitted_total").absolute(s.packets_retransmitted);
            counter!("wishcast_nacks_sent_total").absolute(s.nacks_sent);
            counter!("wishcast_plis_received_total").absolute(s.plis_received);
            counter!("wishcast_plis_sent_total").absolute(s.plis_sent);
            counter!("wishcast_shard_media_dropped_total").absolute(s.shard_media_dropped);
            counter!("wishcast_sessions_shed_total").absolute(s.sessions_shed);
            counter!("wishcast_shard_restarts_total").absolute(s.shard_restarts);
            counter!("wishcast_tcp_send_dropped_total").absolute(s.tcp_send_dropped);
            counter!("wishcast_packets_direct_total").absolute(s.packets_direct);
            counter!("wishcast_udp_send_dropped_total").absolute(s.udp_send_dropped);
            for (k, busy) in snap.shard_busy_secs.iter().enumerate() {
                gauge!("wishcast_shard_busy_seconds_total", "shard" => k.to_string()).set(*busy);
            }
            for (k, load) in snap.shard_load.iter().enumerate() {
                gauge!("wishcast_shard_load", "shard" => k.to_string()).set(*load);
            }
            for t in &snap.first_frames {
                histogram!("wishcast_time_to_first_frame_seconds").record(*t);
            }
        });
        self.handle.run_upkeep();
        self.handle.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_gateways_keep_their_own_numbers() {
        let (a, b) = (Metrics::new(), Metrics::new());
        a.http_request("/whip/{stream}", "POST", 201, 0.002);
        let snap = Snapshot {
            viewers: 3,
            stats: crate::shard::counters::Counters {
                nacks_received: 4,
                packets_retransmitted: 7,
                panics: 2,
                datagrams_unknown_source: 5,
                datagrams_invalid: 1,
                ..Default::default()
            },
            ..Snapshot::default()
        };
        let text = a.render(&snap);
        assert!(text.contains(
            "wishcast_http_requests_total{route=\"/whip/{stream}\",method=\"POST\",status=\"201\"} 1"
        ), "{text}");
        assert!(
            text.contains("wishcast_sessions{kind=\"play\"} 3"),
            "{text}"
        );
        assert!(text.contains("wishcast_str0m_panics_total 2"), "{text}");
        assert!(
            text.contains("wishcast_datagrams_dropped_total 6"),
            "{text}"
        );
        assert!(text.contains("wishcast_nacks_received_total 4"), "{text}");
        assert!(
            text.contains("wishcast_packets_retransmitted_total 7"),
            "{text}"
        );
        assert!(!b
            .render(&Snapshot::default())
            .contains("wishcast_http_requests_total"));
    }
}
