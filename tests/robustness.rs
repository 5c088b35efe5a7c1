//! Bad input on the media ports: dropped and counted, never a panic or a lost stream.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::*;
use str0m::media::MediaKind;
use wishcast::client::{Peer, VideoCodec};
use wishcast::peer::media;

/// Datagrams of every shape a scanner or a broken peer might send: empty, random, truncated
/// STUN with the magic cookie, STUN naming an unknown ufrag, DTLS and RTP/RTCP look-alikes.
fn garbage(i: usize) -> Vec<u8> {
    let mut rnd: Vec<u8> = (0..(i * 37) % 1400)
        .map(|k| ((k as u32).wrapping_mul(2654435761) >> 13) as u8 ^ i as u8)
        .collect();
    match i % 6 {
        0 => Vec::new(),
        1 => rnd,
        2 => {
            let mut m = vec![0x00, 0x01, 0x00, 0x40, 0x21, 0x12, 0xa4, 0x42];
            m.extend_from_slice(&[7; 12]);
            m.extend_from_slice(&[0x00, 0x06, 0x03, 0xff]); // USERNAME longer than the packet
            m
        }
        3 => {
            let user = b"nosuchufrag:peer";
            let mut m = vec![0x00, 0x01, 0x00, 0x14, 0x21, 0x12, 0xa4, 0x42];
            m.extend_from_slice(&[9; 12]);
            m.extend_from_slice(&[0x00, 0x06, 0x00, user.len() as u8]);
            m.extend_from_slice(user);
            m
        }
        4 => {
            rnd.insert(0, 0x16);
            rnd.truncate(60);
            rnd
        }
        _ => {
            rnd.splice(0..0, [0x80, 0xc8, 0x00, 0x06]);
            rnd
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_datagrams_are_dropped_and_counted_while_the_stream_plays_on() {
    let gw = start(test_config(2)).await;
    let feed = LiveFeed::start(&whip(&gw, "g"), Some(VideoCodec::Vp8), false, 0).await;
    let mut viewer = Peer::play(&whep(&gw, "g"), opts(Some(VideoCodec::Vp8), false))
        .await
        .expect("play");
    let first = viewer
        .next_frame(Duration::from_secs(5))
        .await
        .expect("first frame");
    let mut last = media::frame_index(first.codec, &first.data).expect("index");
    let before = gw.stats().datagrams_dropped();

    let attacker = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let targets: Vec<_> = gw.media_addrs().to_vec();
    let sent = 600;
    for i in 0..sent {
        for t in &targets {
            attacker.send_to(&garbage(i), t).expect("send");
        }
    }

    // The stream goes on, in order, intact, for another second.
    for _ in 0..30 {
        let f = viewer
            .next_frame(Duration::from_secs(5))
            .await
            .expect("frames keep coming");
        assert_eq!(f.kind, MediaKind::Video);
        let i = media::frame_index(f.codec, &f.data).expect("index");
        let key = media::is_keyframe(f.codec, &f.data);
        assert_eq!(
            f.data[..],
            expected_video(VideoCodec::Vp8, i, key)[..],
            "frame {i} intact"
        );
        assert_eq!(i, last + 1, "no frame lost");
        last = i;
    }
    let dropped = gw.stats().datagrams_dropped() - before;
    assert!(
        dropped >= (sent * targets.len()) as u64 * 5 / 6,
        "every non-empty garbage datagram is counted as dropped: {dropped}"
    );
    assert_eq!(gw.session_count(), 2);
    feed.stop().await;
    gw.shutdown().await;
}
