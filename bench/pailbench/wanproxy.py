#!/usr/bin/python3
"""wanproxy.py: make a local S3 server look like a distant one.

This machine's kernel has no netem qdisc, so the shaping happens in user
space: a TCP forwarding proxy between every contender and the server that
(1) holds back the first byte of each HTTP response for --delay-ms (S3's
first-byte latency is tens of milliseconds) and (2) caps each connection at
--rate MB/s in each direction (--rate 0: no cap).

It forwards bytes, not HTTP: the request reaches the server exactly as the
client sent it, Host header included, so SigV4 signatures still verify.
A "response" starts with the first bytes the server sends after the client
sent some: HTTP/1.1 clients send a request, then wait for its whole answer
before the next one on the same connection (no pipelining), so that is
exact. (With "Expect: 100-continue" the interim 100 is delayed too, as a
real round trip would.)

It must never be the bottleneck: each direction of each connection is one
thread moving data with splice(2) through a pipe, so the bytes are never
copied into Python, and the GIL is released while they move. The harness
measures the proxy's own ceiling (no delay, no cap) and prints it.

Usage: wanproxy.py --upstream HOST:PORT [--port 0] [--delay-ms 20] [--rate 100]
Prints "PORT <n>" on stdout once listening. Runs until killed.
"""

import argparse
import fcntl
import os
import socket
import sys
import threading
import time

F_SETPIPE_SZ = 1031
CHUNK = 1 << 20


class Connection:
    def __init__(self, client, upstream, delay, rate):
        self.client = client
        self.upstream = upstream
        self.delay = delay
        self.rate = rate          # bytes per second per direction; 0 = none
        self.awaiting_response = False
        self.closed = threading.Event()
        self.done = 0
        self.lock = threading.Lock()

    def start(self):
        for src, dst, up in ((self.client, self.upstream, True),
                             (self.upstream, self.client, False)):
            threading.Thread(target=self.pump, args=(src, dst, up),
                             daemon=True).start()

    def pump(self, src, dst, up):
        rfd, wfd = os.pipe()
        try:
            fcntl.fcntl(wfd, F_SETPIPE_SZ, CHUNK)
        except OSError:
            pass
        # Token bucket: the time at which the next byte may go.
        next_free = time.monotonic()
        chunk = CHUNK
        if self.rate:
            chunk = max(64 << 10, min(CHUNK, int(self.rate * 0.005)))
        try:
            while True:
                n = os.splice(src.fileno(), wfd, chunk)
                if n == 0:
                    break
                if up:
                    # Request bytes: whatever the server sends next opens a response.
                    self.awaiting_response = True
                elif self.awaiting_response:
                    self.awaiting_response = False
                    if self.delay:
                        time.sleep(self.delay)
                if self.rate:
                    now = time.monotonic()
                    next_free = max(next_free, now) + n / self.rate
                    wait = next_free - now - n / self.rate
                    if wait > 0:
                        time.sleep(wait)
                left = n
                while left:
                    left -= os.splice(rfd, dst.fileno(), left)
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        except OSError:
            # A reset on one side: take the whole connection down.
            for s in (self.client, self.upstream):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        finally:
            os.close(rfd)
            os.close(wfd)
            with self.lock:
                self.done += 1
                last = self.done == 2
            if last:
                self.client.close()
                self.upstream.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", required=True, help="HOST:PORT")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--delay-ms", type=float, default=20.0)
    ap.add_argument("--rate", type=float, default=100.0,
                    help="MB/s per connection and direction (0: no cap)")
    args = ap.parse_args()
    host, _, port = args.upstream.rpartition(":")
    upstream_addr = (host or "127.0.0.1", int(port))

    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", args.port))
    lsock.listen(512)
    print(f"PORT {lsock.getsockname()[1]}", flush=True)
    delay = args.delay_ms / 1000.0
    rate = args.rate * 1e6

    while True:
        client, _ = lsock.accept()
        try:
            upstream = socket.create_connection(upstream_addr, timeout=10)
            upstream.settimeout(None)
        except OSError:
            client.close()
            continue
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        Connection(client, upstream, delay, rate).start()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
