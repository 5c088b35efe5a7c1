//! Hostile HTTP clients over real TCP: a client trickling its headers, one trickling its body,
//! and one address flooding WHIP/WHEP POSTs over many connections while a well-behaved viewer
//! from another address joins and watches.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use wishcast::client::http::request;
use wishcast::client::{Peer, VideoCodec};
use wishcast::peer::{PeerCore, PeerOptions};
use wishcast::session::Role;

/// Sends `bytes` one at a time, `gap` apart, until the server closes the connection; returns
/// how many were sent and everything the server wrote back.
async fn trickle(tcp: &mut TcpStream, bytes: &[u8], gap: Duration) -> (usize, Vec<u8>) {
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    for (i, b) in bytes.iter().enumerate() {
        if tcp.write_all(&[*b]).await.is_err() {
            return (i, answer);
        }
        let deadline = tokio::time::sleep(gap);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                n = tcp.read(&mut buf) => match n {
                    Ok(0) | Err(_) => return (i + 1, answer),
                    Ok(n) => answer.extend_from_slice(&buf[..n]),
                },
            }
        }
    }
    (bytes.len(), answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_sent_a_byte_a_second_are_cut_off() {
    let mut config = test_config(1);
    config.http.header_read_timeout_secs = 2.0;
    let gw = start(config).await;
    let mut tcp = TcpStream::connect(gw.http_addr()).await.expect("connect");
    // 60 bytes of headers at one a second would hold the connection for a minute.
    let headers = format!(
        "GET /healthz HTTP/1.1\r\nHost: {}\r\nX-Slow: {}\r\n\r\n",
        gw.http_addr(),
        "z".repeat(20)
    );
    let started = Instant::now();
    let (sent, answer) = trickle(&mut tcp, headers.as_bytes(), Duration::from_secs(1)).await;
    assert!(
        sent < headers.len(),
        "the connection was closed before the headers were complete ({sent} of {} bytes, {:?})",
        headers.len(),
        started.elapsed()
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "nothing but a 408 comes back: {answer:?}"
    );
    // The listener serves everyone else as before.
    let r = request(
        "GET",
        &format!("http://{}/healthz", gw.http_addr()),
        &[],
        Vec::new(),
    )
    .await
    .expect("healthz");
    assert_eq!(r.status, 200);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_sent_slowly_gets_408_and_the_connection_closes() {
    let mut config = test_config(1);
    config.http.request_timeout_secs = 1.0;
    let gw = start(config).await;
    let mut tcp = TcpStream::connect(gw.http_addr()).await.expect("connect");
    let body = format!("v=0\r\n{}", "a=x-slow:0123456789\r\n".repeat(40));
    let head = format!(
        "POST /whip/slow HTTP/1.1\r\nHost: {}\r\nContent-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n",
        gw.http_addr(),
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.expect("headers");
    // Ten bytes a second: the body would take 80 s.
    let (sent, answer) = trickle(&mut tcp, body.as_bytes(), Duration::from_millis(100)).await;
    assert!(
        sent < body.len(),
        "cut off after {sent} of {} bytes",
        body.len()
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("application/problem+json") && answer.contains("request-timeout"),
        "{answer}"
    );
    assert_eq!(gw.session_count(), 0, "nothing was registered for it");
    gw.shutdown().await;
}

/// What one flooding connection saw.
#[derive(Default)]
struct Tally {
    created: u64,
    created_whep: u64,
    refused: u64,
    other: Vec<u16>,
    bad_refusals: u64,
}

/// POSTs `offers` round-robin (WHEP to `live`, WHIP to fresh streams) over one keep-alive
/// HTTP/1.1 connection from `from`, until `until`.
async fn flood(
    gateway: SocketAddr,
    from: SocketAddr,
    offers: Arc<(String, String)>,
    until: Instant,
    conn: usize,
) -> Tally {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(from).expect("bind the flooding address");
    let tcp = socket.connect(gateway).await.expect("connect");
    let (mut send, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .expect("handshake");
    tokio::spawn(connection);
    let mut tally = Tally::default();
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        let whep = n % 2 == 0;
        let (path, body) = if whep {
            ("/whep/live".to_string(), offers.1.clone())
        } else {
            (format!("/whip/flood-{conn}-{n}"), offers.0.clone())
        };
        let req = hyper::Request::post(path)
            .header("host", gateway.to_string())
            .header("content-type", "application/sdp")
            .body(Full::new(Bytes::from(body)))
            .expect("request");
        if send.ready().await.is_err() {
            break;
        }
        let Ok(res) = send.send_request(req).await else {
            break;
        };
        let status = res.status().as_u16();
        let retry = res
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok());
        let problem = res
            .headers()
            .get("content-type")
            .is_some_and(|v| v == "application/problem+json");
        let _ = res.into_body().collect().await;
        match status {
            201 => {
                tally.created += 1;
                tally.created_whep += u64::from(whep);
            }
            429 => {
                tally.refused += 1;
                if !problem || !retry.is_some_and(|s| (1..=60).contains(&s)) {
                    tally.bad_refusals += 1;
                }
            }
            s => tally.other.push(s),
        }
    }
    tally
}

fn offer(role: Role) -> String {
    let opts = PeerOptions {
        video: Some(VideoCodec::Vp8),
        audio: false,
        ..PeerOptions::default()
    };
    let now = Instant::now();
    let mut peer = PeerCore::new(role, opts.clone(), PeerCore::rtc_config(&opts), now);
    peer.offer(now, "127.0.0.2:40000".parse().expect("addr"))
        .expect("offer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_flood_from_one_address_is_refused_without_shard_work() {
    const CONNECTIONS: usize = 64;
    const FLOOD: Duration = Duration::from_secs(3);
    let mut config = test_config(2);
    // The default limits: 120 a minute after a burst of 30.
    let (per_minute, burst) = (
        config.limits.posts_per_minute_per_ip,
        config.limits.post_burst_per_ip,
    );
    // Sessions the flood got stay registered for the count below.
    config.timeouts.connect_secs = 120.0;
    let gw = start(config).await;
    let codec = Some(VideoCodec::Vp8);
    let feed = LiveFeed::start(&whip(&gw, "live"), codec, false, 0).await;

    let offers = Arc::new((offer(Role::Publish), offer(Role::Play)));
    let started = Instant::now();
    let until = started + FLOOD;
    let from: SocketAddr = "127.0.0.2:0".parse().expect("addr");
    let floods: Vec<_> = (0..CONNECTIONS)
        .map(|k| tokio::spawn(flood(gw.http_addr(), from, offers.clone(), until, k)))
        .collect();

    // A well-behaved viewer from 127.0.0.1 joins in the middle of it and watches.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut viewer = Peer::play(&whep(&gw, "live"), opts(codec, false))
        .await
        .expect("the other address's viewer gets its 201");
    viewer
        .next_frame(Duration::from_secs(10))
        .await
        .expect("and its frames, during the flood");

    let mut total = Tally::default();
    for f in floods {
        let t = f.await.expect("flood task");
        total.created += t.created;
        total.created_whep += t.created_whep;
        total.refused += t.refused;
        total.bad_refusals += t.bad_refusals;
        total.other.extend(t.other);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let sent = total.created + total.refused + total.other.len() as u64;
    println!(
        "flood: {sent} POSTs in {elapsed:.1} s over {CONNECTIONS} connections ({:.0}/s): \
         {} created, {} refused with 429",
        sent as f64 / elapsed,
        total.created,
        total.refused
    );
    assert!(total.other.is_empty(), "only 201 or 429: {:?}", total.other);
    assert_eq!(
        total.bad_refusals, 0,
        "every 429 is problem+json with Retry-After"
    );
    // The token bucket: the burst, then the rate, for as long as the flood lasted.
    let allowed = f64::from(burst) + f64::from(per_minute) / 60.0 * elapsed;
    assert!(
        total.created as f64 <= allowed.ceil() + 1.0,
        "{} sessions got through, the limit allows {allowed:.1}",
        total.created
    );
    assert!(total.refused > total.created, "the flood was refused");

    // The viewer kept watching.
    viewer
        .next_frame(Duration::from_secs(5))
        .await
        .expect("frames after the flood");

    // Only the admitted POSTs reached the hub and the shards: the publisher, the viewer and at
    // most what the flood got through, and not one session for a refused request.
    let sessions = gw.session_count() as u64;
    assert!(
        (2..=2 + total.created).contains(&sessions),
        "{sessions} sessions for 2 + {} admitted",
        total.created
    );
    let r = request(
        "GET",
        &format!("http://{}/api/streams/live", gw.http_addr()),
        &[],
        Vec::new(),
    )
    .await
    .expect("stream");
    let doc: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    let on_shards = doc["viewers"].as_array().map_or(0, Vec::len) as u64;
    assert!(
        (1..=1 + total.created_whep).contains(&on_shards),
        "the shards hold the viewer and at most the flood's {} admitted viewers: {on_shards}",
        total.created_whep
    );
    assert_eq!(viewer.delete().await.expect("delete"), 200);
    feed.stop().await;
    gw.shutdown().await;
}

/// Found by the `http` fuzz target: a path no route serves was an empty 404, and a path
/// segment that is not UTF-8 a plain-text 400. Both are problem+json now, like every refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_and_undecodable_paths_get_problem_json() {
    let gw = start(test_config(1)).await;
    for (method, path, status, kind) in [
        ("POST", "/whip/", 404, "no-such-resource"),
        ("POST", "/whep/a/b/c", 404, "no-such-resource"),
        ("GET", "/nothing-here", 404, "no-such-resource"),
        ("POST", "/whip/%FF", 400, "bad-path"),
        ("PATCH", "/whep/live/%C3%28", 400, "bad-path"),
        ("GET", "/api/streams/%FF", 400, "bad-path"),
    ] {
        let r = request(
            method,
            &format!("http://{}{path}", gw.http_addr()),
            &[("content-type", "application/sdp")],
            b"v=0\r\n".to_vec(),
        )
        .await
        .expect("request");
        assert_eq!(r.status, status, "{method} {path}");
        assert_eq!(
            r.header("content-type"),
            Some("application/problem+json"),
            "{method} {path}"
        );
        assert!(r.text().contains(kind), "{method} {path}: {}", r.text());
    }
    gw.shutdown().await;
}
