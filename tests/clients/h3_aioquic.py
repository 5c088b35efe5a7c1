"""An independent HTTP/3 client (aioquic) for the gateway's tests.

Usage: h3_aioquic.py --ca CERT.pem --host HOST --port PORT --stream NAME --offer OFFER.sdp

Connects once over QUIC (ALPN h3), then does GET /api/streams and POST /whip/NAME with the
offer, and prints one JSON object per response: status, headers, body.
"""

import argparse
import asyncio
import json
import sys

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration


class H3Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._http = H3Connection(self._quic)
        self._responses = {}
        self._waiters = {}

    def quic_event_received(self, event):
        for ev in self._http.handle_event(event):
            if isinstance(ev, (HeadersReceived, DataReceived)):
                r = self._responses.setdefault(ev.stream_id, {"headers": [], "body": b""})
                if isinstance(ev, HeadersReceived):
                    r["headers"].extend(ev.headers)
                else:
                    r["body"] += ev.data
                if ev.stream_ended:
                    waiter = self._waiters.pop(ev.stream_id, None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(self._responses.pop(ev.stream_id))

    async def request(self, method, authority, path, headers=(), body=b""):
        sid = self._quic.get_next_available_stream_id()
        fields = [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
        ] + [(k.encode(), v.encode()) for k, v in headers]
        self._http.send_headers(sid, fields, end_stream=not body)
        if body:
            self._http.send_data(sid, body, end_stream=True)
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[sid] = waiter
        self.transmit()
        r = await asyncio.wait_for(waiter, 10)
        status = None
        out_headers = {}
        for k, v in r["headers"]:
            k, v = k.decode(), v.decode()
            if k == ":status":
                status = int(v)
            else:
                out_headers.setdefault(k, []).append(v)
        return {"method": method, "path": path, "status": status,
                "headers": out_headers, "body": r["body"].decode("utf-8", "replace")}


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ca", required=True)
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--stream", required=True)
    p.add_argument("--offer", required=True)
    a = p.parse_args()
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name="localhost")
    config.load_verify_locations(a.ca)
    with open(a.offer, "rb") as f:
        offer = f.read()
    authority = f"localhost:{a.port}"
    async with connect(a.host, a.port, configuration=config, create_protocol=H3Client) as client:
        for method, path, headers, body in [
            ("GET", "/api/streams", [], b""),
            ("POST", f"/whip/{a.stream}", [("content-type", "application/sdp")], offer),
            ("POST", f"/whip/{a.stream}-2", [("content-type", "text/plain")], b"hello"),
        ]:
            print(json.dumps(await client.request(method, authority, path, headers, body)), flush=True)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except Exception as e:  # the test reads the message
        print(f"error: {e!r}", file=sys.stderr)
        sys.exit(1)
