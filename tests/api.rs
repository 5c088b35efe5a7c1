//! The operator API: a stream's sessions, kicking a publisher or a viewer, and an OpenAPI
//! document that stays true (every documented operation answers with a documented status).

mod common;

use std::time::Duration;

use common::*;
use wishcast::client::http::request;
use wishcast::client::{Peer, VideoCodec};

async fn get_json(gw: &wishcast::Gateway, path: &str) -> (u16, serde_json::Value) {
    let r = request(
        "GET",
        &format!("http://{}{path}", gw.http_addr()),
        &[],
        Vec::new(),
    )
    .await
    .expect("request");
    let v = serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null);
    (r.status, v)
}

async fn delete(gw: &wishcast::Gateway, path: &str) -> u16 {
    request(
        "DELETE",
        &format!("http://{}{path}", gw.http_addr()),
        &[],
        Vec::new(),
    )
    .await
    .expect("request")
    .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_detail_and_kicks() {
    let mut config = test_config(2);
    config.media.stats_interval_secs = 1;
    let gw = start(config).await;
    let codec = Some(VideoCodec::Vp8);
    let feed = Feed::start(&whip(&gw, "k"), codec, false, 0).await;
    let mut viewers = Vec::new();
    for _ in 0..2 {
        let mut v = Peer::play(&whep(&gw, "k"), opts(codec, false))
            .await
            .expect("play");
        v.next_frame(Duration::from_secs(5)).await.expect("frame");
        viewers.push(v);
    }
    // Statistics every second here (the default is 5 s).
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (status, stream) = get_json(&gw, "/api/streams/k").await;
    assert_eq!(status, 200);
    assert_eq!(stream["live"], true);
    let publisher = &stream["publisher"];
    assert_eq!(publisher["kind"], "publish");
    assert_eq!(publisher["state"], "connected");
    assert!(
        publisher["bytes_in"].as_u64().is_some_and(|b| b > 10_000),
        "{publisher}"
    );
    let list = stream["viewers"].as_array().expect("viewers");
    assert_eq!(list.len(), 2);
    for v in list {
        assert_eq!(v["state"], "connected", "{v}");
        assert!(
            v["remote"]
                .as_str()
                .is_some_and(|r| r.starts_with("127.0.0.1:")),
            "{v}"
        );
        assert!(
            v["bytes_out"].as_u64().is_some_and(|b| b > 10_000),
            "media went out: {v}"
        );
        assert!(v["duration_secs"].as_f64().is_some_and(|d| d > 2.0), "{v}");
    }

    // Kick one viewer by id.
    let victim = viewers[0]
        .location()
        .rsplit('/')
        .next()
        .expect("id")
        .to_string();
    assert_eq!(delete(&gw, &format!("/api/sessions/{victim}")).await, 204);
    assert_eq!(delete(&gw, &format!("/api/sessions/{victim}")).await, 404);
    assert_eq!(gw.session_count(), 2);

    // Kick the publisher: the other viewer stays and the stream is no longer live.
    assert_eq!(delete(&gw, "/api/streams/k").await, 204);
    assert_eq!(gw.session_count(), 1);
    let (_, stream) = get_json(&gw, "/api/streams/k").await;
    assert_eq!(stream["live"], false);
    assert_eq!(stream["viewers"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        delete(&gw, "/api/streams/k").await,
        404,
        "no publisher to kick"
    );
    assert_eq!(get_json(&gw, "/api/streams/nosuch").await.0, 404);
    drop(feed.stop().await);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_answers_with_a_documented_status() {
    let gw = start(test_config(1)).await;
    let (status, doc) = get_json(&gw, "/api/openapi.json").await;
    assert_eq!(status, 200);
    // The API is readable by browser tools on other origins, like the signalling routes.
    let r = request(
        "GET",
        &format!("http://{}/api/openapi.json", gw.http_addr()),
        &[],
        Vec::new(),
    )
    .await
    .expect("request");
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().expect("paths");
    let mut checked = 0;
    for (path, item) in paths {
        let concrete = path
            .replace("{stream}", "docs")
            .replace("{id}", "0123456789abcdef0123456789abcdef");
        for (method, op) in item.as_object().expect("path item") {
            if method == "parameters" {
                continue;
            }
            let body_type = op["requestBody"]["content"]
                .as_object()
                .and_then(|c| c.keys().next().cloned());
            let mut headers = Vec::new();
            if let Some(t) = &body_type {
                headers.push(("content-type", t.as_str()));
                headers.push(("if-match", "\"x\""));
            }
            let body = if body_type.is_some() {
                b"v=0\r\n".to_vec()
            } else {
                Vec::new()
            };
            let r = request(
                &method.to_ascii_uppercase(),
                &format!("http://{}{concrete}", gw.http_addr()),
                &headers,
                body,
            )
            .await
            .expect("request");
            let documented = op["responses"]
                .as_object()
                .expect("responses")
                .contains_key(&r.status.to_string());
            assert!(
                documented,
                "{method} {path} answered {}, which the document does not list",
                r.status
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "all operations checked: {checked}");
    gw.shutdown().await;
}
