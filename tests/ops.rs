//! Operations endpoints against a live gateway: Prometheus metrics that move with real media,
//! health and readiness; NACK and PLI counters against the feedback on the wire of the
//! in-memory network; and session log lines that carry the session's id.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use wishcast::client::http::request;
use wishcast::client::{Peer, VideoCodec};
use wishcast::sim::{self, Sim, Way};

/// A gateway logging into [`captured_logs`].
async fn gateway(config: wishcast::Config) -> wishcast::Gateway {
    captured_logs("info");
    start(config).await
}

fn log_text() -> String {
    captured_text("info")
}

/// `name{labels} value` lines of a Prometheus text exposition, by series.
fn parse(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

async fn scrape(gw: &wishcast::Gateway) -> HashMap<String, f64> {
    let r = request(
        "GET",
        &format!("http://{}/metrics", gw.http_addr()),
        &[],
        Vec::new(),
    )
    .await
    .expect("scrape");
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/plain; version=0.0.4")));
    parse(&r.text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_sessions_packets_requests_and_first_frames() {
    let mut config = test_config(2);
    // Feedback counters move with str0m's statistics: every second here.
    config.media.stats_interval_secs = 1;
    let gw = gateway(config).await;
    let codec = Some(VideoCodec::Vp8);
    let feed = LiveFeed::start(&whip(&gw, "m"), codec, true, 0).await;
    let viewers = watching(&whep(&gw, "m"), codec, true, 2).await;
    let a = scrape(&gw).await;
    assert_eq!(a["wishcast_sessions{kind=\"publish\"}"], 1.0);
    assert_eq!(a["wishcast_sessions{kind=\"play\"}"], 2.0);
    assert_eq!(a["wishcast_streams_live"], 1.0);
    assert_eq!(
        a["wishcast_http_requests_total{route=\"/whep/{stream}\",method=\"POST\",status=\"201\"}"],
        2.0
    );
    assert_eq!(
        a["wishcast_http_requests_total{route=\"/whip/{stream}\",method=\"POST\",status=\"201\"}"],
        1.0
    );
    assert_eq!(a["wishcast_time_to_first_frame_seconds_count"], 2.0);
    assert!(a["wishcast_shard_busy_seconds_total{shard=\"0\"}"] > 0.0);

    // A viewer asks for a keyframe: a PLI from it, and one on to the publisher.
    let plis = (
        a["wishcast_plis_received_total"],
        a["wishcast_plis_sent_total"],
    );
    viewers[0].request_keyframe().expect("PLI");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let b = scrape(&gw).await;
    assert!(
        b["wishcast_plis_received_total"] > plis.0,
        "the viewer's PLI is counted: {plis:?}"
    );
    assert!(
        b["wishcast_plis_sent_total"] > plis.1,
        "a PLI went to the publisher: {plis:?}"
    );
    // No loss on loopback; the NACK series are there all the same (the sim test moves them).
    for series in [
        "wishcast_nacks_received_total",
        "wishcast_nacks_sent_total",
        "wishcast_packets_retransmitted_total",
    ] {
        assert!(b.contains_key(series), "{series} is exported");
    }
    for counter in [
        "wishcast_packets_forwarded_total",
        "wishcast_datagrams_received_total",
    ] {
        assert!(
            b[counter] > a[counter],
            "{counter} moves: {} -> {}",
            a[counter],
            b[counter]
        );
    }
    assert_eq!(
        b["wishcast_http_requests_total{route=\"/metrics\",method=\"GET\",status=\"200\"}"], 1.0,
        "the first scrape is counted; no per-session or per-path labels appear"
    );
    assert!(
        !b.keys()
            .any(|k| k.contains("session=") || k.contains("/whep/m")),
        "label cardinality stays bounded"
    );
    feed.stop().await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_readyz_answer() {
    let gw = gateway(test_config(2)).await;
    for (path, body) in [("/healthz", "ok\n"), ("/readyz", "ready\n")] {
        let r = request(
            "GET",
            &format!("http://{}{path}", gw.http_addr()),
            &[],
            Vec::new(),
        )
        .await
        .expect("request");
        assert_eq!((r.status, r.text().as_str()), (200, body), "{path}");
    }
    gw.shutdown().await;
}

/// Loss on both legs of the in-memory network: the viewer NACKs and the gateway answers from
/// its resend buffer; the gateway NACKs the publisher, whose resends of the 46th packet are
/// lost too, so the gateway asks it for a keyframe. The shard's counters (what
/// `/metrics` exports) equal the feedback the peers sent and received on the wire.
#[test]
fn nack_and_pli_counters_equal_the_feedback_on_the_wire() {
    for direct in [false, true] {
        nack_and_pli_counters_on(direct);
    }
}

/// The counters with viewers' media through str0m, or through the gateway's own egress.
fn nack_and_pli_counters_on(direct: bool) {
    let mut config = wishcast::Config::default();
    config.media.direct_egress = direct;
    config.media.stats_interval_secs = 1;
    let mut sim = Sim::new(config, 1);
    let codec = VideoCodec::Vp8;
    let p = sim
        .add_publisher("s", sim::PeerOptions::with_video(codec))
        .expect("publisher");
    let v = sim
        .add_viewer("s", sim::PeerOptions::with_video(codec))
        .expect("viewer");
    assert!(sim.run_until_true(Duration::from_secs(5), |s| s.connected_count() == 2));
    // The 21st, 22nd and 46th video packets, on the way to the viewer and from the publisher.
    sim.set_drop(move |d| {
        let lost = d
            .rtp()
            .is_some_and(|r| d.is_video_media() && [20, 21, 45].contains(&r.nth));
        let upstream = d.way == Way::ToGateway && d.peer == p;
        let resent = upstream && d.rtp().is_some_and(|r| r.rtx);
        resent || lost && ((d.way == Way::FromGateway && d.peer == v) || upstream)
    });
    sim.start_feed(p, sim::Feed::new(Some(codec), true).with_max_frames(60));
    sim.run_for(Duration::from_millis(2500));
    // The next statistics event counts everything.
    sim.run_for(Duration::from_millis(1500));

    let c = &sim.engine(0).counters;
    let (viewer, publisher) = (sim.peer(v), sim.peer(p));
    assert!(!viewer.rtcp_out().nacks.is_empty(), "the viewer NACKed");
    assert!(
        !publisher.rtcp_in().nacks.is_empty(),
        "the gateway NACKed upstream"
    );
    assert_eq!(c.nacks_received, viewer.rtcp_out().nacks.len() as u64);
    assert_eq!(c.nacks_sent, publisher.rtcp_in().nacks.len() as u64);
    assert!(viewer.down.rtx >= 3, "{:?}", viewer.down);
    assert_eq!(c.packets_retransmitted, viewer.down.rtx);
    assert!(!publisher.rtcp_in().plis.is_empty(), "asked for a keyframe");
    assert_eq!(c.plis_sent, publisher.rtcp_in().plis.len() as u64);
    assert_eq!(c.plis_received, viewer.rtcp_out().plis.len() as u64);
}

/// Every line the shard logs about a session carries the session's id, stream and kind from its
/// span: here its creation, connection and removal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_log_lines_carry_the_session_id() {
    let gw = gateway(test_config(1)).await;
    let codec = Some(VideoCodec::Vp8);
    let feed = LiveFeed::start(&whip(&gw, "logged"), codec, false, 0).await;
    let mut viewer = Peer::play(&whep(&gw, "logged"), opts(codec, false))
        .await
        .expect("play");
    viewer
        .wait_connected(Duration::from_secs(10))
        .await
        .expect("connects");
    // The viewer, the DTLS server, is connected once it has sent its last flight; the
    // gateway when that flight arrives, before it sends media.
    assert!(
        viewer.next_frame(Duration::from_secs(10)).await.is_some(),
        "media flows"
    );
    let id = viewer
        .location()
        .rsplit('/')
        .next()
        .expect("id")
        .to_string();
    assert_eq!(viewer.delete().await.expect("DELETE"), 200);
    feed.stop().await;
    gw.shutdown().await;

    let text = log_text();
    let field = format!("id={id}");
    for message in ["session created", "connected", "session removed"] {
        let line = text
            .lines()
            .find(|l| l.contains(&field) && l.contains(&format!(": {message}")))
            .unwrap_or_else(|| panic!("a line {message:?} with {field}:\n{text}"));
        assert!(
            line.contains("stream=logged") && line.contains("kind=play"),
            "{line}"
        );
    }
}
