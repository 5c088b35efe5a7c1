//! A synthetic encoder whose frames a receiver can check byte for byte.

use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::format::Codec;
use str0m::media::MediaKind;

use super::media;
use super::VideoCodec;

/// Opus packets last 20 ms.
const AUDIO_INTERVAL: Duration = Duration::from_millis(20);
/// RTP clock ticks per Opus packet (48 kHz).
const AUDIO_TICKS: u64 = 960;
/// RTP clock rate of video.
const VIDEO_CLOCK: u64 = 90_000;

/// A synthetic encoder for a publisher: video frames at `fps` (a keyframe every `gop` frames and
/// on request) and a 20 ms Opus packet every 20 ms, due as the clock it is given reaches them.
///
/// It keeps no clock of its own, so the simulation runs it on simulated time and a client on the
/// real one. Frames come from [`media::video_frame`] and [`media::opus_frame`], so a receiver can
/// check them with [`Feed::check_video`] and [`Feed::check_audio`].
#[derive(Clone, Debug)]
pub struct Feed {
    pub video: Option<VideoCodec>,
    pub audio: bool,
    pub fps: u32,
    /// A keyframe every this many frames; 0: only the first frame and requested ones.
    pub gop: u64,
    /// Size of a delta frame, in bytes.
    pub frame_bytes: usize,
    /// Size of a keyframe, in bytes.
    pub key_bytes: usize,
    /// A keyframe request from the gateway makes the next video frame a keyframe.
    pub honor_keyframe_requests: bool,
    /// Stop after this many video frames (audio stops with it).
    pub max_frames: Option<u64>,
    /// Index of the first frame (video and audio), as if the encoder had run before.
    pub first: u64,
    /// Video frames taken so far.
    pub video_sent: u64,
    /// Opus packets taken so far.
    pub audio_sent: u64,
    /// Simulcast: each video frame is sent once per layer, smaller by the layer's divisor
    /// ([`Feed::with_layers`]); empty for one stream.
    pub layers: Vec<FeedLayer>,
    /// The other layers' copies of the video frame taken last, due at once.
    pending: std::collections::VecDeque<FeedFrame>,
    /// Indices of the video frames sent as keyframes.
    pub keyframes: Vec<u64>,
    started: Option<Instant>,
    /// The publisher's keyframe request count at the last frame taken.
    requests_seen: u64,
    key_requested: bool,
}

/// A simulcast layer of a [`Feed`]: its rid and how many times smaller its frames are than
/// the feed's sizes.
#[derive(Clone, Debug)]
pub struct FeedLayer {
    pub rid: String,
    pub divisor: usize,
}

/// One frame a [`Feed`] produced.
#[derive(Clone, Debug)]
pub struct FeedFrame {
    pub kind: MediaKind,
    /// The index the generator embedded in the frame.
    pub index: u64,
    /// RTP time in the codec clock.
    pub rtp_time: u64,
    /// Sent as a keyframe (every Opus packet is one).
    pub keyframe: bool,
    pub data: Arc<[u8]>,
    /// The simulcast layer it belongs to; `None` without layers and for audio.
    pub rid: Option<String>,
}

impl Feed {
    /// 30 fps, a keyframe every second, 3000-byte frames (6000-byte keyframes), audio if asked.
    pub fn new(video: Option<VideoCodec>, audio: bool) -> Feed {
        Feed {
            video,
            audio,
            fps: 30,
            gop: 30,
            frame_bytes: 3000,
            key_bytes: 6000,
            honor_keyframe_requests: true,
            max_frames: None,
            first: 0,
            video_sent: 0,
            audio_sent: 0,
            layers: Vec::new(),
            pending: std::collections::VecDeque::new(),
            keyframes: Vec::new(),
            started: None,
            requests_seen: 0,
            key_requested: false,
        }
    }

    /// Video of `bits_per_sec` at `fps` (all frames the same size) plus Opus.
    pub fn at_bitrate(video: VideoCodec, bits_per_sec: u64, fps: u32) -> Feed {
        let bytes = (bits_per_sec / 8 / u64::from(fps.max(1))) as usize;
        Feed::new(Some(video), true)
            .with_fps(fps)
            .with_sizes(bytes, bytes)
            .with_gop(2 * u64::from(fps))
    }

    /// Stops after `n` video frames.
    pub fn with_max_frames(mut self, n: u64) -> Feed {
        self.max_frames = Some(n);
        self
    }

    /// A keyframe every `gop` frames (0: only the first and requested ones).
    pub fn with_gop(mut self, gop: u64) -> Feed {
        self.gop = gop;
        self
    }

    /// Delta frames of `frame_bytes`, keyframes of `key_bytes`.
    pub fn with_sizes(mut self, frame_bytes: usize, key_bytes: usize) -> Feed {
        self.frame_bytes = frame_bytes;
        self.key_bytes = key_bytes;
        self
    }

    /// `fps` video frames per second.
    pub fn with_fps(mut self, fps: u32) -> Feed {
        self.fps = fps;
        self
    }

    /// Numbers frames from `first` on (video and audio), as if the encoder had run before.
    pub fn with_first(mut self, first: u64) -> Feed {
        self.first = first;
        self
    }

    /// Sends video as simulcast layers `(rid, divisor)`: each frame once per layer, with
    /// `size / divisor` bytes, the same index and keyframes on every layer.
    pub fn with_layers(mut self, layers: &[(&str, usize)]) -> Feed {
        self.layers = layers
            .iter()
            .map(|(rid, divisor)| FeedLayer {
                rid: rid.to_string(),
                divisor: (*divisor).max(1),
            })
            .collect();
        self
    }

