//! The operator API: the streams with their figures, a stream's sessions, kicking a publisher
//! or a viewer, and an OpenAPI document that stays true (every documented operation answers
//! with a documented status, and the stream bodies match their schemas field for field).

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;
use wishcast::client::http::request;
use wishcast::client::VideoCodec;

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

/// The schema `name` of the gateway's OpenAPI document.
fn schema<'a>(doc: &'a Value, name: &str) -> &'a Value {
    &doc["components"]["schemas"][name]
}

/// Checks `value` against `schema` (the subset the document uses: `$ref`, `allOf`, `type`,
/// `nullable`, `enum`, `required`, `properties`, `items`). An object must have every required
/// property and, if `closed`, no property the schema does not list.
fn conforms(
    doc: &Value,
    schema: &Value,
    value: &Value,
    at: &str,
    closed: bool,
) -> Result<(), String> {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.rsplit('/').next().unwrap_or_default();
        return conforms(doc, self::schema(doc, name), value, at, closed);
    }
    if value.is_null() {
        return if schema["nullable"] == true {
            Ok(())
        } else {
            Err(format!("{at} is null"))
        };
    }
    if let Some(parts) = schema["allOf"].as_array() {
        // Every part holds, and together they list every property.
        for part in parts {
            conforms(doc, part, value, at, false)?;
        }
        if closed {
            let listed = |key: &String| {
                parts.iter().any(|part| {
                    let part = match part["$ref"].as_str() {
                        Some(r) => self::schema(doc, r.rsplit('/').next().unwrap_or_default()),
                        None => part,
                    };
                    part["properties"].get(key).is_some()
                })
            };
            for key in value.as_object().into_iter().flat_map(|o| o.keys()) {
                if !listed(key) {
                    return Err(format!("{at}.{key} is not documented"));
                }
            }
        }
        return Ok(());
    }
    let ok = match schema["type"].as_str() {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_u64() || value.is_i64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        _ => true,
    };
    if !ok {
        return Err(format!("{at}: {value} is not {}", schema["type"]));
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(value) {
            return Err(format!("{at}: {value} is not one of {allowed:?}"));
        }
    }
    if let Some(items) = value.as_array() {
        for (i, item) in items.iter().enumerate() {
            conforms(doc, &schema["items"], item, &format!("{at}[{i}]"), true)?;
        }
    }
    if let Some(obj) = value.as_object() {
        for key in schema["required"].as_array().into_iter().flatten() {
            let key = key.as_str().unwrap_or_default();
            if !obj.contains_key(key) {
                return Err(format!("{at}.{key} is missing"));
            }
        }
        for (key, v) in obj {
            match schema["properties"].get(key) {
                Some(p) => conforms(doc, p, v, &format!("{at}.{key}"), true)?,
                None if closed => return Err(format!("{at}.{key} is not documented")),
                None => {}
            }
        }
    }
    Ok(())
}

