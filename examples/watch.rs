//! Play a WHEP stream and print frames/s and bytes/s per media kind.
//!
//! cargo run --example watch -- http://127.0.0.1:8080/whep/demo --codec h264 --seconds 30

use std::net::IpAddr;
use std::process::exit;
use std::time::{Duration, Instant};

use str0m::media::MediaKind;
use wishcast::client::{ClientOptions, LinkState, Peer, PeerOptions, VideoCodec};
use wishcast::peer::media::frame_index;

const USAGE: &str = "usage: watch <whep-url> [--codec h264|vp8|vp9|av1] [--seconds N] \
[--no-audio] [--no-video] [--token TOKEN] [--bind IP]";

struct Args {
    url: String,
    codec: VideoCodec,
    seconds: u64,
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
            "--seconds" => {
                let v = value("--seconds")?;
                args.seconds = v.parse().map_err(|_| format!("bad value {v}"))?;
            }
            "--token" => args.token = Some(value("--token")?),
            "--bind" => {
                let v = value("--bind")?;
                args.bind = Some(v.parse().map_err(|_| format!("bad address {v}"))?);
            }
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
        return Err("missing WHEP URL".into());
    }
    Ok(args)
}

/// Per-kind counters for one report interval.
#[derive(Default)]
struct Tally {
    frames: u64,
    bytes: u64,
    keyframes: u64,
    /// Frames missing according to the embedded index (synthetic publishers only).
    gaps: u64,
    discontinuities: u64,
    last_index: Option<u64>,
}

impl Tally {
    fn add(&mut self, index: Option<u64>, len: usize, keyframe: bool, contiguous: bool) {
        self.frames += 1;
        self.bytes += len as u64;
        self.keyframes += u64::from(keyframe);
        self.discontinuities += u64::from(!contiguous);
        if let Some(i) = index {
            if let Some(last) = self.last_index {
                self.gaps += i.saturating_sub(last + 1);
            }
            self.last_index = Some(i);
        }
    }

    fn line(&mut self, name: &str) -> String {
        let s = format!(
            "{name} {} frames/s {} B/s (keyframes {}, missing {}, discontinuities {})",
            self.frames, self.bytes, self.keyframes, self.gaps, self.discontinuities
        );
        *self = Tally {
            last_index: self.last_index,
            ..Tally::default()
        };
        s
    }
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
    let mut opts = ClientOptions {
        bearer: args.token.clone(),
        ..ClientOptions::from(PeerOptions {
            video: args.video.then_some(args.codec),
            audio: args.audio,
            // Nothing here reads the RTCP log.
            raw_packets: false,
            ..PeerOptions::default()
        })
    };
    if let Some(ip) = args.bind {
        opts.bind_ip = ip;
    }
    let mut peer = Peer::play(&args.url, opts).await?;
    println!("session {} (etag {:?})", peer.location(), peer.etag());
    peer.wait_connected(Duration::from_secs(10)).await?;
    println!("connected from {}", peer.local_addr());

    let start = Instant::now();
    let end = start + Duration::from_secs(args.seconds);
    let mut next_report = start + Duration::from_secs(1);
    let (mut video, mut audio) = (Tally::default(), Tally::default());
    loop {
        let now = Instant::now();
        if now >= next_report {
            println!(
                "t={:>3}s {} | {}",
                (now - start).as_secs(),
                video.line("video"),
                audio.line("audio")
            );
            next_report += Duration::from_secs(1);
        }
        if now >= end {
            break;
        }
        let wait = next_report.min(end).saturating_duration_since(now);
        if let Some(f) = peer.next_frame(wait).await {
            let tally = match f.kind {
                MediaKind::Video => &mut video,
                MediaKind::Audio => &mut audio,
            };
            tally.add(
                frame_index(f.codec, &f.data),
                f.data.len(),
                f.keyframe,
                f.contiguous,
            );
        } else if let LinkState::Closed(reason) = peer.state() {
            println!("session ended: {reason}");
            break;
        }
    }

    let status = peer.delete().await?;
    println!("DELETE -> {status}");
    Ok(())
}
