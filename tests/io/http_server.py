#!/usr/bin/env python3
"""Test HTTP server for the io tests (stdlib only). Binds 127.0.0.1 on a port the OS picks and prints it.

Serves files under --root with Range support (206 / 416) and logs one line per request to --log
("<path> range=<Range header or ->"), written and flushed before the response so the test can count requests.

Path prefixes select a misbehaviour; the rest of the path names the file:
  /cut/<N>/<file>          first request for this path: headers for the whole answer, N bytes, then the
                           connection is cut; later requests are served normally
  /cutalways/<N>/<file>    every request is cut after N bytes of its body
  /stall/<N>/<file>        first request: N bytes, then silence for 60 s; later requests normal
  /fail/<code>/<K>/<file>  the first K requests get HTTP <code>; later requests normal
  /norange/<file>          ignores Range and always answers 200 with the whole file
A file that does not exist gets 404.
"""
import argparse
import os
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

seen = {}
seen_lock = threading.Lock()


def count_request(path):
    with seen_lock:
        seen[path] = seen.get(path, 0) + 1
        return seen[path]


class Handler(BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):  # keep the test output clean
        pass

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        rng = self.headers.get("Range")
        with open(self.server.log_path, "a") as log:
            log.write(f"{path} range={rng or '-'}\n")
        n = count_request(path)

        cut = stall = None
        honour_range = True
        m = re.match(r"^/(cut|cutalways|stall)/(\d+)(/.*)$", path)
        if m:
            mode, limit, path = m.group(1), int(m.group(2)), m.group(3)
            if mode == "cutalways" or n == 1:
                cut, stall = (limit, None) if mode != "stall" else (None, limit)
        m = re.match(r"^/fail/(\d+)/(\d+)(/.*)$", path)
        if m:
            code, times, path = int(m.group(1)), int(m.group(2)), m.group(3)
            if n <= times:
                self.send_error(code)
                return
        if path.startswith("/norange/"):
            honour_range, path = False, path[len("/norange"):]

        file = os.path.join(self.server.root, path.lstrip("/"))
        if not os.path.isfile(file):
            self.send_error(404)
            return
        with open(file, "rb") as f:
            data = f.read()
        size = len(data)
        start = 0
        m = re.match(r"^bytes=(\d+)-(\d*)$", rng or "") if honour_range else None
        if m:
            start = int(m.group(1))
            end = int(m.group(2)) if m.group(2) else size - 1
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = data[start:end + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{start + len(body) - 1}/{size}")
        else:
            body = data
            self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes" if honour_range else "none")
        self.end_headers()
        try:
            if cut is not None:
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                return
            if stall is not None:
                self.wfile.write(body[:stall])
                self.wfile.flush()
                time.sleep(60)
                self.close_connection = True
                return
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--log", required=True)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.root = args.root
    server.log_path = args.log
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