/// The body of a documented `GET` conforms to the schema of its 200 response.
async fn get_checked(gw: &wishcast::Gateway, doc: &Value, path: &str, template: &str) -> Value {
    let (status, body) = get_json(gw, path).await;
    assert_eq!(status, 200, "{path}");
    let schema =
        &doc["paths"][template]["get"]["responses"]["200"]["content"]["application/json"]["schema"];
    assert!(schema.is_object(), "{template} documents its 200 body");
    if let Err(e) = conforms(doc, schema, &body, "body", true) {
        panic!("GET {path} does not match the document: {e}\n{body:#}");
    }
    body
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
    let (_, doc) = get_json(&gw, "/api/openapi.json").await;
    let codec = Some(VideoCodec::Vp8);
    let feed = LiveFeed::start(&whip(&gw, "k"), codec, false, 0).await;
    let viewers = watching(&whep(&gw, "k"), codec, false, 2).await;
    // Statistics every second here (the default is 5 s).
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let stream = get_checked(&gw, &doc, "/api/streams/k", "/api/streams/{stream}").await;
    assert_eq!(stream["live"], true);
    assert_eq!(stream["publisher_state"], "connected");
    assert_eq!(
        stream["video_codecs"],
        serde_json::json!(["VP8"]),
        "{stream}"
    );
    assert_eq!(
        stream["audio_codecs"],
        serde_json::json!([]),
        "no audio published"
    );
    assert_eq!(stream["viewer_count"], 2);
    // The feed sends about 2.4 Mbit/s of video; each viewer gets all of it.
    let rate_in = stream["bitrate_in"].as_u64().unwrap_or(0);
    assert!((1_000_000..10_000_000).contains(&rate_in), "{stream}");
    let rate_out = stream["bitrate_out"].as_u64().unwrap_or(0);
    assert!(rate_out > rate_in, "two viewers: {stream}");
    let uptime = stream["uptime_secs"].as_f64().unwrap_or(0.0);
    assert!(uptime > 2.0, "{stream}");
    let publisher = &stream["publisher"];
    assert_eq!(publisher["kind"], "publish");
    assert_eq!(publisher["state"], "connected");
    assert!(
        publisher["bytes_in"].as_u64().is_some_and(|b| b > 10_000),
        "{publisher}"
    );
    assert_eq!(publisher["bitrate_in"], stream["bitrate_in"]);
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
        assert!(v["bitrate_out"].as_u64().is_some_and(|b| b > 0), "{v}");
    }
    let sum = |field: &str| list.iter().filter_map(|v| v[field].as_u64()).sum::<u64>();
    assert_eq!(stream["bitrate_out"].as_u64(), Some(sum("bitrate_out")));
    assert_eq!(stream["packets_out"].as_u64(), Some(sum("packets_out")));

    // The list shows the same stream with the same kind of figures.
    let all = get_checked(&gw, &doc, "/api/streams", "/api/streams").await;
    let item = all["streams"]
        .as_array()
        .and_then(|l| l.iter().find(|s| s["name"] == "k"))
        .expect("k is listed")
        .clone();
    assert_eq!(
        (item["live"].clone(), item["viewers"].clone()),
        (true.into(), 2.into())
    );
    assert_eq!(item["publisher_state"], "connected");
    assert_eq!(item["video_codecs"], stream["video_codecs"]);
    assert!(item["bitrate_in"].as_u64().is_some_and(|b| b > 0), "{item}");
    assert!(
        item["bitrate_out"].as_u64().is_some_and(|b| b > 0),
        "{item}"
    );
    let later = item["uptime_secs"].as_f64().unwrap_or(0.0);
    assert!(later > uptime, "uptime grows: {uptime} then {later}");

    // With the feed stopped and one more statistics round, the counts are final: every packet
    // a viewer got came from the publisher, and the viewer got what was sent to it.
    let publisher_peer = feed.stop().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stream = get_checked(&gw, &doc, "/api/streams/k", "/api/streams/{stream}").await;
    let packets_in = stream["packets_in"].as_u64().unwrap_or(0);
    assert!(packets_in > 100, "{stream}");
    let lost_in = stream["packets_lost_in"].as_u64().unwrap_or(u64::MAX);
    assert!(lost_in < packets_in / 10, "loopback loses little: {stream}");
    assert!(
        stream["bitrate_in"]
            .as_u64()
            .is_some_and(|b| b < rate_in / 2),
        "{stream}"
    );
    let list = stream["viewers"].as_array().expect("viewers");
    for v in list {
        let out = v["packets_out"].as_u64().unwrap_or(0);
        let resent = v["packets_retransmitted"].as_u64().unwrap_or(0);
        // A viewer's start sends its first video packet 3 more times (the same packet, so
        // the receiver drops the copies), which str0m counts as sent.
        assert!(
            out > 0 && out - resent <= packets_in + 3,
            "{v} vs {packets_in} in"
        );
    }
    let mut delivered = 0;
    for v in &viewers {
        let got = v.stats();
        let session = v.location().rsplit('/').next().unwrap_or_default();
        let figures = list
            .iter()
            .find(|s| s["id"] == session)
            .expect("viewer listed");
        assert!(
            figures["bytes_out"].as_u64() >= Some(got.bytes_received),
            "{figures} vs {got:?}"
        );
        delivered += got.frames_received();
    }
    let packets_out = stream["packets_out"].as_u64().unwrap_or(0);
    assert!(
        packets_out >= delivered,
        "{packets_out} packets for {delivered} frames"
    );

    // Kick one viewer by id.
    let victim = viewers[0]
        .location()
        .rsplit('/')
        .next()
        .expect("id")
        .to_string();
    // Only the spelling the gateway issued names a session, here as on /whep/...: an
    // upper-case alias is 404 and the session stays.
    let alias = format!("/api/sessions/{}", victim.to_uppercase());
    assert_eq!(delete(&gw, &alias).await, 404);
    assert_eq!(gw.session_count(), 3);
    assert_eq!(delete(&gw, &format!("/api/sessions/{victim}")).await, 204);
    assert_eq!(delete(&gw, &format!("/api/sessions/{victim}")).await, 404);
    assert_eq!(gw.session_count(), 2);

    // Kick the publisher: the other viewer stays and the stream is no longer live.
    assert_eq!(delete(&gw, "/api/streams/k").await, 204);
    assert_eq!(gw.session_count(), 1);
    let stream = get_checked(&gw, &doc, "/api/streams/k", "/api/streams/{stream}").await;
    assert_eq!(stream["live"], false);
    assert_eq!(stream["publisher_state"], "none");
    assert_eq!(stream["uptime_secs"], Value::Null);
    assert_eq!(stream["video_codecs"], serde_json::json!([]));
    assert_eq!(stream["viewers"].as_array().map(Vec::len), Some(1));
    assert_eq!(stream["viewer_count"], 1);
    get_checked(&gw, &doc, "/api/streams", "/api/streams").await;
    assert_eq!(
        delete(&gw, "/api/streams/k").await,
        404,
        "no publisher to kick"
    );
    assert_eq!(get_json(&gw, "/api/streams/nosuch").await.0, 404);
    drop(publisher_peer);
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
            .replace("{id}", "0123456789abcdef0123456789abcdef")
            .replace("{event}", "fedcba9876543210fedcba9876543210");
        for (method, op) in item.as_object().expect("path item") {
            if method == "parameters" {
                continue;
            }
            // Each documented body type in turn: a PATCH takes a trickle fragment or the SDP
            // answer to a counter-offer.
            let mut body_types: Vec<Option<String>> = op["requestBody"]["content"]
                .as_object()
                .map(|c| c.keys().cloned().map(Some).collect())
                .unwrap_or_default();
            if body_types.is_empty() {
                body_types.push(None);
            }
            for body_type in &body_types {
                let mut headers = Vec::new();
                if let Some(t) = body_type {
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
                    "{method} {path} ({body_type:?}) answered {}, which the document does not \
                     list",
                    r.status
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "all operations checked: {checked}");
    gw.shutdown().await;
}
