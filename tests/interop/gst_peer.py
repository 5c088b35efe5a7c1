#!/usr/bin/python3
"""GStreamer peer for the interop matrix: whipsink publisher and whepsrc viewer.

Speaks the driver protocol of tests/interop/README.md: JSON events, one per line, on stdout;
logs on stderr. Runs with the system Python and PyGObject (python3-gi); whipsink and whepsrc
come from gst-plugin-webrtchttp, found through GST_PLUGIN_PATH (tests/interop/setup.sh builds it).

webrtcbin keeps the RSA-2048 DTLS certificate GStreamer 1.22 makes for it: the gateway accepts
RSA peers (RFC 8827 §6.5), so the driver leaves the certificate alone, as gst-launch-1.0 would.

libnice, webrtcbin's ICE agent, leaves loopback addresses out of its candidates; a gateway on
127.0.0.1 (as in the tests) is then unreachable. For a loopback gateway the driver names the
loopback address to the agent: see use_loopback_if_needed.

whipsink and whepsrc keep the session URL and the DELETE's answer to themselves: they send the
DELETE when they go from PAUSED to READY and only log its status. This driver reads that status,
and the moment whepsrc sends its POST, from their debug log.
"""

import os
import re
import signal
import sys
import threading
import time

from protocol import emit, parse_args  # tests/interop/protocol.py, beside this script

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import GLib, Gst, GstWebRTC  # noqa: E402

WIDTH, HEIGHT, FPS = 640, 360, 30
CONNECT_TIMEOUT_S = 20
# Per HTTP request; the DELETE runs inside the state change, so this bounds the time to exit.
HTTP_TIMEOUT_S = 3


def info(msg):
    print(f"gst_peer: {msg}", file=sys.stderr, flush=True)


class ElementLog:
    """Reads whipsink's/whepsrc's debug lines for what they do not expose otherwise.

    GStreamer writes its debug log to stderr; stderr becomes a pipe that a thread copies to the
    real stderr while watching for the lines. (A Python log function would be simpler, but
    PyGObject aborts when a message names an object that is being finalized.)
    """

    def __init__(self, category):
        self.post_sent_at = None
        self.delete_status = None
        self.delete_error = None
        self._delete_seen = threading.Event()
        os.environ.setdefault("GST_DEBUG_NO_COLOR", "1")
        self._real_stderr = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
        # Python's own messages go straight out.
        sys.stderr = os.fdopen(os.dup(self._real_stderr), "w", buffering=1)
        self._thread = threading.Thread(target=self._copy, args=(read_end,), daemon=True)
        self._thread.start()
        self.category = category

    def enable(self):
        """After Gst.init: the element's debug lines are needed whatever GST_DEBUG says."""
        Gst.debug_set_threshold_for_name(self.category, Gst.DebugLevel.DEBUG)

    def _copy(self, fd):
        with os.fdopen(fd, "rb") as pipe:
            for line in pipe:
                os.write(self._real_stderr, line)
                self._watch(line.decode(errors="replace"))

    def _watch(self, text):
        if "Url for HTTP POST request" in text and self.post_sent_at is None:
            self.post_sent_at = time.monotonic()
        elif "Response to DELETE" in text:
            m = re.search(r"Response to DELETE : (\d{3})", text)
            self.delete_status = int(m.group(1)) if m else None
            self._delete_seen.set()
        elif "Error on DELETE" in text or "DELETE request aborted" in text:
            self.delete_error = text.strip()
            self._delete_seen.set()

    def close(self):
        """Restores stderr; the copying thread then sees the pipe's end and finishes."""
        os.dup2(self._real_stderr, 2)
        self._thread.join(1.0)

    def wait_delete(self, timeout=1.0):
        """The DELETE is logged before set_state returns; give the copying thread a moment."""
        self._delete_seen.wait(timeout)


def walk(bin_):
    """The elements inside bin_, at any depth (Gst.Iterator is not iterable without the
    python3-gst-1.0 overrides, which the driver does without)."""
    it = bin_.iterate_recurse()
    found = []
    while True:
        res, element = it.next()
        if res == Gst.IteratorResult.OK:
            found.append(element)
        elif res == Gst.IteratorResult.RESYNC:
            it.resync()
            found = []
        else:
            return found


_KEEP_ALIVE = []


