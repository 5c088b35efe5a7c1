//! Limits an operator sets: publishers, viewers per stream, new sessions per client address.

mod common;

use std::time::Duration;

use common::*;
use wishcast::client::http::request;
use wishcast::client::{ClientError, Peer, VideoCodec};

fn status_of<T: std::fmt::Debug>(r: Result<T, ClientError>) -> u16 {
    match r {
        Err(ClientError::Http { status, .. }) => status,
        other => panic!("expected an HTTP error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_and_viewer_limits_answer_503() {
    let mut config = test_config(2);
    config.limits.max_publishers = 1;
    config.limits.max_viewers_per_stream = 1;
    let gw = start(config).await;
    let codec = Some(VideoCodec::Vp8);
    let feed = LiveFeed::start(&whip(&gw, "a"), codec, false, 0).await;
    assert_eq!(
        status_of(Peer::publish(&whip(&gw, "b"), opts(codec, false)).await),
        503,
        "a second publisher is over max_publishers"
    );
    let mut first = Peer::play(&whep(&gw, "a"), opts(codec, false))
        .await
        .expect("play");
    first
        .next_frame(Duration::from_secs(5))
        .await
        .expect("frame");
    assert_eq!(
        status_of(Peer::play(&whep(&gw, "a"), opts(codec, false)).await),
        503,
        "a second viewer of the stream is over max_viewers_per_stream"
    );
    // The viewer leaves: there is room again.
    assert_eq!(first.delete().await.expect("delete"), 200);
    Peer::play(&whep(&gw, "a"), opts(codec, false))
        .await
        .expect("room after the first viewer left");
    feed.stop().await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_posts_from_one_address_get_429() {
    let mut config = test_config(1);
    config.limits.posts_per_minute_per_ip = 6;
    config.limits.post_burst_per_ip = 3;
    let gw = start(config).await;
    let url = whep(&gw, "none");
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let r = request(
            "POST",
            &url,
            &[("content-type", "application/sdp")],
            b"v=0\r\n".to_vec(),
        )
        .await
        .expect("request");
        statuses.push(r.status);
        if r.status == 429 {
            assert_eq!(r.header("content-type"), Some("application/problem+json"));
            let retry: u32 = r
                .header("retry-after")
                .and_then(|v| v.parse().ok())
                .expect("Retry-After seconds");
            assert!((1..=10).contains(&retry), "{retry}");
        }
    }
    assert_eq!(
        &statuses[3..],
        &[429],
        "the burst of 3 is spent: {statuses:?}"
    );
    assert!(statuses[..3].iter().all(|s| *s != 429), "{statuses:?}");
    // Other requests are not limited.
    let r = request(
        "GET",
        &format!("http://{}/api/streams", gw.http_addr()),
        &[],
        Vec::new(),
    )
    .await
    .expect("request");
    assert_eq!(r.status, 200);
    gw.shutdown().await;
}
