//! A shard whose thread panics outside any session's isolation is restarted with a fresh
//! engine on the same socket: its sessions are lost (their peers reconnect), every other
//! session plays on, and the restarted shard takes new sessions. Over real UDP.

mod common;

use common::*;
use wishcast::client::http::request;
use wishcast::client::{Peer, VideoCodec};

const CODEC: Option<VideoCodec> = Some(VideoCodec::H264);

/// `v` receives `n` video frames, each intact (a missing frame fails within 5 s).
async fn plays(v: &mut Peer, n: usize) {
    for _ in 0..n {
        next_checked_video(v, VideoCodec::H264).await;
    }
}

/// The API's view of `stream`.
async fn view(gw: &wishcast::Gateway, stream: &str) -> serde_json::Value {
    let r = request(
        "GET",
        &format!("http://{}/api/streams/{stream}", gw.http_addr()),
        &[],
        Vec::new(),
    )
    .await
    .expect("API");
    serde_json::from_slice(&r.body).expect("JSON")
}

/// The shard of viewer `peer` of `stream`, as the API lists it.
async fn shard_of(gw: &wishcast::Gateway, stream: &str, peer: &Peer) -> u64 {
    let body = view(gw, stream).await;
    let id = peer.location().rsplit('/').next().expect("session id");
    body["viewers"]
        .as_array()
        .and_then(|list| list.iter().find(|s| s["id"] == id))
        .and_then(|s| s["shard"].as_u64())
        .unwrap_or_else(|| panic!("session {id} listed: {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_shard_is_restarted_and_costs_only_its_own_sessions() {
    let gw = start(test_config(2)).await;
    let feed = LiveFeed::start(&whip(&gw, "s"), CODEC, false, 0).await;
    let mut a = watching(&whep(&gw, "s"), CODEC, false, 2).await;
    let publisher_shard = view(&gw, "s").await["publisher"]["shard"]
        .as_u64()
        .expect("the publisher's shard");
    let (mut near, far) = {
        let (v0, v1) = (a.remove(0), a.remove(0));
        if shard_of(&gw, "s", &v0).await == publisher_shard {
            (v0, v1)
        } else {
            (v1, v0)
        }
    };
    assert_ne!(
        shard_of(&gw, "s", &far).await,
        publisher_shard,
        "one viewer on each shard"
    );
    let other = 1 - publisher_shard as usize;

    // The shard without the publisher panics: its viewer is lost, the rest play on.
    gw.crash_shard(other);
    plays(&mut near, 60).await;
    assert_eq!(gw.stats().shard_restarts, 1);
    assert_eq!(
        far.delete().await.expect("DELETE answers"),
        404,
        "the lost session is gone from the directory"
    );
    let ready = request(
        "GET",
        &format!("http://{}/readyz", gw.http_addr()),
        &[],
        Vec::new(),
    )
    .await
    .expect("readyz");
    assert_eq!(ready.status, 200, "every shard runs again");
    // The restarted shard takes a new viewer, fed from the publisher's shard again.
    let mut fresh = Peer::play(&whep(&gw, "s"), opts(CODEC, false))
        .await
        .expect("a new viewer is accepted");
    assert_eq!(shard_of(&gw, "s", &fresh).await, other as u64);
    plays(&mut fresh, 45).await;

    // The publisher's shard panics: the publisher is lost, its viewers elsewhere stay and
    // play the next publisher without reconnecting.
    gw.crash_shard(publisher_shard as usize);
    let old = feed.stop().await;
    old.kill();
    let next = LiveFeed::start(&whip(&gw, "s"), CODEC, false, 1000).await;
    plays(&mut fresh, 45).await;
    assert_eq!(gw.stats().shard_restarts, 2);
    let metrics = request(
        "GET",
        &format!("http://{}/metrics", gw.http_addr()),
        &[],
        Vec::new(),
    )
    .await
    .expect("metrics")
    .text();
    assert!(
        metrics.contains("wishcast_shard_restarts_total 2"),
        "{metrics}"
    );
    next.stop().await;
    gw.shutdown().await;
}
