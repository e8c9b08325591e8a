"""A small upstream for proxy tests and benchmarks, run in the Jupyter test image instead of
Jupyter (launcher = "command"): it answers like Jupyter where notebox looks
({base_url}api/status), plus a tiny page ({base_url}hello) and a WebSocket echo
({base_url}echo) that sends every message back as it came (text or binary, any size).

usage: python3 echo.py BASE_URL [PORT]
"""
import sys

import tornado.ioloop
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


app = tornado.web.Application(
    [(BASE + "api/status", Status), (BASE + "hello", Hello), (BASE + "sw.js", ServiceWorker),
     (BASE + "echo", Echo)],
    websocket_max_message_size=256 << 20,
    websocket_ping_interval=None,
)
app.listen(PORT, address="0.0.0.0")
tornado.ioloop.IOLoop.current().start()
