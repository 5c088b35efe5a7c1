"""The driver protocol of tests/interop/README.md, shared by the Python peers: its command line
and its JSON-lines events. Only the standard library, so the aiortc venv and the system Python
(GStreamer's PyGObject) can both import it."""

import argparse
import json


def emit(event, **fields):
    """One protocol event on stdout, flushed at once: the orchestrator reads it as it comes."""
    print(json.dumps({"event": event, **fields}), flush=True)


def parse_args(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("mode", choices=["publish", "play"])
    p.add_argument("--url", required=True)
    p.add_argument("--codec", choices=["h264", "vp8"])
    p.add_argument("--seconds", type=float)
    p.add_argument("--token")
    p.add_argument("--screenshot", help="accepted and ignored: browser only")
    p.add_argument(
        "--video-only",
        action="store_true",
        help="publish: video without audio, offered as the peer offers a single track "
        "(GStreamer: webrtcbin's own bundle-policy, which puts no BUNDLE group in the offer)",
    )
    p.add_argument(
        "--ice-server",
        help="a STUN/TURN URL to gather candidates with (aiortc only), e.g. turn:HOST:PORT",
    )
    p.add_argument("--ice-username", help="the --ice-server's username")
    p.add_argument("--ice-credential", help="the --ice-server's credential")
    p.add_argument(
        "--relay-only",
        action="store_true",
        help="offer relayed candidates only (iceTransportPolicy relay; aiortc only): a client "
        "whose only path to the gateway is through the TURN server",
    )
    args = p.parse_args()
    if args.mode == "publish" and not args.codec:
        p.error("publish needs --codec")
    if args.mode == "play" and args.seconds is None:
        p.error("play needs --seconds")
    return args
