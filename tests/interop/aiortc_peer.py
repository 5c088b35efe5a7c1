#!/usr/bin/env python3
"""aiortc peer for the interop matrix: a WHIP publisher and a WHEP viewer.

Speaks the driver protocol of tests/interop/README.md: JSON events, one per line, on stdout;
logs on stderr. Runs in the venv that tests/interop/setup.sh creates (aiortc, PyAV, numpy).
"""

import asyncio
import fractions
import logging
import math
import signal
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from protocol import emit, parse_args  # tests/interop/protocol.py, beside this script

import aiortc.rtcrtpreceiver
import av
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.rtcconfiguration import RTCIceTransportPolicy
from aiortc.mediastreams import MediaStreamError

WIDTH, HEIGHT, FPS = 640, 360, 30
AUDIO_RATE, AUDIO_SAMPLES = 48000, 960  # 20 ms Opus frames
CONNECT_TIMEOUT = 20.0
HTTP_TIMEOUT = 3.0  # with the 1 s close, keeps the exit after SIGTERM under 5 s

log = logging.getLogger("aiortc_peer")


# --- HTTP (urllib in a thread: aiortc brings no HTTP client) ---------------------------------


def _request(method, url, token, body=None, content_type=None):
    headers = {}
    if content_type:
        headers["Content-Type"] = content_type
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers.items()), e.read()


async def post_offer(url, token, sdp):
    return await asyncio.to_thread(
        _request, "POST", url, token, sdp.encode(), "application/sdp"
    )


async def delete_session(session_url, token):
    try:
        status, _, _ = await asyncio.to_thread(_request, "DELETE", session_url, token)
        return status
    except OSError as e:
        log.warning("DELETE %s failed: %s", session_url, e)
        return 0


async def negotiate(pc, url, token):
    """Offer (after full ICE gathering: aiortc does not trickle), POST it, apply the answer.

    Returns the session URL and the answer SDP.
    """
    await pc.setLocalDescription(await pc.createOffer())
    status, headers, body = await post_offer(url, token, pc.localDescription.sdp)
    if status != 201:
        raise RuntimeError(f"POST {url}: {status} {body.decode(errors='replace')}")
    location = {k.lower(): v for k, v in headers.items()}.get("location")
    if not location:
        raise RuntimeError(f"POST {url}: 201 without Location")
    answer = body.decode()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    return urllib.parse.urljoin(url, location), answer


async def wait_connected(pc):
    connected = asyncio.get_running_loop().create_future()

    @pc.on("connectionstatechange")
    def _():
        log.info("connection state %s", pc.connectionState)
        if connected.done():
            return
        if pc.connectionState == "connected":
            connected.set_result(None)
        elif pc.connectionState in ("failed", "closed"):
            connected.set_exception(RuntimeError(f"peer connection {pc.connectionState}"))

    if pc.connectionState != "connected":
        await asyncio.wait_for(connected, CONNECT_TIMEOUT)


def answer_video_codecs(answer_sdp):
    """Media codecs of the answer's video section in order, lower case (no rtx/red/ulpfec)."""
    pts, names, in_video = [], {}, False
    for line in answer_sdp.splitlines():
        if line.startswith("m="):
            in_video = line.startswith("m=video")
            if in_video:
                pts = line.split()[3:]
        elif in_video and line.startswith("a=rtpmap:"):
            pt, rest = line[len("a=rtpmap:"):].split(" ", 1)
            names[pt] = rest.split("/")[0].lower()
    codecs = [names.get(pt, "") for pt in pts]
    return [c for c in dict.fromkeys(codecs) if c and c not in ("rtx", "red", "ulpfec")]


# An answer may list several video codecs; the one that counts is the one the media arrives in.
# aiortc does not expose it, so note the codec each decoder is created for.
decoded_codecs = []
_get_decoder = aiortc.rtcrtpreceiver.get_decoder