def use_loopback_if_needed(webrtcbin, url):
    """Makes libnice gather on the loopback address when the gateway is on loopback.

    libnice skips loopback interfaces when it lists local addresses; an address added by hand
    before gathering is used instead of that list.
    """
    import ipaddress
    import socket
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    try:
        ip = ipaddress.ip_address(socket.gethostbyname(host))
    except (OSError, ValueError):
        return
    if not ip.is_loopback:
        return
    gi.require_version("Nice", "0.1")
    from gi.repository import Nice

    address = Nice.Address.new()
    if not address.set_from_string(str(ip)):
        raise RuntimeError(f"libnice cannot use {ip}")
    ice = webrtcbin.get_property("ice-agent")
    # PyGObject takes over webrtcbin's floating reference to its ICE object: the wrappers must
    # live as long as the pipeline, or the object is freed under webrtcbin.
    _KEEP_ALIVE.append(ice)
    agent = ice.get_property("agent")
    _KEEP_ALIVE.append(agent)
    if not agent.add_local_address(address):
        raise RuntimeError(f"libnice refused local address {ip}")
    info(f"ICE gathers on {ip} (the gateway is on loopback)")


def find_webrtcbin(bin_):
    for element in walk(bin_):
        factory = element.get_factory()
        if factory is not None and factory.get_name() == "webrtcbin":
            return element
    raise RuntimeError(f"no webrtcbin inside {bin_.get_name()}")


class Peer:
    def __init__(self, args):
        self.args = args
        self.loop = GLib.MainLoop()
        self.code = 0
        self.pipeline = None
        self.failed = False

    def fail(self, message):
        if self.failed:  # the first error is the cause; later ones follow from it
            return False
        self.failed = True
        emit("error", message=message)
        self.code = 1
        self.stop_pipeline()
        self.loop.quit()
        return False

    def stop_pipeline(self):
        if self.pipeline is not None:
            # Going through READY makes whipsink/whepsrc DELETE their session (synchronously).
            self.pipeline.set_state(Gst.State.NULL)
            self.pipeline = None

    def on_bus(self, _bus, msg):
        if msg.type == Gst.MessageType.ERROR:
            err, dbg = msg.parse_error()
            info(f"error from {msg.src.get_name()}: {err.message} ({dbg})")
            # The debug text carries the specifics (HTTP status and body, SSL error).
            detail = (dbg or "").strip().splitlines()[-1:] or [""]
            self.fail(f"{msg.src.get_name()}: {err.message} {detail[0]}".strip())
        elif msg.type == Gst.MessageType.WARNING:
            err, _ = msg.parse_warning()
            info(f"warning from {msg.src.get_name()}: {err.message}")
        return True

    def run(self):
        self.pipeline.get_bus().add_signal_watch()
        self.pipeline.get_bus().connect("message", self.on_bus)
        if self.pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            self.fail("pipeline refused to start")
            return self.code
        self.loop.run()
        return self.code


def token_prop(args):
    return f" auth-token={quote(args.token)}" if args.token else ""


