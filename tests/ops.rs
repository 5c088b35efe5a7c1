//! Operations endpoints against a live gateway: Prometheus metrics that move with real media,
//! health and readiness.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use wishcast::client::http::request;
use wishcast::client::{Peer, VideoCodec};

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
    let gw = start(test_config(2)).await;
    let codec = Some(VideoCodec::Vp8);
    let feed = Feed::start(&whip(&gw, "m"), codec, true, 0).await;
    let mut viewers = Vec::new();
    for _ in 0..2 {
        let mut v = Peer::play(&whep(&gw, "m"), opts(codec, true))
            .await
            .expect("play");
        v.next_frame(Duration::from_secs(5)).await.expect("frame");
        viewers.push(v);
    }
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

    tokio::time::sleep(Duration::from_millis(500)).await;
    let b = scrape(&gw).await;
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
    let gw = start(test_config(2)).await;
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
