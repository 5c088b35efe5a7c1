//! WHIP POST latency over HTTP/3 against HTTPS/1.1 on loopback: the median of 100 requests on a
//! warm connection each, and of 100 on a new connection each.
//!
//! `cargo bench --bench signalling`. Each POST creates a real session (an `Rtc` answering the
//! offer), which is deleted outside the timed part.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use wishcast::client::h3::H3Client;
use wishcast::client::http::request_tls_alpn;
use wishcast::{Config, Gateway};

const N: usize = 100;

fn offer() -> String {
    use str0m::media::{Direction, MediaKind};
    let mut rtc = str0m::Rtc::builder().build(Instant::now());
    let addr = "127.0.0.1:5000".parse().expect("addr");
    rtc.add_local_candidate(str0m::Candidate::host(addr, "udp").expect("candidate"));
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    api.apply().expect("offer").0.to_sdp_string()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// An HTTP/1.1 connection over TLS that stays open for many requests.
async fn https1_connection(
    roots: &[CertificateDer<'static>],
    port: u16,
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let mut store = rustls::RootCertStore::empty();
    for c in roots {
        store.add(c.clone()).expect("root");
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(wishcast::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(store)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("tls");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("http1");
    tokio::spawn(conn);
    sender
}

async fn send1(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    method: &str,
    port: u16,
    path: &str,
    body: &str,
) -> u16 {
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", format!("localhost:{port}"))
        .header("content-type", "application/sdp")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    let res = sender.send_request(req).await.expect("response");
    let status = res.status().as_u16();
    let _ = res.into_body().collect().await;
    status
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut config = Config::default();
    config.http.listen = "127.0.0.1:0".parse().expect("addr");
    config.media.bind_ip = "127.0.0.1".parse().expect("ip");
    config.media.udp_base_port = 0;
    config.media.shards = 1;
    config.tls.self_signed = true;
    // 400 POSTs from one address: the per-IP rate limit would refuse most of them.
    config.limits.posts_per_minute_per_ip = 0;
    let gw = Gateway::start(config).await.expect("gateway");
    let port = gw.http_addr().port();
    let roots = gw.tls_identity().expect("tls").certs.clone();
    let sdp = offer();
    let base = format!("https://localhost:{port}");
    let ct = [("content-type", "application/sdp")];

    // Warm: one connection each, requests one after another.
    let h3 = H3Client::new(&roots).expect("h3");
    let mut h1 = https1_connection(&roots, port).await;
    let (mut warm_h3, mut warm_h1) = (Vec::new(), Vec::new());
    for i in 0..N + 5 {
        let t = Instant::now();
        let r = h3
            .request(
                "POST",
                &format!("{base}/whip/h3w{i}"),
                &ct,
                sdp.clone().into_bytes(),
            )
            .await
            .expect("h3 post");
        let d3 = t.elapsed();
        assert_eq!(r.status, 201);
        let loc = r.header("location").expect("location").to_string();
        h3.request("DELETE", &format!("{base}{loc}"), &[], Vec::new())
            .await
            .expect("delete");

        let t = Instant::now();
        let status = send1(&mut h1, "POST", port, &format!("/whip/h1w{i}"), &sdp).await;
        let d1 = t.elapsed();
        assert_eq!(status, 201);
        if i >= 5 {
            warm_h3.push(d3);
            warm_h1.push(d1);
        }
    }
    // Cold: a new connection (QUIC or TCP+TLS handshake) per request.
    let (mut cold_h3, mut cold_h1) = (Vec::new(), Vec::new());
    for i in 0..N {
        let t = Instant::now();
        let c = H3Client::new(&roots).expect("h3");
        let r = c
            .request(
                "POST",
                &format!("{base}/whip/h3c{i}"),
                &ct,
                sdp.clone().into_bytes(),
            )
            .await
            .expect("h3 post");
        cold_h3.push(t.elapsed());
        assert_eq!(r.status, 201);
        c.close().await;
        let t = Instant::now();
        let r = request_tls_alpn(
            &roots,
            &[b"http/1.1"],
            "POST",
            &format!("{base}/whip/h1c{i}"),
            &ct,
            sdp.clone().into_bytes(),
        )
        .await
        .expect("https post");
        cold_h1.push(t.elapsed());
        assert_eq!(r.status, 201);
    }
    let (w3, w1, c3, c1) = (
        median(warm_h3),
        median(warm_h1),
        median(cold_h3),
        median(cold_h1),
    );
    println!("WHIP POST on loopback, median of {N} (each creates a session)");
    println!("| connection | HTTP/3 | HTTPS/1.1 | HTTP/3 ÷ HTTPS/1.1 |");
    println!("|---|---:|---:|---:|");
    println!(
        "| warm (reused) | {:.2} ms | {:.2} ms | {:.2} |",
        ms(w3),
        ms(w1),
        ms(w3) / ms(w1)
    );
    println!(
        "| cold (new per request) | {:.2} ms | {:.2} ms | {:.2} |",
        ms(c3),
        ms(c1),
        ms(c3) / ms(c1)
    );
    gw.shutdown().await;
}
