//! A dual-stack gateway (media bound to `::`, signalling on `[::]`) over real UDP on loopback:
//! a publisher and a viewer on `::1` and a viewer on 127.0.0.1 share one socket per shard.
//! The IPv4 viewer reaches that socket as `::ffff:127.0.0.1`; it must still be served and be
//! known by its IPv4 address.
//!
//! Without IPv6 on loopback the test says so and passes, unless `WISHCAST_IPV6=require` (CI)
//! makes that a failure.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::*;
use wishcast::client::http::request;
use wishcast::client::{Peer, VideoCodec};

const CODEC: VideoCodec = VideoCodec::H264;

/// Whether `::1` can be used here; a failure if it cannot and the run requires it.
fn ipv6_loopback() -> bool {
    let required = std::env::var("WISHCAST_IPV6").is_ok_and(|v| v == "require");
    match std::net::UdpSocket::bind("[::1]:0") {
        Ok(_) => true,
        Err(e) if !required => {
            eprintln!("skipped: no IPv6 on loopback ({e}); enable it (sysctl net.ipv6.conf.lo.disable_ipv6=0)");
            false
        }
        Err(e) => panic!("WISHCAST_IPV6=require: no IPv6 on loopback: {e}"),
    }
}

fn dual_stack_config() -> wishcast::Config {
    let mut c = test_config(2);
    c.http.listen = "[::]:0".parse().expect("addr");
    c.media.bind_ip = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
    // Loopback only: the test reaches nothing else.
    c.media.interfaces = vec!["lo".into()];
    c.media.stats_interval_secs = 1;
    c
}

/// `path` on the gateway's HTTP port at `ip`.
fn url(gw: &wishcast::Gateway, ip: IpAddr, path: &str) -> String {
    format!(
        "http://{}{path}",
        SocketAddr::new(ip, gw.http_addr().port())
    )
}

/// Candidate addresses (`ip port`) of an SDP.
fn candidates(sdp: &str) -> Vec<SocketAddr> {
    sdp.lines()
        .filter(|l| l.starts_with("a=candidate:"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let ip: IpAddr = f.get(4)?.parse().ok()?;
            Some(SocketAddr::new(ip, f.get(5)?.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_gateway_serves_ipv6_and_ipv4_peers() {
    if !ipv6_loopback() {
        return;
    }
    let gw = start(dual_stack_config()).await;
    let (v4, v6) = (
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    );
    // Each shard announces both families on its one port.
    let announced = gw.media_addrs().to_vec();
    for a in &announced {
        let other = SocketAddr::new(if a.is_ipv4() { v6 } else { v4 }, a.port());
        assert!(announced.contains(&other), "{announced:?}");
    }
    assert_eq!(
        announced.len(),
        4,
        "two shards, two families: {announced:?}"
    );

    let publisher = Peer::publish(&url(&gw, v6, "/whip/s"), opts(Some(CODEC), true))
        .await
        .expect("publish over IPv6 accepted");
    assert!(publisher.local_addr().is_ipv6());
    let offered = candidates(publisher.answer_sdp());
    assert!(
        offered.iter().any(|a| a.is_ipv6()) && offered.iter().any(|a| a.is_ipv4()),
        "the answer has host candidates of both families: {offered:?}"
    );
    publisher
        .wait_connected(Duration::from_secs(10))
        .await
        .expect("IPv6 publisher connects");
    let feed = LiveFeed::run(
        publisher,
        wishcast::peer::Feed::new(Some(CODEC), true)
            .with_fps(FPS as u32)
            .with_gop(GOP)
            .with_sizes(VIDEO_BYTES, VIDEO_BYTES),
    );

    // An IPv6 viewer and an IPv4 viewer, signalling over the matching family too.
    let mut viewers = Vec::new();
    for ip in [v6, v4] {
        let mut v = Peer::play(&url(&gw, ip, "/whep/s"), opts(Some(CODEC), true))
            .await
            .unwrap_or_else(|e| panic!("play from {ip} accepted: {e}"));
        assert_eq!(v.local_addr().ip(), ip, "the viewer's media is on {ip}");
        plays_video(&mut v, CODEC, 40).await;
        viewers.push(v);
    }

    // The API names each viewer by the address it sends from: the IPv4 one by its IPv4
    // address, not as ::ffff:127.0.0.1.
    let mut want: Vec<String> = viewers.iter().map(|v| v.local_addr().to_string()).collect();
    want.sort();
    let deadline = Instant::now() + Duration::from_secs(5);
    let seen = loop {
        let r = request("GET", &url(&gw, v4, "/api/streams/s"), &[], Vec::new())
            .await
            .expect("API answers");
        assert_eq!(r.status, 200, "{}", r.text());
        let stream: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
        let mut seen: Vec<String> = stream["viewers"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|v| v["remote"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        seen.sort();
        if seen == want || Instant::now() > deadline {
            break seen;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(seen, want, "viewers' remote addresses");

    for v in viewers {
        assert_eq!(v.delete().await.expect("DELETE"), 200);
    }
    let publisher = feed.stop().await;
    assert_eq!(publisher.delete().await.expect("DELETE"), 200);
    gw.shutdown().await;
}
