"""A small upstream for proxy tests and benchmarks, run in the Jupyter test image instead of
Jupyter (launcher = "command"): it answers like Jupyter where notebox looks
({base_url}api/status), plus a tiny page ({base_url}hello), a WebSocket echo
({base_url}echo) that sends every message back as it came (text or binary, any size), and a
WebSocket sink ({base_url}sink) that reads whatever arrives and keeps none of it, counting the
bytes ({base_url}sink/received).

usage: python3 echo.py BASE_URL [PORT]
"""
import base64
import hashlib
import sys

import tornado.ioloop
import tornado.iostream
import tornado.web
import tornado.websocket

BASE = sys.argv[1]
PORT = int(sys.argv[2]) if len(sys.argv) > 2 else 8888


class Status(tornado.web.RequestHandler):
    def get(self):
        self.write({"started": "echo", "authorization": self.request.headers.get("Authorization", ""),
                    "cookie": self.request.headers.get("Cookie", ""),
                    "forwarded_for": self.request.headers.get("X-Forwarded-For", "")})


class Hello(tornado.web.RequestHandler):
    def get(self):
        self.set_header("Content-Type", "text/plain")
        self.write("hello\n")


class ServiceWorker(tornado.web.RequestHandler):
    """A script that asks to control more than its folder (Notebox must drop the header)."""

    def get(self):
        self.set_header("Content-Type", "text/javascript")
        self.set_header("Service-Worker-Allowed", "/")
        self.write("self.addEventListener('fetch', () => {});\n")


class Echo(tornado.websocket.WebSocketHandler):
    def check_origin(self, origin):
        return True

    def select_subprotocol(self, subprotocols):
        return subprotocols[0] if subprotocols else None

    def on_message(self, message):
        self.write_message(message, binary=isinstance(message, bytes))


class Sink(tornado.web.RequestHandler):
    """Accepts a WebSocket, then reads the raw stream in small pieces and drops them: unlike
    tornado's own WebSocket handler it never holds a frame whole, so frames of any size can be
    sent through Notebox without the upstream's memory being the limit."""

    received = 0

    async def get(self):
        key = self.request.headers.get("Sec-WebSocket-Key", "")
        accept = base64.b64encode(
            hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
        stream = self.detach()
        await stream.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                           b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        try:
            while True:
                piece = await stream.read_bytes(65536, partial=True)
                Sink.received += len(piece)
        except tornado.iostream.StreamClosedError:
            pass


class SinkReceived(tornado.web.RequestHandler):
    def get(self):
        self.write({"received": Sink.received})


app = tornado.web.Application(
    [(BASE + "api/status", Status), (BASE + "hello", Hello), (BASE + "sw.js", ServiceWorker),
     (BASE + "echo", Echo), (BASE + "sink", Sink), (BASE + "sink/received", SinkReceived)],
    websocket_max_message_size=256 << 20,
    websocket_ping_interval=None,
)
app.listen(PORT, address="0.0.0.0")
tornado.ioloop.IOLoop.current().start()
