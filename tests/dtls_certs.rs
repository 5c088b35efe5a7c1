//! Peers with RSA and with ECDSA DTLS certificates publish and play through the gateway over
//! real UDP, ICE, DTLS and SRTP. GStreamer 1.22's webrtcbin signs with RSA-2048; browsers and
//! str0m with ECDSA P-256. RFC 8827 §6.5 asks for both.
//!
//! With the usual `actpass` offer the gateway is the DTLS client: an RSA peer is the server and
//! signs its ServerKeyExchange with RSA. With an `active` offer the peer is the client and
//! signs its CertificateVerify. Both ways, media must arrive byte for byte.

mod common;

use std::time::Duration;

use common::*;
use str0m::config::DtlsCert;
use str0m::media::MediaKind;
use wishcast::client::{ClientOptions, Peer, PeerOptions, VideoCodec};
use wishcast::dtls::{ecdsa_certificate, rsa_certificate};
use wishcast::peer::{media, Feed};

const CODEC: VideoCodec = VideoCodec::H264;

fn with_cert(cert: &DtlsCert, active: bool) -> ClientOptions {
    ClientOptions {
        dtls_cert: Some(cert.clone()),
        ..ClientOptions::from(PeerOptions {
            dtls_active: active,
            ..opts(Some(CODEC), true)
        })
    }
}

/// The offer's fingerprint is that of `cert`: the peer uses it.
fn offers_certificate(peer: &Peer, cert: &DtlsCert) {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &cert.certificate);
    let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    let line = format!("a=fingerprint:sha-256 {}", hex.join(":"));
    assert!(
        peer.offer_sdp().lines().any(|l| l.trim_end() == line),
        "the offer carries {line}:\n{}",
        peer.offer_sdp()
    );
}

async fn publishing(url: &str, cert: &DtlsCert, active: bool) -> LiveFeed {
    let publisher = Peer::publish(url, with_cert(cert, active))
        .await
        .expect("publish accepted");
    offers_certificate(&publisher, cert);
    publisher
        .wait_connected(Duration::from_secs(10))
        .await
        .expect("publisher connects");
    let feed = Feed::new(Some(CODEC), true)
        .with_fps(FPS as u32)
        .with_gop(GOP)
        .with_sizes(VIDEO_BYTES, VIDEO_BYTES);
    LiveFeed::run(publisher, feed)
}

/// 30 consecutive video frames from a keyframe on and Opus frames, all byte for byte.
async fn plays(url: &str, cert: &DtlsCert, active: bool) {
    let mut v = Peer::play(url, with_cert(cert, active))
        .await
        .expect("play accepted");
    offers_certificate(&v, cert);
    let (mut last, key, _) = next_checked_video(&mut v, CODEC).await;
    assert!(key, "video starts on a keyframe");
    let mut audio = 0;
    while last < 30 || audio < 10 {
        let f = v
            .next_frame(Duration::from_secs(5))
            .await
            .expect("a frame within 5 s");
        let i = media::frame_index(f.codec, &f.data).expect("frame index");
        if f.kind == MediaKind::Audio {
            assert_eq!(
                f.data[..],
                media::opus_frame(i)[..],
                "opus frame {i} intact"
            );
            audio += 1;
            continue;
        }
        let key = media::is_keyframe(f.codec, &f.data);
        assert_eq!(
            f.data[..],
            expected_video(CODEC, i, key)[..],
            "frame {i} intact"
        );
        assert_eq!(i, last + 1, "video in order without gaps");
        last = i;
    }
    assert_eq!(v.delete().await.expect("DELETE"), 200);
}

/// An RSA publisher to an RSA and an ECDSA viewer, and an ECDSA publisher to an RSA viewer.
async fn every_pairing(active: bool) {
    let gw = start(test_config(2)).await;
    let (rsa, ecdsa) = (rsa_certificate(), ecdsa_certificate());
    let feed = publishing(&whip(&gw, "rsa"), &rsa, active).await;
    plays(&whep(&gw, "rsa"), &rsa, active).await;
    plays(&whep(&gw, "rsa"), &ecdsa, active).await;
    feed.stop().await;
    let feed = publishing(&whip(&gw, "ecdsa"), &ecdsa, active).await;
    plays(&whep(&gw, "ecdsa"), &rsa, active).await;
    feed.stop().await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_and_ecdsa_peers_publish_and_play_with_the_gateway_as_dtls_client() {
    every_pairing(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_and_ecdsa_peers_publish_and_play_with_the_gateway_as_dtls_server() {
    every_pairing(true).await;
}
