//! The same signalling API over HTTPS (HTTP/1.1, HTTP/2) and HTTP/3: a full WHIP publish and
//! WHEP playback with media over HTTP/3, identical bodies over every version, Alt-Svc, and an
//! independent client (aioquic).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rustls::pki_types::CertificateDer;
use wishcast::client::h3::H3Client;
use wishcast::client::http::{request, request_tls, request_tls_alpn, Response};
use wishcast::client::{ClientOptions, Peer, PeerOptions, VideoCodec};
use wishcast::peer::media;
use wishcast::{Config, Gateway};

fn tls_config() -> Config {
    let mut c = test_config(2);
    c.tls.self_signed = true;
    c
}

fn roots(gw: &Gateway) -> Vec<CertificateDer<'static>> {
    gw.tls_identity().expect("TLS on").certs.clone()
}

fn https(gw: &Gateway, path: &str) -> String {
    format!("https://localhost:{}{path}", gw.http_addr().port())
}

/// The body and the headers a client acts on, to compare across HTTP versions.
fn essence(r: &Response) -> (u16, Option<String>, String) {
    (
        r.status,
        r.header("content-type").map(str::to_string),
        r.text(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_and_whep_over_http3_with_media_patch_and_delete() {
    let gw = start(tls_config()).await;
    let h3 = Arc::new(H3Client::new(&roots(&gw)).expect("h3 client"));
    let over_h3 = |video| ClientOptions {
        h3: Some(h3.clone()),
        ..ClientOptions::from(PeerOptions {
            video,
            ..PeerOptions::default()
        })
    };
    let codec = VideoCodec::H264;
    let publisher = Peer::publish(&https(&gw, "/whip/h3"), over_h3(Some(codec)))
        .await
        .expect("WHIP over HTTP/3 is 201");
    assert!(
        publisher.location().contains("/whip/h3/"),
        "{}",
        publisher.location()
    );
    assert!(publisher.etag().is_some_and(|e| e.starts_with('"')));
    publisher
        .wait_connected(Duration::from_secs(10))
        .await
        .expect("publisher connects");
    let mut viewer = Peer::play(&https(&gw, "/whep/h3"), over_h3(Some(codec)))
        .await
        .expect("WHEP over HTTP/3 is 201");
    viewer
        .wait_connected(Duration::from_secs(10))
        .await
        .expect("viewer connects");

    // Media flows: keyframe then the next frames, byte for byte; then an ICE restart (PATCH)
    // over HTTP/3, after which media keeps flowing on the new ICE session over real UDP.
    let mut sent = 0;
    let got = ten_frames(&publisher, &mut viewer, codec, &mut sent).await;
    assert!(
        got.len() >= 10,
        "frames arrive over the HTTP/3-signalled session: {got:?}"
    );
    let before = viewer.etag().map(str::to_string);
    viewer.restart_ice().await.expect("ICE restart over HTTP/3");
    assert_ne!(viewer.etag().map(str::to_string), before);
    let after = ten_frames(&publisher, &mut viewer, codec, &mut sent).await;
    assert!(
        after.len() >= 10 && after[0] > got[got.len() - 1],
        "new frames arrive after the ICE restart: {after:?}"
    );
    assert_eq!(viewer.delete().await.expect("DELETE"), 200);
    assert_eq!(publisher.delete().await.expect("DELETE"), 200);
    assert_eq!(gw.session_count(), 0);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_the_same_over_http1_http2_and_http3() {
    let gw = start(tls_config()).await;
    let roots = roots(&gw);
    let h3 = H3Client::new(&roots).expect("h3 client");
    let url = https(&gw, "/api/streams");

    let h1 = request_tls_alpn(&roots, &[b"http/1.1"], "GET", &url, &[], Vec::new())
        .await
        .expect("https/1.1");
    let h2 = request_tls(&roots, "GET", &url, &[], Vec::new())
        .await
        .expect("https/2");
    let h3r = h3
        .request("GET", &url, &[], Vec::new())
        .await
        .expect("http/3");
    assert_eq!(h1.version, hyper::Version::HTTP_11);
    assert_eq!(h2.version, hyper::Version::HTTP_2);
    assert_eq!(h3r.version, hyper::Version::HTTP_3);
    assert_eq!(essence(&h3r), essence(&h1));
    assert_eq!(essence(&h3r), essence(&h2));
    assert_eq!(h3r.status, 200);

    // An error: 415 with the same problem+json body everywhere.
    let bad = https(&gw, "/whip/x");
    let ct = [("content-type", "text/plain")];
    let e1 = request_tls_alpn(&roots, &[b"http/1.1"], "POST", &bad, &ct, b"hi".to_vec())
        .await
        .expect("1.1");
    let e3 = h3
        .request("POST", &bad, &ct, b"hi".to_vec())
        .await
        .expect("h3");
    assert_eq!(e1.status, 415);
    assert_eq!(essence(&e3), essence(&e1));
    assert_eq!(e3.header("accept-post"), Some("application/sdp"));
    h3.close().await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alt_svc_is_on_https_responses_and_not_on_plain_http() {
    let gw = start(tls_config()).await;
    let roots = roots(&gw);
    let port = gw.http_addr().port();
    let want = format!("h3=\":{port}\"; ma=86400");
    for (url, method) in [
        (https(&gw, "/api/streams"), "GET"),
        (https(&gw, "/whep/none"), "POST"),
    ] {
        let r = request_tls(
            &roots,
            method,
            &url,
            &[("content-type", "application/sdp")],
            b"v=0\r\n".to_vec(),
        )
        .await
        .expect("https");
        assert_eq!(
            r.header("alt-svc"),
            Some(want.as_str()),
            "{method} {url} -> {}",
            r.status
        );
    }
    gw.shutdown().await;

    let plain = start(test_config(1)).await;
    let r = request(
        "GET",
        &format!("http://{}/api/streams", plain.http_addr()),
        &[],
        Vec::new(),
    )
    .await
    .expect("http");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("alt-svc"),
        None,
        "no HTTP/3 without TLS, so no Alt-Svc"
    );
    plain.shutdown().await;
}

/// aioquic's Python, in a venv of its own under cargo's per-target temp dir (made on first use;
/// `WISHCAST_AIOQUIC_PYTHON` names another).
fn aioquic_python() -> PathBuf {
    if let Ok(p) = std::env::var("WISHCAST_AIOQUIC_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("aioquic-venv");
    let python = venv.join("bin").join("python");
    let ready = python.exists()
        && Command::new(&python)
            .args(["-c", "import aioquic"])
            .status()
            .is_ok_and(|s| s.success());
    if !ready {
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "python3 -m venv works (Debian: apt-get install python3-venv)"
        );
        let ok = Command::new(venv.join("bin").join("pip"))
            .args(["install", "--quiet", "aioquic==1.7.2"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "pip install aioquic==1.7.2");
    }
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aioquic_gets_the_stream_list_and_publishes_over_http3() {
    let python = tokio::task::spawn_blocking(aioquic_python)
        .await
        .expect("venv");
    let gw = start(tls_config()).await;
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("aioquic-{}", gw.http_addr().port()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, gw.tls_identity().expect("tls").cert_pem()).expect("write ca");
    let offer = dir.join("offer.sdp");
    std::fs::write(&offer, offer_sdp()).expect("write offer");

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/h3_aioquic.py");
    let port = gw.http_addr().port().to_string();
    let mut cmd = Command::new(&python);
    cmd.arg(&script)
        .arg("--ca")
        .arg(&ca)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--stream",
            "aq",
            "--offer",
        ])
        .arg(&offer);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run aioquic client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "aioquic client: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let responses: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(responses.len(), 3);
    let (list, post, bad) = (&responses[0], &responses[1], &responses[2]);
    assert_eq!(list["status"], 200);
    assert_eq!(list["headers"]["content-type"][0], "application/json");
    assert_eq!(post["status"], 201, "{post}");
    assert_eq!(post["headers"]["content-type"][0], "application/sdp");
    assert!(post["headers"]["location"][0]
        .as_str()
        .is_some_and(|l| l.starts_with("/whip/aq/")));
    assert!(post["headers"]["etag"][0]
        .as_str()
        .is_some_and(|e| e.starts_with('"')));
    assert!(post["body"]
        .as_str()
        .is_some_and(|b| b.contains("a=recvonly")));
    assert_eq!(bad["status"], 415);
    assert_eq!(
        bad["headers"]["content-type"][0],
        "application/problem+json"
    );
    assert_eq!(gw.session_count(), 1, "the POST made a session");
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A real sendonly H264 + Opus offer from str0m with a loopback host candidate.
fn offer_sdp() -> String {
    use str0m::media::{Direction, MediaKind};
    let mut rtc = str0m::Rtc::builder().build(Instant::now());
    let addr = "127.0.0.1:5000".parse().expect("addr");
    rtc.add_local_candidate(str0m::Candidate::host(addr, "udp").expect("candidate"));
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let (offer, _) = api.apply().expect("offer");
    offer.to_sdp_string()
}

/// Sends frames from `*sent` on, one per 33 ms, until `viewer` got ten video frames (each checked
/// byte for byte) or 10 s passed; returns their indices.
async fn ten_frames(
    publisher: &Peer,
    viewer: &mut Peer,
    codec: VideoCodec,
    sent: &mut u64,
) -> Vec<u64> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < 10 && Instant::now() < deadline {
        let i = *sent;
        publisher
            .send_frame(
                str0m::media::MediaKind::Video,
                i * 3000,
                expected_video(codec, i, i == 0),
            )
            .expect("send");
        *sent += 1;
        tokio::time::sleep(Duration::from_millis(33)).await;
        while let Some(f) = viewer.try_next_frame() {
            if f.kind == str0m::media::MediaKind::Video {
                let n = media::frame_index(f.codec, &f.data).expect("index");
                assert_eq!(
                    f.data[..],
                    expected_video(codec, n, n == 0)[..],
                    "frame {n} intact"
                );
                got.push(n);
            }
        }
    }
    got
}