def quote(value):
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Publisher(Peer):
    def __init__(self, args, log):
        super().__init__(args)
        self.log = log
        if args.codec == "h264":
            # The encoder settings of the README's GStreamer example, without B-frames (WebRTC).
            video_enc = (
                "x264enc tune=zerolatency bframes=0 key-int-max=60 speed-preset=ultrafast"
                " ! rtph264pay config-interval=-1 pt=96"
            )
        else:
            video_enc = "vp8enc deadline=1 keyframe-max-dist=60 ! rtpvp8pay pt=96"
        self.audio = not args.video_only
        desc = (
            f"whipsink name=whip whip-endpoint={quote(args.url)}{token_prop(args)}"
            f" timeout={HTTP_TIMEOUT_S}"
            f" videotestsrc is-live=true pattern=ball"
            f" ! video/x-raw,width={WIDTH},height={HEIGHT},framerate={FPS}/1"
            f" ! videoconvert ! queue ! {video_enc} name=vpay ! queue ! whip.sink_0"
        )
        if self.audio:
            desc += (
                " audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample"
                " ! opusenc ! rtpopuspay pt=97 ! queue ! whip.sink_1"
            )
        info(desc)
        self.pipeline = Gst.parse_launch(desc)
        self.connected = False
        self.published = False
        self.stopping = False
        webrtcbin = find_webrtcbin(self.pipeline.get_by_name("whip"))
        if args.video_only:
            # whipsink asks webrtcbin for max-bundle, which groups even a single track;
            # webrtcbin's own default, as applications that embed it get, offers no group.
            webrtcbin.set_property("bundle-policy", GstWebRTC.WebRTCBundlePolicy.NONE)
        use_loopback_if_needed(webrtcbin, args.url)
        webrtcbin.connect("notify::connection-state", self.on_connection_state)
        # Media flows once a video packet leaves the payloader after the connection is up.
        # (Payloaders push packets as buffer lists.)
        vpay = self.pipeline.get_by_name("vpay")
        vpay.get_static_pad("src").add_probe(
            Gst.PadProbeType.BUFFER | Gst.PadProbeType.BUFFER_LIST, self.on_video_buffer
        )
        GLib.timeout_add_seconds(CONNECT_TIMEOUT_S, self.on_connect_timeout)
        for sig in (signal.SIGTERM, signal.SIGINT):
            GLib.unix_signal_add(GLib.PRIORITY_HIGH, sig, self.on_signal)

    def on_connection_state(self, webrtcbin, _pspec):
        state = webrtcbin.get_property("connection-state")
        info(f"connection state {state.value_nick}")
        if state == GstWebRTC.WebRTCPeerConnectionState.CONNECTED:
            self.connected = True
        elif state == GstWebRTC.WebRTCPeerConnectionState.FAILED:
            # A moment's grace lets the bus deliver the specific error (DTLS, ICE) first.
            GLib.timeout_add(300, self.fail, "peer connection failed")

    def on_video_buffer(self, _pad, _probe_info):
        if self.connected and not self.published:
            self.published = True
            GLib.idle_add(self.on_publishing)
        return Gst.PadProbeReturn.OK

    def on_publishing(self):
        if not self.stopping:
            emit("publishing", width=WIDTH, height=HEIGHT, audio=self.audio, codec=self.args.codec)
        return False

    def on_connect_timeout(self):
        if not self.published and not self.stopping:
            self.fail(f"not connected after {CONNECT_TIMEOUT_S} s")
        return False

    def on_signal(self):
        if self.stopping:
            return True
        self.stopping = True
        info("stopping")
        self.stop_pipeline()
        self.log.wait_delete()
        if self.log.delete_status is not None:
            emit("deleted", status=self.log.delete_status)
        elif self.log.delete_error:
            self.code = 1
            emit("error", message=f"whipsink: {self.log.delete_error}")
        else:
            # whipsink DELETEs only a session it has created.
            self.code = 1
            emit("error", message="stopped before whipsink had a session")
        self.loop.quit()
        return False


