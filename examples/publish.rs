//! Publish synthetic video (and Opus) to a WHIP endpoint.
//!
//! cargo run --example publish -- http://127.0.0.1:8080/whip/demo --codec h264 --seconds 30

use std::net::IpAddr;
use std::process::exit;
use std::time::{Duration, Instant};

use str0m::media::MediaKind;
use wishcast::client::{ClientOptions, Peer, PeerOptions, VideoCodec};
use wishcast::peer::Feed;

const USAGE: &str = "usage: publish <whip-url> [--codec h264|vp8|vp9|av1] [--seconds N] \
[--fps N] [--size BYTES] [--gop FRAMES] [--no-audio] [--no-video] [--token TOKEN] [--bind IP]";

struct Args {
    url: String,
    codec: VideoCodec,
    seconds: u64,
    fps: u32,
    size: usize,
    gop: u64,
    audio: bool,
    video: bool,
    token: Option<String>,
    bind: Option<IpAddr>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        url: String::new(),
        codec: VideoCodec::H264,
        seconds: 30,
        fps: 30,
        size: 4000,
        gop: 60,
        audio: true,
        video: true,
        token: None,
        bind: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--codec" => {
                let v = value("--codec")?;
                args.codec = VideoCodec::from_name(&v).ok_or(format!("unknown codec {v}"))?;
            }
            "--seconds" => args.seconds = number(&value("--seconds")?)?,
            "--fps" => args.fps = number(&value("--fps")?)?,
            "--size" => args.size = number(&value("--size")?)?,
            "--gop" => args.gop = number(&value("--gop")?)?,
            "--token" => args.token = Some(value("--token")?),
            "--bind" => args.bind = Some(number(&value("--bind")?)?),
            "--no-audio" => args.audio = false,
            "--no-video" => args.video = false,
            "-h" | "--help" => {
                println!("{USAGE}");
                exit(0);
            }
            s if s.starts_with("--") => return Err(format!("unknown option {s}")),
            s if args.url.is_empty() => args.url = s.to_string(),
            s => return Err(format!("unexpected argument {s}")),
        }
    }
    if args.url.is_empty() {
        return Err("missing WHIP URL".into());
    }
    if args.fps == 0 || args.gop == 0 {
        return Err("--fps and --gop must be positive".into());
    }
    Ok(args)
}

fn number<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("bad value {s}"))
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            exit(2);
        }
    };
    if let Err(e) = run(args).await {
        eprintln!("error: {e}");
        exit(1);
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let video = args.video.then_some(args.codec);
    let mut opts = ClientOptions {
        bearer: args.token.clone(),
        ..ClientOptions::from(PeerOptions {
            video,
            audio: args.audio,
            // Nothing here reads the RTCP log.
            raw_packets: false,
            ..PeerOptions::default()
        })
    };
    if let Some(ip) = args.bind {
        opts.bind_ip = ip;
    }
    let peer = Peer::publish(&args.url, opts).await?;
    println!("session {} (etag {:?})", peer.location(), peer.etag());
    peer.wait_connected(Duration::from_secs(10)).await?;
    println!("connected from {}", peer.local_addr());

    // Keyframe requests from the gateway are answered with the next frame.
    let mut feed = Feed::new(video, args.audio)
        .with_fps(args.fps)
        .with_gop(args.gop)
        .with_sizes(args.size, args.size);
    let start = Instant::now();
    feed.start(start);
    let end = start + Duration::from_secs(args.seconds);
    let mut next_report = start + Duration::from_secs(1);
    let (mut v_sent, mut a_sent, mut bytes) = (0u64, 0u64, 0u64);

    while Instant::now() < end {
        let now = Instant::now();
        while let Some(frame) = feed.take_due(now, peer.keyframe_requests()) {
            bytes += frame.data.len() as u64;
            match frame.kind {
                MediaKind::Video => v_sent += 1,
                MediaKind::Audio => a_sent += 1,
            }
            peer.send_frame(frame.kind, frame.rtp_time, frame.data)?;
        }
        if now >= next_report {
            println!(
                "t={:>3}s video {v_sent} frames/s, audio {a_sent} frames/s, {bytes} B/s, \
                 keyframe requests {}",
                (now - start).as_secs(),
                peer.keyframe_requests()
            );
            (v_sent, a_sent, bytes) = (0, 0, 0);
            next_report += Duration::from_secs(1);
        }
        let mut wake = next_report.min(end);
        if let Some(due) = feed.next_due() {
            wake = wake.min(due);
        }
        tokio::time::sleep_until(wake.into()).await;
    }

    let status = peer.delete().await?;
    println!("DELETE -> {status}");
    Ok(())
}
