//! End to end over real UDP on loopback with real ICE, DTLS and SRTP: a str0m publisher sends
//! generated frames through the gateway to str0m viewers.

mod common;

use std::time::Duration;

use common::*;
use str0m::media::MediaKind;
use wishcast::client::{Peer, VideoCodec};
use wishcast::peer::media;

/// Every viewer receives the same frames as sent, byte for byte, in order, audio too.
async fn fan_out_intact(codec: VideoCodec, viewer_count: usize) {
    fan_out_intact_with(test_config(2), codec, viewer_count).await;
}

async fn fan_out_intact_with(config: wishcast::Config, codec: VideoCodec, viewer_count: usize) {
    let gw = start(config).await;
    let feed = LiveFeed::start(&whip(&gw, "s"), Some(codec), true, 0).await;
    let mut viewers = Vec::new();
    for _ in 0..viewer_count {
        let v = Peer::play(&whep(&gw, "s"), opts(Some(codec), true))
            .await
            .expect("play accepted");
        viewers.push(v);
    }
    for v in &viewers {
        v.wait_connected(Duration::from_secs(10))
            .await
            .expect("viewer connects");
    }
    let wanted_video = 45; // 1.5 s: crosses a keyframe
    let wanted_audio = 40;
    let receivers = viewers.into_iter().map(|mut v| {
        tokio::spawn(async move {
            let mut video: Vec<u64> = Vec::new();
            let mut audio: Vec<u64> = Vec::new();
            while video.len() < wanted_video || audio.len() < wanted_audio {
                let f = v
                    .next_frame(Duration::from_secs(5))
                    .await
                    .expect("frames keep coming");
                match f.kind {
                    MediaKind::Video => {
                        let i = media::frame_index(f.codec, &f.data).expect("frame index");
                        let key = media::is_keyframe(f.codec, &f.data);
                        assert_eq!(
                            f.data[..],
                            expected_video(codec, i, key)[..],
                            "video frame {i} intact"
                        );
                        if video.is_empty() {
                            assert!(
                                media::is_keyframe(f.codec, &f.data),
                                "first frame is a keyframe"
                            );
                        }
                        video.push(i);
                    }
                    MediaKind::Audio => {
                        let i = media::frame_index(f.codec, &f.data).expect("opus index");
                        assert_eq!(
                            f.data[..],
                            media::opus_frame(i)[..],
                            "opus frame {i} intact"
                        );
                        audio.push(i);
                    }
                }
            }
            for w in video.windows(2) {
                assert_eq!(w[1], w[0] + 1, "video in order without gaps: {video:?}");
            }
            for w in audio.windows(2) {
                assert_eq!(w[1], w[0] + 1, "audio in order without gaps");
            }
            v
        })
    });
    let mut done = Vec::new();
    for r in receivers {
        done.push(r.await.expect("viewer checks pass"));
    }
    assert_eq!(gw.session_count(), viewer_count + 1);
    drop(done);
    feed.stop().await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_and_opus_reach_20_viewers_on_2_shards_intact() {
    fan_out_intact(VideoCodec::H264, 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vp8_and_opus_reach_20_viewers_on_2_shards_intact() {
    fan_out_intact(VideoCodec::Vp8, 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vp9_and_opus_pass_through_intact() {
    fan_out_intact(VideoCodec::Vp9, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn av1_and_opus_pass_through_intact() {
    fan_out_intact(VideoCodec::Av1, 4).await;
}

/// RFC 9725 §4.4.5 allows ICE-lite where clients reach the gateway directly: the gateway
/// answers checks but sends none, and media flows the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_lite_gateway_serves_full_ice_clients() {
    let mut config = test_config(2);
    config.media.ice_lite = true;
    fan_out_intact_with(config, VideoCodec::Vp8, 3).await;
}

/// Behind a 1:1 NAT or in Docker the socket binds a wildcard and the announced candidate is
/// the configured public address; datagrams arriving for it must reach their sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_bind_announces_the_configured_public_address() {
    let mut config = test_config(2);
    config.media.bind_ip = "0.0.0.0".parse().expect("ip");
    config.media.public_ips = vec!["127.0.0.1".parse().expect("ip")];
    let gw = start(config.clone()).await;
    assert!(
        gw.media_addrs().iter().all(|a| a.ip().is_loopback()),
        "only the public address is announced: {:?}",
        gw.media_addrs()
    );
    gw.shutdown().await;
    fan_out_intact_with(config, VideoCodec::H264, 3).await;
}

/// The publisher's abs-capture-time reaches a viewer that negotiated it unchanged, and the
/// configured playout delay comes with it, through the gateway's own egress and through
/// str0m's; a viewer that negotiated neither gets neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abs_capture_time_arrives_as_the_publisher_stamped_it() {
    for direct in [true, false] {
        let mut config = test_config(1);
        config.media.direct_egress = direct;
        config.media.playout_delay_max_ms = Some(100);
        let gw = start(config).await;
        let codec = VideoCodec::H264;
        let stamped = wishcast::client::PeerOptions {
            abs_capture_time: true,
            ..opts(Some(codec), true)
        };
        let publisher = connected_publisher(&whip(&gw, "s"), stamped.clone()).await;
        let feed = LiveFeed::run(
            publisher,
            wishcast::peer::Feed::new(Some(codec), true)
                .with_fps(FPS as u32)
                .with_gop(GOP)
                .with_sizes(VIDEO_BYTES, VIDEO_BYTES),
        );
        let extended = wishcast::client::PeerOptions {
            playout_delay: true,
            ..stamped.clone()
        };
        let mut with = Peer::play(&whep(&gw, "s"), extended)
            .await
            .expect("play accepted");
        let mut without = Peer::play(&whep(&gw, "s"), opts(Some(codec), true))
            .await
            .expect("play accepted");
        for _ in 0..30 {
            let (i, _, f) = next_checked_video(&mut with, codec).await;
            let sent = wishcast::peer::capture_time(i * 90_000 / FPS);
            let got = f
                .capture_time
                .unwrap_or_else(|| panic!("direct {direct}: frame {i} carries a capture time"));
            let apart = got.duration_since(sent).unwrap_or_else(|e| e.duration());
            assert!(
                apart < Duration::from_micros(1),
                "direct {direct}: frame {i}: {got:?} against {sent:?}"
            );
            assert_eq!(
                f.playout_delay,
                Some((0, 100)),
                "direct {direct}: playout delay"
            );
            let (_, _, g) = next_checked_video(&mut without, codec).await;
            assert_eq!(g.capture_time, None, "not negotiated, not sent");
            assert_eq!(g.playout_delay, None, "not negotiated, not sent");
        }
        drop((with, without));
        feed.stop().await;
        gw.shutdown().await;
    }
}
