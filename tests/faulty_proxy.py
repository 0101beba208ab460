"""An HTTP proxy in front of a real MLflow server that fails some requests, for the retry tests.

    python tests/faulty_proxy.py TARGET_URL PORT --mode 503|reset --every 15 --burst 5
    python tests/faulty_proxy.py TARGET_URL PORT --mode lose-answer --path runs/create --burst 1

Every `every`-th request starts a burst of `burst` consecutive failures, each before the request
reaches the server (a 503 answer, or the connection closed without one). With `lose-answer`, the
first `burst` requests whose path contains `path` reach the server, which commits them, and then the
connection is closed before the answer gets back. It prints `ready`, then a line per injected failure.
"""

import argparse
import http.client
import http.server
import socket
import sys
import threading
import urllib.parse


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("target")
    parser.add_argument("port", type=int)
    parser.add_argument("--mode", choices=["503", "reset", "lose-answer"], required=True)
    parser.add_argument("--path", default="", help="lose-answer: only requests whose path contains this")
    parser.add_argument("--every", type=int, default=15)
    parser.add_argument("--burst", type=int, default=5)
    args = parser.parse_args()
    target = urllib.parse.urlsplit(args.target)
    lock = threading.Lock()
    state = {"count": 0, "failing": 0}

    def should_fail(path: str) -> bool:
        with lock:
            if args.mode == "lose-answer":
                if args.path in path and state["count"] < args.burst:
                    state["count"] += 1
                    return True
                return False
            state["count"] += 1
            if state["failing"] == 0 and state["count"] % args.every == 0:
                state["failing"] = args.burst
            if state["failing"]:
                state["failing"] -= 1
                return True
            return False

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a) -> None:
            pass

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            failing = should_fail(self.path)
            if failing and args.mode == "lose-answer":
                self._upstream(body)  # the server does the work ...
                print(f"fail {args.mode} {self.command} {self.path}", flush=True)
                self.close_connection = True  # ... and its answer is lost on the way back
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if failing:
                print(f"fail {args.mode} {self.command} {self.path}", flush=True)
                if args.mode == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    self.close_connection = True
                    self.connection.close()
                    return
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            response, data = self._upstream(body)
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _upstream(self, body):
            upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            data = response.read()
            upstream.close()
            return response, data

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _forward

    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print("ready", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        sys.stdout.flush()


if __name__ == "__main__":
    main()