def _noting_get_decoder(codec):
    decoded_codecs.append(codec.name.lower())
    return _get_decoder(codec)


aiortc.rtcrtpreceiver.get_decoder = _noting_get_decoder


# --- publisher -------------------------------------------------------------------------------


class PatternTrack(MediaStreamTrack):
    """A moving diagonal gradient with a sweeping bar, so every frame differs."""

    kind = "video"

    def __init__(self):
        super().__init__()
        y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
        self._base = (x + y).astype(np.uint16)
        self._n = 0
        self._start = None
        self.pulled = asyncio.Event()

    async def recv(self):
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self._n / FPS
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        n = self._n
        self._n += 1
        luma = ((self._base + 4 * n) & 0xFF).astype(np.uint8)
        bar = (8 * n) % WIDTH
        luma[:, bar : bar + 16] = 235
        chroma = np.full((HEIGHT // 2, WIDTH), 128, np.uint8)
        chroma[:, : WIDTH // 2] = (64 + 2 * n) & 0xFF
        frame = av.VideoFrame.from_ndarray(np.vstack([luma, chroma]), format="yuv420p")
        frame.pts = n * (90000 // FPS)
        frame.time_base = fractions.Fraction(1, 90000)
        self.pulled.set()
        return frame


class ToneTrack(MediaStreamTrack):
    """A 440 Hz sine tone in real time."""

    kind = "audio"

    def __init__(self):
        super().__init__()
        self._n = 0
        self._start = None
        t = np.arange(AUDIO_SAMPLES) / AUDIO_RATE
        self._phase_step = 2 * math.pi * 440 * AUDIO_SAMPLES / AUDIO_RATE
        self._wave = 2 * math.pi * 440 * t

    async def recv(self):
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self._n * AUDIO_SAMPLES / AUDIO_RATE
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        samples = (np.sin(self._wave + self._n * self._phase_step) * 8000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = self._n * AUDIO_SAMPLES
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        self._n += 1
        return frame


def only(kind, mime):
    """Sender capabilities of one codec (with RTX for video), for setCodecPreferences."""
    codecs = RTCRtpSender.getCapabilities(kind).codecs
    chosen = [c for c in codecs if c.mimeType.lower() == mime]
    chosen += [c for c in codecs if c.mimeType.lower() == f"{kind}/rtx"]
    return chosen


def peer_connection(args):
    """A peer connection with the --ice-server and --relay-only of the command line."""
    servers = []
    if args.ice_server:
        servers.append(
            RTCIceServer(
                urls=args.ice_server,
                username=args.ice_username,
                credential=args.ice_credential,
            )
        )
    policy = RTCIceTransportPolicy.RELAY if args.relay_only else RTCIceTransportPolicy.ALL
    return RTCPeerConnection(RTCConfiguration(iceServers=servers, iceTransportPolicy=policy))


async def publish(args, stop):
    pc = peer_connection(args)
    session_url = None
    try:
        video = PatternTrack()
        pc.addTransceiver(video, direction="sendonly").setCodecPreferences(
            only("video", f"video/{args.codec}")
        )
        pc.addTransceiver(ToneTrack(), direction="sendonly").setCodecPreferences(
            only("audio", "audio/opus")
        )
        work = asyncio.ensure_future(negotiate(pc, args.url, args.token))
        await first_of(work, stop)
        session_url, _ = work.result()
        log.info("session %s", session_url)
        work = asyncio.ensure_future(wait_connected(pc))
        await first_of(work, stop)
        work.result()
        # The encoder pulls frames only once DTLS is up: the first pull means media flows.
        work = asyncio.ensure_future(asyncio.wait_for(video.pulled.wait(), 5))
        await first_of(work, stop)
        work.result()
        emit("publishing", width=WIDTH, height=HEIGHT, audio=True, codec=args.codec)
        await stop.wait()
        status = await delete_session(session_url, args.token)
        emit("deleted", status=status)
        return 0
    except Stopped:
        if session_url is None:
            emit("error", message="stopped before the session was created")
            return 1
        status = await delete_session(session_url, args.token)
        emit("deleted", status=status)
        return 0
    except Exception:
        if session_url is not None:  # do not leave the session to the gateway's timeout
            await delete_session(session_url, args.token)
        raise
    finally:
        await close(pc)


class Stopped(Exception):
    pass


async def first_of(work, stop):
    """Waits for work; raises Stopped (cancelling work) if stop is set first."""
    stopper = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if work not in done:
        work.cancel()
        raise Stopped()


async def close(pc):
    try:
        await asyncio.wait_for(pc.close(), 1)
    except Exception as e:  # closing is best effort; the answer is already out
        log.warning("close: %s", e)


# --- viewer ----------------------------------------------------------------------------------


async def play(args):
    deadline = time.monotonic() + args.seconds
    pc = peer_connection(args)
    stats = {"frames": 0, "width": 0, "height": 0, "audio": 0}
    tasks = []
    t0 = None

    async def consume_video(track):
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:  # the track ended
                return
            if stats["frames"] == 0:
                ms = int((time.monotonic() - t0) * 1000)
                emit("first_frame", ms=ms, width=frame.width, height=frame.height)
            stats["frames"] += 1
            stats["width"], stats["height"] = frame.width, frame.height

    async def consume_audio(track):
        while True:
            try:
                await track.recv()
            except MediaStreamError:
                return
            stats["audio"] += 1

    @pc.on("track")
    def on_track(track):
        log.info("track %s", track.kind)
        consume = consume_video if track.kind == "video" else consume_audio
        tasks.append(asyncio.ensure_future(consume(track)))

    try:
        # Offer every codec aiortc decodes (VP8, H264); the gateway picks the publisher's.
        pc.addTransceiver("video", direction="recvonly").setCodecPreferences(
            RTCRtpReceiver.getCapabilities("video").codecs
        )
        pc.addTransceiver("audio", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        t0 = time.monotonic()
        status, headers, body = await post_offer(args.url, args.token, pc.localDescription.sdp)
        if status != 201:
            raise RuntimeError(f"POST {args.url}: {status} {body.decode(errors='replace')}")
        location = {k.lower(): v for k, v in headers.items()}.get("location")
        if not location:
            raise RuntimeError(f"POST {args.url}: 201 without Location")
        session_url = urllib.parse.urljoin(args.url, location)
        answer = body.decode()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        log.info("session %s", session_url)
        await asyncio.sleep(max(0.0, deadline - time.monotonic()))
        for task in tasks:
            task.cancel()
        delete_status = await delete_session(session_url, args.token)
        offered = answer_video_codecs(answer)
        video_decoded = [c for c in decoded_codecs if c in offered]
        if len(set(offered)) > 1:
            log.info("the answer lists video codecs %s", offered)
        if video_decoded:
            codec = video_decoded[-1]
        else:
            codec = offered[0] if len(offered) == 1 else ""
        emit(
            "summary",
            frames=stats["frames"],
            width=stats["width"],
            height=stats["height"],
            audio_packets=stats["audio"],
            codec=codec,
            delete_status=delete_status,
        )
        return 0
    finally:
        for task in tasks:
            task.cancel()
        await close(pc)


# --- main ------------------------------------------------------------------------------------


async def main(args):
    if args.mode == "publish":
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await publish(args, stop)
    return await play(args)


if __name__ == "__main__":
    args = parse_args(__doc__)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(name)s: %(message)s")
    log.setLevel(logging.INFO)
    try:
        code = asyncio.run(main(args))
    except Exception as e:
        # A refused POST says enough; anything else gets its traceback.
        if isinstance(e, RuntimeError):
            log.error("%s", e)
        else:
            log.exception("failed")
        emit("error", message=str(e) or type(e).__name__)
        code = 1
    sys.exit(code)
