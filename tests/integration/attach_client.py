"""A loopback HTTP client for attach tests:
`python -m tests.integration.attach_client PORT [PATH=ANSWER ...]`.

Runs inside the server's network namespace (the test starts it there), cycling through
GET /, /lookup?uid=65534 and /dns?name=svc.cgotrace.test (or the PATH=ANSWER pairs given:
ANSWER follows the last "=", without its newline) on fresh connections, each answer checked.
After every request it prints one line "ok N fail M" (flushed), and on a failure also
"failed PATH: reason". It stops when its stdin closes (the test's signal), then prints
"done ok N fail M".
"""

from __future__ import annotations

import http.client
import select
import sys

REQUESTS = (("/", b"ok\n"), ("/lookup?uid=65534", b"nobody\n"),
            ("/dns?name=svc.cgotrace.test", b"127.0.0.77\n"))
TIMEOUT = 20.0  # an attached server is slower; a request this late counts as failed


def get(port: int, path: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {body[:100]!r}")
        return body
    finally:
        conn.close()


def main() -> int:
    port = int(sys.argv[1])
    requests = tuple((path, answer.encode() + b"\n") for path, _, answer in
                     (arg.rpartition("=") for arg in sys.argv[2:])) or REQUESTS
    ok = fail = 0
    i = 0
    while not select.select([sys.stdin], [], [], 0)[0]:
        path, want = requests[i % len(requests)]
        i += 1
        try:
            body = get(port, path)
            if body != want:
                raise RuntimeError(f"answer {body[:100]!r}, expected {want!r}")
            ok += 1
        except Exception as e:
            fail += 1
            print(f"failed {path}: {type(e).__name__}: {e}", flush=True)
        print(f"ok {ok} fail {fail}", flush=True)
    print(f"done ok {ok} fail {fail}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
