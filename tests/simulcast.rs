//! Simulcast (RFC 8853) over real UDP, ICE, DTLS and SRTP: a publisher sends its video as
//! several layers, every offered layer is kept in the answer, and each viewer gets one layer
//! as one continuous stream.

mod common;

use std::time::{Duration, Instant};

use common::*;
use str0m::media::{Direction, MediaKind};
use str0m::Rtc;
use wishcast::client::http::request;
use wishcast::client::{Peer, PeerOptions, VideoCodec};
use wishcast::peer::Feed;
use wishcast::vp8::Descriptor;

/// Layers as OBS names them: "0" is the full-size one.
const LAYERS: [(&str, usize); 3] = [("0", 1), ("1", 4), ("2", 16)];

/// A simulcast offer shaped as OBS sends it: rids "0", "1" and "2", only the first layer
/// with an `a=ssrc` line, no RTX, the mid and rid header extensions as 1 and 2. Built from a
/// real str0m offer (real ICE credentials and fingerprint), its video section rewritten.
fn obs_shaped_offer() -> String {
    let rtc = Rtc::builder()
        .clear_codecs()
        .enable_h264(true)
        .enable_opus(true, false)
        .build(Instant::now());
    let sdp = str0m_offer(
        rtc,
        Direction::SendOnly,
        &[MediaKind::Audio, MediaKind::Video],
    );
    let mut out = String::new();
    let mut in_video = false;
    let mut rtx_pts: Vec<String> = Vec::new();
    let mut first_ssrc: Option<String> = None;
    for line in sdp.lines() {
        if line.starts_with("m=") {
            if in_video {
                out.push_str(&simulcast_lines());
            }
            in_video = line.starts_with("m=video");
        }
        if !in_video {
            out.push_str(line);
            out.push_str("\r\n");
            continue;
        }
        if let Some(rest) = line.strip_prefix("a=fmtp:") {
            if rest.contains("apt=") {
                rtx_pts.push(rest.split(' ').next().unwrap_or_default().to_string());
                continue;
            }
        }
        let of_rtx = rtx_pts.iter().any(|pt| {
            line.starts_with(&format!("a=rtpmap:{pt} "))
                || line.starts_with(&format!("a=rtcp-fb:{pt} "))
        });
        if of_rtx || line.starts_with("a=extmap:") || line.starts_with("a=ssrc-group") {
            continue;
        }
        if line.starts_with("a=ssrc:") {
            let ssrc = ssrc_of(line).to_string();
            if *first_ssrc.get_or_insert_with(|| ssrc.clone()) != ssrc {
                continue;
            }
        }
        if line.starts_with("a=mid:") {
            out.push_str(line);
            out.push_str("\r\na=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\n");
            out.push_str("a=extmap:2 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n");
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    if in_video {
        out.push_str(&simulcast_lines());
    }
    // The m-line's payload types without the RTX ones.
    out.lines()
        .map(|l| {
            if l.starts_with("m=video") {
                l.split(' ')
                    .filter(|t| !rtx_pts.iter().any(|pt| pt == t))
                    .collect::<Vec<_>>()
                    .join(" ")
            } else {
                l.to_string()
            }
        })
        .map(|l| l + "\r\n")
        .collect()
}

fn ssrc_of(line: &str) -> &str {
    line.trim_start_matches("a=ssrc:")
        .split(' ')
        .next()
        .unwrap_or_default()
}

fn simulcast_lines() -> String {
    "a=rid:0 send\r\na=rid:1 send\r\na=rid:2 send\r\na=simulcast:send 0;1;2\r\n".into()
}

/// The lines of an SDP's video section.
fn video_lines(sdp: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut inside = false;
    for l in sdp.lines() {
        if l.starts_with("m=") {
            inside = l.starts_with("m=video");
        }
        if inside {
            lines.push(l.trim_end());
        }
    }
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_obs_shaped_offer_gets_every_layer_in_one_list() {
    let gw = start(test_config(1)).await;
    let offer = obs_shaped_offer();
    assert!(offer.contains("a=simulcast:send 0;1;2"), "{offer}");
    let ssrcs: std::collections::HashSet<&str> = video_lines(&offer)
        .iter()
        .filter(|l| l.starts_with("a=ssrc:"))
        .map(|l| ssrc_of(l))
        .collect();
    assert_eq!(ssrcs.len(), 1, "one video SSRC declared: {offer}");
    let r = request(
        "POST",
        &whip(&gw, "obs"),
        &[("content-type", "application/sdp")],
        offer.into_bytes(),
    )
    .await
    .expect("HTTP response");
    assert_eq!(r.status, 201, "{}", r.text());
    let answer = r.text();
    let video = video_lines(&answer);
    // OBS aborts unless the answer keeps as many layers as it offered (RFC 8853 §5.3.2).
    assert!(
        video.contains(&"a=simulcast:recv 0;1;2"),
        "every layer, in one list: {video:?}"
    );
    for rid in ["0", "1", "2"] {
        assert!(
            video.contains(&format!("a=rid:{rid} recv").as_str()),
            "rid {rid} received: {video:?}"
        );
    }
    gw.shutdown().await;
}

/// A publisher sending `LAYERS` of `codec` on the real clock.
async fn simulcast_publisher(gw: &wishcast::Gateway, stream: &str, codec: VideoCodec) -> LiveFeed {
    numbered_publisher(gw, stream, codec, false).await
}

/// [`simulcast_publisher`]; with `vp8_picture_ids` each VP8 layer numbers its pictures
/// from its own start, as separate encoders do.
async fn numbered_publisher(
    gw: &wishcast::Gateway,
    stream: &str,
    codec: VideoCodec,
    vp8_picture_ids: bool,
) -> LiveFeed {
    let opts = PeerOptions {
        simulcast: LAYERS.iter().map(|(rid, _)| rid.to_string()).collect(),
        vp8_picture_ids,
        ..opts(Some(codec), true)
    };
    let publisher = connected_publisher(&whip(gw, stream), opts).await;
    LiveFeed::run(publisher, layered_feed(codec))
}

/// A viewer of stream "s" with ICE and DTLS done.
async fn connected_viewer(gw: &wishcast::Gateway, codec: VideoCodec) -> Peer {
    let v = Peer::play(&whep(gw, "s"), opts(Some(codec), true))
        .await
        .expect("play accepted");
    v.wait_connected(Duration::from_secs(10))
        .await
        .expect("viewer connects");
    v
}

fn layered_feed(codec: VideoCodec) -> Feed {
    Feed::new(Some(codec), true)
        .with_fps(FPS as u32)
        .with_gop(GOP)
        .with_sizes(VIDEO_BYTES, VIDEO_BYTES)
        .with_layers(&LAYERS)
}

/// One received video frame: its index, its layer (index into `LAYERS`), whether str0m saw
/// it follow the previous one without a gap, whether it is a keyframe, and for VP8 the
/// payload descriptor its packets carried.
#[derive(Debug, Clone, Copy)]
struct Got {
    index: u64,
    layer: usize,
    contiguous: bool,
    key: bool,
    vp8: Option<Descriptor>,
}

/// The next `n` video frames of `v`, each checked byte for byte against what the publisher
/// sent on its layer, and each with one VP8 descriptor on all its packets (resends too).
async fn layered_frames(v: &mut Peer, codec: VideoCodec, n: usize) -> Vec<Got> {
    let feed = layered_feed(codec);
    let mut out = Vec::new();
    while out.len() < n {
        let f = v
            .next_frame(Duration::from_secs(5))
            .await
            .expect("frames keep coming");
        if f.kind != MediaKind::Video {
            continue;
        }
        let (index, layer) = feed
            .check_layer(&f.data)
            .unwrap_or_else(|e| panic!("a frame as some layer sent it: {e}"));
        let vp8 = f.vp8.first().copied();
        assert!(
            f.vp8.iter().all(|d| Some(*d) == vp8),
            "frame {index}: one descriptor on every packet: {:?}",
            f.vp8
        );
        out.push(Got {
            index,
            layer,
            contiguous: f.contiguous,
            key: wishcast::peer::media::is_keyframe(codec, &f.data),
            vp8,
        });
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_gets_the_largest_layer_as_one_continuous_stream() {
    for codec in [VideoCodec::H264, VideoCodec::Vp8] {
        let gw = start(test_config(2)).await;
        let feed = simulcast_publisher(&gw, "s", codec).await;
        let mut v = connected_viewer(&gw, codec).await;
        let frames = layered_frames(&mut v, codec, 60).await;
        assert!(
            frames.iter().all(|f| f.layer == 0),
            "{codec:?}: only the full-size layer: {frames:?}"
        );
        assert!(frames[0].key, "{codec:?}: starts on a keyframe");
        assert_continuous(&frames);
        drop(v);
        feed.stop().await;
        gw.shutdown().await;
    }
}

/// POSTs a layer selection for viewer `v`; returns the status and body.
async fn select(v: &Peer, body: &str) -> (u16, String) {
    let url = format!("{}/layer", v.location());
    let r = request(
        "POST",
        &url,
        &[("content-type", "application/json")],
        body.into(),
    )
    .await
    .expect("HTTP response");
    (r.status, r.text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_moves_to_the_layer_it_picks_at_a_keyframe_and_back_to_automatic() {
    let codec = VideoCodec::Vp8;
    let gw = start(test_config(2)).await;
    let feed = simulcast_publisher(&gw, "s", codec).await;
    let mut v = connected_viewer(&gw, codec).await;
    let before = layered_frames(&mut v, codec, 10).await;
    assert!(before.iter().all(|f| f.layer == 0), "{before:?}");

    // The smallest layer, by the draft's fields; then back to automatic by Broadcast Box's.
    assert_eq!(select(&v, r#"{"mediaId":"0","rid":"2"}"#).await.0, 200);
    let moved = layered_frames(&mut v, codec, 90).await;
    let at = moved
        .iter()
        .position(|f| f.layer == 2)
        .unwrap_or_else(|| panic!("moved to layer 2: {moved:?}"));
    assert!(moved[at..].iter().all(|f| f.layer == 2), "stays: {moved:?}");
    assert_continuous(&before.into_iter().chain(moved).collect::<Vec<_>>());

    assert_eq!(select(&v, r#"{"mediaId":"0"}"#).await.0, 200);
    let back = layered_frames(&mut v, codec, 90).await;
    assert!(
        back.last().is_some_and(|f| f.layer == 0),
        "automatic choice again: the largest layer: {back:?}"
    );
    assert_continuous(&back);

    // A layer the stream does not have, and a selector the gateway does not serve.
    let (status, body) = select(&v, r#"{"rid":"9"}"#).await;
    assert_eq!(status, 400, "{body}");
    let problem: serde_json::Value = serde_json::from_str(&body).expect("problem+json");
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("\"9\"") && detail.contains("\"2\""),
        "names the rid and the layers there are: {detail}"
    );
    let (status, body) = select(&v, r#"{"rid":"1","maxHeight":360}"#).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("maxHeight"), "{body}");
    drop(v);
    feed.stop().await;
    gw.shutdown().await;
}

/// Frames a viewer's decoder can use throughout: each follows the last without a gap (str0m
/// saw no sequence gap), and a move to another layer starts on that layer's keyframe, with
/// the same frame again or the next.
fn assert_continuous(frames: &[Got]) {
    for w in frames.windows(2) {
        let (a, b) = (w[0], w[1]);
        assert!(b.contiguous, "no gap before frame {}: {frames:?}", b.index);
        if a.layer == b.layer {
            assert_eq!(b.index, a.index + 1, "in order: {frames:?}");
        } else {
            assert!(
                b.index == a.index || b.index == a.index + 1,
                "a move continues the picture: {frames:?}"
            );
            assert!(b.key, "a move starts on a keyframe: {frames:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layers_event_names_each_layer_with_its_rate_and_size_and_the_201_links_the_selection()
{
    let codec = VideoCodec::Vp8;
    let gw = start(test_config(2)).await;
    let feed = simulcast_publisher(&gw, "s", codec).await;
    let v = connected_viewer(&gw, codec).await;
    // The layer extension's Link, which needs the events' `layers` (draft §"Video Layer
    // Selection"): checked on a second viewer's raw 201.
    let offer = str0m_offer(
        Rtc::builder().build(Instant::now()),
        Direction::RecvOnly,
        &[MediaKind::Video],
    );
    let r = request(
        "POST",
        &whep(&gw, "s"),
        &[("content-type", "application/sdp")],
        offer.into_bytes(),
    )
    .await
    .expect("HTTP response");
    assert_eq!(r.status, 201, "{}", r.text());
    let location = r.header("location").expect("Location");
    let links = r.header_all("link");
    let layer_link = format!("<{location}/layer>; rel=\"urn:ietf:params:whep:ext:core:layer\"");
    assert!(links.contains(&layer_link.as_str()), "{links:?}");
    assert!(links
        .iter()
        .any(|l| l.contains("events=\"") && l.contains("layers")));

    let created = request(
        "POST",
        &format!("{}/sse", v.location()),
        &[("content-type", "application/json")],
        b"[\"layers\"]".to_vec(),
    )
    .await
    .expect("HTTP response");
    assert_eq!(created.status, 201, "{}", created.text());
    let url = format!(
        "http://{}{}",
        gw.http_addr(),
        created.header("location").expect("Location")
    );
    let mut events = common::sse::open(&url, None).await;
    assert_eq!(events.status, 200);
    // Rates are measured over a second: wait for an event that has all three.
    let deadline = Instant::now() + Duration::from_secs(10);
    let layers = loop {
        assert!(Instant::now() < deadline, "a layers event with three rates");
        let (name, data) = events
            .next(Duration::from_secs(10))
            .await
            .expect("an event");
        assert_eq!(name, "layers");
        let list = data["0"].as_array().cloned().unwrap_or_default();
        if list.len() == 3 && list.iter().all(|l| l["bitrate"].as_u64().is_some()) {
            break list;
        }
    };
    let rate = |rid: &str| {
        let l = layers
            .iter()
            .find(|l| l["rid"] == rid)
            .unwrap_or_else(|| panic!("layer {rid}: {layers:?}"));
        // The test kit's VP8 frames all say 640x360, whatever their size.
        assert_eq!(
            (l["width"].as_u64(), l["height"].as_u64()),
            (Some(640), Some(360))
        );
        for absent in ["spatialLayerId", "temporalLayerId", "targetBitrate"] {
            assert!(l.get(absent).is_none(), "{absent} not sent: {l}");
        }
        l["bitrate"].as_u64().unwrap_or_default()
    };
    let (r0, r1, r2) = (rate("0"), rate("1"), rate("2"));
    // Frames of 10,000, 2,500 and 625 bytes at 30 per second, keyframes as large.
    assert!(r0 > 3 * r1 && r1 > 3 * r2, "{r0} {r1} {r2}");
    assert!((2_000_000..3_200_000).contains(&r0), "{r0}");
    drop(v);
    feed.stop().await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_cap_keeps_automatic_choice_under_it_but_not_a_pick() {
    let codec = VideoCodec::Vp8;
    let mut config = test_config(1);
    // Layers of 2.4 Mbit/s, 600 and 150 kbit/s: the middle one is the largest under 1 Mbit/s.
    config.media.max_viewer_kbps = 1000;
    let gw = start(config).await;
    let feed = simulcast_publisher(&gw, "s", codec).await;
    // A second of media, so the layers' rates are measured before the viewer joins.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut v = connected_viewer(&gw, codec).await;
    let capped = layered_frames(&mut v, codec, 30).await;
    assert!(capped.iter().all(|f| f.layer == 1), "{capped:?}");
    assert!(capped[0].key, "starts on a keyframe");
    assert_eq!(select(&v, r#"{"rid":"0"}"#).await.0, 200);
    let picked = layered_frames(&mut v, codec, 60).await;
    assert!(
        picked.last().is_some_and(|f| f.layer == 0),
        "a pick is not capped: {picked:?}"
    );
    assert_continuous(&capped.into_iter().chain(picked).collect::<Vec<_>>());
    drop(v);
    feed.stop().await;
    gw.shutdown().await;
}

/// Picks `rid` for viewer `v` (automatic choice for `None`), then takes `n` frames; the
/// viewer must have moved onto that layer.
async fn move_to(v: &mut Peer, rid: Option<&str>, n: usize) -> Vec<Got> {
    let body = match rid {
        Some(rid) => format!(r#"{{"mediaId":"0","rid":"{rid}"}}"#),
        None => r#"{"mediaId":"0"}"#.to_string(),
    };
    assert_eq!(select(v, &body).await.0, 200);
    let frames = layered_frames(v, VideoCodec::Vp8, n).await;
    let layer = rid.map_or(0, |r| LAYERS.iter().position(|(l, _)| *l == r).unwrap_or(9));
    assert!(
        frames.last().is_some_and(|f| f.layer == layer),
        "on layer {layer}: {frames:?}"
    );
    frames
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_moving_between_vp8_layers_sees_one_picture_numbering() {
    // The gateway's own egress, and str0m's send path.
    for direct_egress in [true, false] {
        let mut config = test_config(2);
        config.media.direct_egress = direct_egress;
        let gw = start(config).await;
        let feed = numbered_publisher(&gw, "s", VideoCodec::Vp8, true).await;
        let mut v = connected_viewer(&gw, VideoCodec::Vp8).await;
        let mut frames = layered_frames(&mut v, VideoCodec::Vp8, 10).await;
        frames.extend(move_to(&mut v, Some("2"), 75).await);
        frames.extend(move_to(&mut v, Some("1"), 75).await);
        frames.extend(move_to(&mut v, None, 90).await);
        let moves = frames.windows(2).filter(|w| w[0].layer != w[1].layer);
        assert!(moves.count() >= 3, "{direct_egress}: {frames:?}");
        assert_numbered(&frames);
        // Each frame is also checked byte for byte: the VP8 data after the rewritten
        // descriptor is as the publisher sent it. (str0m's receiver also tells VP8 frames
        // apart by picture id: a jump in it alone shows as a gap here.)
        assert_continuous(&frames);
        drop(v);
        feed.stop().await;
        gw.shutdown().await;
    }
}

/// Frames numbered as one VP8 stream, whatever layer each came from: each picture id one
/// past the last (mod 2^15, the width kept), each TL0PICIDX too (every frame of the test
/// publisher is a base-layer frame), and KEYIDX one up at each keyframe, a move's included.
fn assert_numbered(frames: &[Got]) {
    for w in frames.windows(2) {
        let (a, b) = (w[0], w[1]);
        let (Some(da), Some(db)) = (a.vp8, b.vp8) else {
            panic!("a descriptor on every frame: {frames:?}");
        };
        let (Some(pa), Some(pb)) = (da.picture_id, db.picture_id) else {
            panic!("a picture id on every frame: {frames:?}");
        };
        let at = format!(
            "frame {} of layer {} after layer {}",
            b.index, b.layer, a.layer
        );
        assert!(pb.long, "{at}: the 15-bit form kept");
        assert_eq!(pb.value, (pa.value + 1) & 0x7fff, "{at}: picture id");
        assert_eq!(
            db.tl0picidx,
            da.tl0picidx.map(|t| t.wrapping_add(1)),
            "{at}: TL0PICIDX"
        );
        let up = u8::from(b.key);
        assert_eq!(
            db.keyidx,
            da.keyidx.map(|k| (k + up) & 0x1f),
            "{at}: KEYIDX"
        );
    }
}