    /// Frames are due from `now` on: the first at once.
    pub fn start(&mut self, now: Instant) {
        self.started = Some(now);
    }

    /// When the next frame is due; `None` before [`Feed::start`] and once done.
    pub fn next_due(&self) -> Option<Instant> {
        if !self.pending.is_empty() {
            return self.started;
        }
        match (self.next_video_at(), self.next_audio_at()) {
            (Some(v), Some(a)) => Some(v.min(a)),
            (v, a) => v.or(a),
        }
    }

    /// The next frame due by `now`, if any, earliest first.
    ///
    /// `keyframe_requests` is the publisher's count of keyframe requests received so far: one
    /// more than at the previous frame makes the next video frame a keyframe (if honored).
    pub fn take_due(&mut self, now: Instant, keyframe_requests: u64) -> Option<FeedFrame> {
        if keyframe_requests > self.requests_seen {
            self.requests_seen = keyframe_requests;
            self.key_requested |= self.honor_keyframe_requests;
        }
        if let Some(f) = self.pending.pop_front() {
            return Some(f);
        }
        let video = self.next_video_at().filter(|t| *t <= now);
        let audio = self.next_audio_at().filter(|t| *t <= now);
        let video_first = match (video, audio) {
            (Some(v), Some(a)) => v <= a,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return None,
        };
        if video_first {
            let codec = self.video?;
            let sent = self.video_sent;
            let index = self.first + sent;
            let keyframe =
                sent == 0 || (self.gop > 0 && sent % self.gop == 0) || self.key_requested;
            if keyframe {
                self.key_requested = false;
                self.keyframes.push(index);
            }
            self.video_sent += 1;
            let rtp_time = index * VIDEO_CLOCK / u64::from(self.fps.max(1));
            let frame = |size: usize, rid: Option<String>| FeedFrame {
                kind: MediaKind::Video,
                index,
                rtp_time,
                keyframe,
                data: media::video_frame(codec, index, keyframe, size).into(),
                rid,
            };
            if self.layers.is_empty() {
                return Some(frame(self.size(keyframe), None));
            }
            let size = self.size(keyframe);
            let mut frames: std::collections::VecDeque<FeedFrame> = self
                .layers
                .iter()
                .map(|l| frame(size / l.divisor, Some(l.rid.clone())))
                .collect();
            let first = frames.pop_front();
            self.pending = frames;
            first
        } else {
            let index = self.first + self.audio_sent;
            self.audio_sent += 1;
            Some(FeedFrame {
                kind: MediaKind::Audio,
                index,
                rtp_time: index * AUDIO_TICKS,
                keyframe: true,
                data: media::opus_frame(index).into(),
                rid: None,
            })
        }
    }

    /// The index of a received video frame if it is exactly what this feed sent, byte for byte.
    pub fn check_video(&self, data: &[u8]) -> Result<u64, String> {
        let codec = self.video.ok_or("the feed sends no video")?;
        let index = media::frame_index(codec, data).ok_or("no frame index in the data")?;
        let key = media::is_keyframe(codec, data);
        if key != self.keyframes.contains(&index) {
            return Err(format!(
                "frame {index}: keyframe {key} but sent as keyframe {}",
                !key
            ));
        }
        let expected = media::video_frame(codec, index, key, self.size(key));
        if data != &expected[..] {
            return Err(format!(
                "frame {index} differs: {} bytes received, {} sent, first difference at {:?}",
                data.len(),
                expected.len(),
                data.iter().zip(expected.iter()).position(|(a, b)| a != b)
            ));
        }
        Ok(index)
    }

    /// The index of a received video frame and the layer (index into [`Feed::layers`]) it
    /// came from, if it is exactly what this feed sent on that layer, byte for byte.
    pub fn check_layer(&self, data: &[u8]) -> Result<(u64, usize), String> {
        let codec = self.video.ok_or("the feed sends no video")?;
        let index = media::frame_index(codec, data).ok_or("no frame index in the data")?;
        let key = media::is_keyframe(codec, data);
        for (i, layer) in self.layers.iter().enumerate() {
            let size = self.size(key) / layer.divisor;
            if data == &media::video_frame(codec, index, key, size)[..] {
                return Ok((index, i));
            }
        }
        Err(format!(
            "frame {index} ({} bytes) is no layer's frame as sent",
            data.len()
        ))
    }

    /// The index of a received Opus packet if it is exactly what this feed sent.
    pub fn check_audio(&self, data: &[u8]) -> Result<u64, String> {
        let index = media::frame_index(Codec::Opus, data).ok_or("no frame index in the data")?;
        if data != &media::opus_frame(index)[..] {
            return Err(format!("opus packet {index} differs"));
        }
        Ok(index)
    }

    fn size(&self, keyframe: bool) -> usize {
        if keyframe {
            self.key_bytes
        } else {
            self.frame_bytes
        }
    }

    fn frame_interval(&self) -> Duration {
        Duration::from_secs(1) / self.fps.max(1)
    }

    fn done(&self) -> bool {
        self.max_frames.is_some_and(|m| self.video_sent >= m)
    }

    fn next_video_at(&self) -> Option<Instant> {
        let start = self.started?;
        if self.video.is_none() || self.done() {
            return None;
        }
        Some(start + self.frame_interval() * self.video_sent as u32)
    }

    fn next_audio_at(&self) -> Option<Instant> {
        let start = self.started?;
        if !self.audio || self.done() {
            return None;
        }
        Some(start + AUDIO_INTERVAL * self.audio_sent as u32)
    }
}
