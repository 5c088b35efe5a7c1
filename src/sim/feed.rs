//! A synthetic encoder whose frames a receiver can check byte for byte.

use super::*;

/// A synthetic encoder for a publisher: video frames at `fps` (a keyframe every `gop` frames and
/// on request) and a 20 ms Opus packet every 20 ms, written as the simulated clock reaches them.
///
/// Frames come from [`media::video_frame`] and [`media::opus_frame`] (the generators the
/// real-network tests use), so a receiver can check them with
/// [`Feed::check_video`] and [`Feed::check_audio`].
#[derive(Clone, Debug)]
pub struct Feed {
    pub video: Option<Codec>,
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
    /// Video frames written so far (the next frame's index).
    pub video_sent: u64,
    pub audio_sent: u64,
    /// Indices of the video frames sent as keyframes.
    pub keyframes: Vec<u64>,
    /// Writes str0m refused (for example before the publisher connected).
    pub write_errors: u64,
    pub(super) started: Option<Instant>,
    pub(super) key_requested: bool,
}

impl Feed {
    /// 30 fps, a keyframe every second, 3000-byte frames (6000-byte keyframes), audio if asked.
    pub fn new(video: Option<Codec>, audio: bool) -> Feed {
        Feed {
            video,
            audio,
            fps: 30,
            gop: 30,
            frame_bytes: 3000,
            key_bytes: 6000,
            honor_keyframe_requests: true,
            max_frames: None,
            video_sent: 0,
            audio_sent: 0,
            keyframes: Vec::new(),
            write_errors: 0,
            started: None,
            key_requested: false,
        }
    }

    /// Video of `bits_per_sec` at `fps` (all frames the same size) plus Opus.
    pub fn at_bitrate(video: Codec, bits_per_sec: u64, fps: u32) -> Feed {
        let bytes = (bits_per_sec / 8 / u64::from(fps.max(1))) as usize;
        Feed {
            fps,
            frame_bytes: bytes,
            key_bytes: bytes,
            gop: 2 * u64::from(fps),
            ..Feed::new(Some(video), true)
        }
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

    pub(super) fn frame_interval(&self) -> Duration {
        Duration::from_secs(1) / self.fps.max(1)
    }

    pub(super) fn done(&self) -> bool {
        self.max_frames.is_some_and(|m| self.video_sent >= m)
    }

    pub(super) fn next_video_at(&self) -> Option<Instant> {
        let start = self.started?;
        if self.video.is_none() || self.done() {
            return None;
        }
        Some(start + self.frame_interval() * self.video_sent as u32)
    }

    pub(super) fn next_audio_at(&self) -> Option<Instant> {
        let start = self.started?;
        if !self.audio || self.done() {
            return None;
        }
        Some(start + Duration::from_millis(20) * self.audio_sent as u32)
    }

    pub(super) fn next_due(&self) -> Option<Instant> {
        match (self.next_video_at(), self.next_audio_at()) {
            (Some(v), Some(a)) => Some(v.min(a)),
            (v, a) => v.or(a),
        }
    }

    /// The next frame due by `now`: (kind, RTP time, bytes).
    pub(super) fn take_due(&mut self, now: Instant) -> Option<(MediaKind, u64, Arc<[u8]>)> {
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
            let i = self.video_sent;
            let key = i == 0 || (self.gop > 0 && i % self.gop == 0) || self.key_requested;
            if key {
                self.key_requested = false;
                self.keyframes.push(i);
            }
            self.video_sent += 1;
            let size = if key {
                self.key_bytes
            } else {
                self.frame_bytes
            };
            let time = i * 90_000 / u64::from(self.fps.max(1));
            Some((
                MediaKind::Video,
                time,
                media::video_frame(VideoCodec::from_codec(codec)?, i, key, size).into(),
            ))
        } else {
            let i = self.audio_sent;
            self.audio_sent += 1;
            Some((MediaKind::Audio, i * 960, media::opus_frame(i).into()))
        }
    }

    /// The index of a received video frame if it is exactly what this feed sent, byte for byte.
    pub fn check_video(&self, data: &[u8]) -> Result<u64, String> {
        let codec = self.video.ok_or("the feed sends no video")?;
        let index = media::frame_index(codec, data).ok_or("no frame index in the data")?;
        let key = is_keyframe(codec, data);
        if key != self.keyframes.contains(&index) {
            return Err(format!(
                "frame {index}: keyframe {key} but sent as keyframe {}",
                !key
            ));
        }
        let size = if key {
            self.key_bytes
        } else {
            self.frame_bytes
        };
        let video = VideoCodec::from_codec(codec).ok_or("not a video codec")?;
        let expected = media::video_frame(video, index, key, size);
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

    /// The index of a received Opus packet if it is exactly what this feed sent.
    pub fn check_audio(&self, data: &[u8]) -> Result<u64, String> {
        let index = media::frame_index(Codec::Opus, data).ok_or("no frame index in the data")?;
        if data != &media::opus_frame(index)[..] {
            return Err(format!("opus packet {index} differs"));
        }
        Ok(index)
    }
}
