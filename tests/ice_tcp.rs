//! ICE over TCP (RFC 6544) on real sockets: the gateway's answers carry passive TCP
//! candidates on its one TCP port, and peers that offer only an active TCP candidate (no UDP
//! at all, as a client behind a firewall that blocks UDP) publish and watch through it, with
//! every datagram framed per RFC 4571. With `media.ice_tcp` off the answers have none, and such
//! a peer cannot connect.

mod common;

use std::time::Duration;

use common::*;
use wishcast::client::http::request;
use wishcast::client::{ClientError, ClientOptions, Peer, VideoCodec};

const CODEC: VideoCodec = VideoCodec::H264;

fn tcp_only(video: Option<VideoCodec>, audio: bool) -> ClientOptions {
    ClientOptions {
        tcp: true,
        ..ClientOptions::from(opts(video, audio))
    }
}

/// The answer's ICE-TCP candidates, as `(address, tcptype)`.
fn tcp_candidates(sdp: &str) -> Vec<(String, String)> {
    sdp.lines()
        .filter(|l| l.starts_with("a=candidate:"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if !f.get(2)?.eq_ignore_ascii_case("tcp") {
                return None;
            }
            let at = f.iter().position(|x| *x == "tcptype")?;
            Some((
                format!("{}:{}", f.get(4)?, f.get(5)?),
                f.get(at + 1)?.to_string(),
            ))
        })
        .collect()
}

/// A STUN binding request (RFC 8489) with only a USERNAME attribute.
fn binding_request(username: &str) -> Vec<u8> {
    let mut attr = 0x0006u16.to_be_bytes().to_vec();
    attr.extend_from_slice(&(username.len() as u16).to_be_bytes());
    attr.extend_from_slice(username.as_bytes());
    while attr.len() % 4 != 0 {
        attr.push(0);
    }
    let mut m = vec![0x00, 0x01];
    m.extend_from_slice(&(attr.len() as u16).to_be_bytes());
    m.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
    m.extend_from_slice(&[7; 12]);
    m.extend_from_slice(&attr);
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_only_peers_publish_and_watch_over_ice_tcp() {
    let gw = start(test_config(2)).await;
    let tcp = gw.tcp_addr().expect("ICE-TCP is on by default");

    // A UDP viewer and a TCP-only viewer of a TCP-only publisher, on either shard.
    let publisher = Peer::publish(&whip(&gw, "s"), tcp_only(Some(CODEC), true))
        .await
        .expect("publish accepted");
    let offered = tcp_candidates(publisher.answer_sdp());
    assert_eq!(
        offered,
        vec![(tcp.to_string(), "passive".to_string())],
        "one passive candidate on the node's TCP port: {}",
        publisher.answer_sdp()
    );
    publisher
        .wait_connected(Duration::from_secs(10))
        .await
        .expect("the TCP-only publisher connects");
    let feed = LiveFeed::run(
        publisher,
        wishcast::peer::Feed::new(Some(CODEC), true)
            .with_fps(FPS as u32)
            .with_gop(GOP)
            .with_sizes(VIDEO_BYTES, VIDEO_BYTES),
    );
    let mut viewers = Vec::new();
    for tcp in [true, false, true] {
        let o = if tcp {
            tcp_only(Some(CODEC), true)
        } else {
            opts(Some(CODEC), true).into()
        };
        let mut v = Peer::play(&whep(&gw, "s"), o).await.expect("play accepted");
        // Whole 10 kB frames, each several datagrams, cross the TCP connections intact.
        plays_video(&mut v, CODEC, 60).await;
        let audio = v.stats().audio_frames;
        assert!(audio > 0, "Opus arrives too");
        viewers.push(v);
    }
    let stats = gw.stats();
    assert_eq!(
        stats.tcp_send_dropped, 0,
        "nothing lost on the way to TCP peers"
    );

    // The API names each session's path.
    let r = request(
        "GET",
        &format!("http://{}/api/streams/s", gw.http_addr()),
        &[],
        Vec::new(),
    )
    .await
    .expect("API answers");
    assert_eq!(r.status, 200, "{}", r.text());
    let stream: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
    let path_of = |v: &serde_json::Value| {
        (
            v["transport"].as_str().unwrap_or("-").to_string(),
            v["candidate"].as_str().unwrap_or("-").to_string(),
        )
    };
    let tcp_host = ("tcp".to_string(), "host".to_string());
    assert_eq!(path_of(&stream["publisher"]), tcp_host, "{stream}");
    let listed = stream["viewers"].as_array().expect("viewers");
    let over_tcp = listed.iter().filter(|v| path_of(v) == tcp_host).count();
    assert_eq!(over_tcp, 2, "two viewers over ICE-TCP: {stream}");
    // The UDP viewer is known by the address it sends from, its host candidate.
    let udp = viewers[1].local_addr().to_string();
    let udp_viewer = listed
        .iter()
        .find(|v| v["remote"] == udp.as_str())
        .unwrap_or_else(|| panic!("the UDP viewer {udp} is listed: {stream}"));
    assert_eq!(path_of(udp_viewer), ("udp".to_string(), "host".to_string()));
    for v in viewers {
        assert_eq!(v.delete().await.expect("DELETE"), 200);
    }
    let publisher = feed.stop().await;
    assert_eq!(publisher.delete().await.expect("DELETE"), 200);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_ice_tcp_off_answers_have_no_tcp_candidate() {
    let mut config = test_config(1);
    config.media.ice_tcp = false;
    let gw = start(config).await;
    assert_eq!(gw.tcp_addr(), None);
    let publisher = Peer::publish(&whip(&gw, "s"), opts(Some(CODEC), false))
        .await
        .expect("publish accepted");
    assert_eq!(tcp_candidates(publisher.answer_sdp()), Vec::new());
    publisher
        .wait_connected(Duration::from_secs(10))
        .await
        .expect("UDP publisher connects");
    // A peer that can only do TCP has nothing to pair with.
    let tcp_publisher = Peer::publish(&whip(&gw, "t"), tcp_only(Some(CODEC), false))
        .await
        .expect("POST accepted");
    let waited = tcp_publisher.wait_connected(Duration::from_secs(2)).await;
    assert!(
        matches!(waited, Err(ClientError::Timeout(_))),
        "no path without TCP candidates: {waited:?}"
    );
    gw.shutdown().await;
}

/// A connection whose first frame is not an ICE check of a session here is closed, and the
/// shards never see it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_names_no_session_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = start(test_config(1)).await;
    let tcp = gw.tcp_addr().expect("ICE-TCP on");
    for first in [
        b"\x00\x05hello".to_vec(),
        // A binding request for a ufrag nobody has.
        {
            let mut m = binding_request("nobody:x");
            let mut f = (m.len() as u16).to_be_bytes().to_vec();
            f.append(&mut m);
            f
        },
        // A length past the largest frame taken.
        b"\xff\xff".to_vec(),
    ] {
        let mut s = tokio::net::TcpStream::connect(tcp).await.expect("connect");
        s.write_all(&first).await.expect("write");
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(6), s.read(&mut buf))
            .await
            .expect("closed within the first-frame wait");
        assert!(
            matches!(n, Ok(0) | Err(_)),
            "closed, nothing sent back: {n:?}"
        );
    }
    assert_eq!(gw.stats().datagrams_in, 0, "no shard saw any of it");
    gw.shutdown().await;
}