class Viewer(Peer):
    def __init__(self, args, log):
        super().__init__(args)
        self.log = log
        self.pipeline = Gst.Pipeline.new("viewer")
        self.whep = Gst.ElementFactory.make("whepsrc", "whep")
        if self.whep is None:
            raise RuntimeError("no whepsrc element: is GST_PLUGIN_PATH set?")
        # VP8 and H264 as whepsrc's default video-caps offer them; its other defaults include
        # AV1, which GStreamer 1.22 has no RTP depayloader for.
        # Peer quirk: the default H264 caps have no fmtp, which RFC 6184 reads as
        # packetization-mode 0, although rtph264depay takes mode 1 (FU-A, STAP-A), the mode
        # encoders send; packetization-mode=1 says so.
        self.whep.set_property(
            "video-caps",
            Gst.Caps.from_string(
                "application/x-rtp,media=video,encoding-name=VP8,payload=101,clock-rate=90000;"
                "application/x-rtp,media=video,encoding-name=H264,payload=103,clock-rate=90000,"
                "packetization-mode=(string)1"
            ),
        )
        # Peer quirk: whepsrc's default audio-caps offer "OPUS/48000" without the channel count
        # that RFC 7587 requires ("opus/48000/2"); encoding-params adds it.
        self.whep.set_property(
            "audio-caps",
            Gst.Caps.from_string(
                "application/x-rtp,media=audio,encoding-name=OPUS,payload=96,"
                "clock-rate=48000,encoding-params=(string)2"
            ),
        )
        self.whep.set_property("whep-endpoint", args.url)
        self.whep.set_property("timeout", HTTP_TIMEOUT_S)
        if args.token:
            self.whep.set_property("auth-token", args.token)
        self.pipeline.add(self.whep)
        self.webrtcbin = find_webrtcbin(self.whep)
        use_loopback_if_needed(self.webrtcbin, args.url)
        self.whep.connect("pad-added", self.on_pad_added)
        self.frames = 0
        self.width = self.height = 0
        self.audio_packets = 0
        self.pad_codec = ""
        self.started_at = time.monotonic()
        GLib.timeout_add(int(args.seconds * 1000), self.on_done)

    def on_pad_added(self, _src, pad):
        # whepsrc's pad is a ghost of webrtcbin's, which webrtcbin adds before its first buffer:
        # the caps are then only in the sticky event of webrtcbin's pad.
        caps = pad.get_current_caps()
        if caps is None and isinstance(pad, Gst.GhostPad) and pad.get_target() is not None:
            event = pad.get_target().get_sticky_event(Gst.EventType.CAPS, 0)
            caps = event.parse_caps() if event is not None else None
        caps = caps or pad.query_caps(None)
        s = caps.get_structure(0)
        media = s.get_string("media")
        info(f"pad {pad.get_name()}: {caps.to_string()}")
        if media == "audio":
            pad.add_probe(Gst.PadProbeType.BUFFER | Gst.PadProbeType.BUFFER_LIST, self.on_audio)
        elif media == "video":
            self.pad_codec = (s.get_string("encoding-name") or "").lower()
        # decodebin picks the depayloader and decoder from the RTP caps.
        queue = Gst.ElementFactory.make("queue")
        decode = Gst.ElementFactory.make("decodebin")
        for element in (queue, decode):
            self.pipeline.add(element)
        queue.link(decode)
        decode.connect("pad-added", self.on_decoded_pad, media)
        for element in (queue, decode):
            element.sync_state_with_parent()
        pad.link(queue.get_static_pad("sink"))

    def on_decoded_pad(self, _decodebin, pad, media):
        sink = Gst.ElementFactory.make("fakesink")
        sink.set_property("sync", False)
        self.pipeline.add(sink)
        sink.sync_state_with_parent()
        pad.link(sink.get_static_pad("sink"))
        if media == "video":
            pad.add_probe(Gst.PadProbeType.BUFFER, self.on_video_frame)

    def on_video_frame(self, pad, _probe_info):
        caps = pad.get_current_caps()
        if caps is not None:
            s = caps.get_structure(0)
            self.width, self.height = s.get_int("width")[1], s.get_int("height")[1]
        if self.frames == 0:
            sent = self.log.post_sent_at or self.started_at
            ms = int((time.monotonic() - sent) * 1000)
            emit("first_frame", ms=ms, width=self.width, height=self.height)
        self.frames += 1
        return Gst.PadProbeReturn.OK

    def on_audio(self, _pad, probe_info):
        if probe_info.type & Gst.PadProbeType.BUFFER_LIST:
            self.audio_packets += probe_info.get_buffer_list().length()
        else:
            self.audio_packets += 1
        return Gst.PadProbeReturn.OK

    def answer_codecs(self):
        """Media codecs of the answer's video section, in order, lower case."""
        codecs = []
        desc = self.webrtcbin.get_property("remote-description")
        if desc is not None:
            sdp = desc.sdp
            for i in range(sdp.medias_len()):
                m = sdp.get_media(i)
                if m.get_media() != "video":
                    continue
                names = {}
                for j in range(m.attributes_len()):
                    a = m.get_attribute(j)
                    if a.key == "rtpmap":
                        pt, rest = a.value.split(" ", 1)
                        names[pt] = rest.split("/")[0].lower()
                for k in range(m.formats_len()):
                    name = names.get(m.get_format(k), "")
                    if name and name not in ("rtx", "red", "ulpfec") and name not in codecs:
                        codecs.append(name)
        return codecs

    def on_done(self):
        # An answer may list several video codecs; the one that counts is the one media came in.
        offered = self.answer_codecs()
        codec = self.pad_codec or (offered[0] if len(offered) == 1 else "")
        if len(offered) > 1:
            info(f"the answer lists video codecs {offered}")
        self.stop_pipeline()
        self.log.wait_delete()
        if self.log.delete_status is None:
            self.fail(f"whepsrc sent no DELETE: {self.log.delete_error or 'no session'}")
            return False
        emit(
            "summary",
            frames=self.frames,
            width=self.width,
            height=self.height,
            audio_packets=self.audio_packets,
            codec=codec,
            delete_status=self.log.delete_status,
        )
        self.loop.quit()
        return False


def main():
    args = parse_args(__doc__)
    log = ElementLog("whipsink" if args.mode == "publish" else "whepsrc")
    try:
        Gst.init(None)
        log.enable()
        peer = Publisher(args, log) if args.mode == "publish" else Viewer(args, log)
        return peer.run()
    except Exception as e:
        emit("error", message=str(e) or type(e).__name__)
        return 1
    finally:
        log.close()


if __name__ == "__main__":
    sys.exit(main())
