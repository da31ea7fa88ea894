#!/usr/bin/env bash
# User-space instructions the server spends per keep-alive hello-world request, counted by
# valgrind's callgrind: steady where requests per second are not (these machines are shared and
# noisy), so a change to the per-request path can be weighed in a minute.
#
#   tools/instructions_per_request.sh [BINARY] [REQUESTS]
#   HEADERS=browser tools/instructions_per_request.sh ...   # nine headers as a browser sends
#
# BINARY defaults to target/release/waitress-serve (build it first), REQUESTS to 5000. Each
# request is wrk's `GET /` with only a Host header, or with HEADERS=browser a `GET /a/b?x=1`
# with the nine headers of a browser's page load (User-Agent, Accept, ...). The server
# runs `hello` under callgrind twice, serving 200 and then 200 + REQUESTS requests sent one after
# the other on one connection by a small Python client; the difference of the two totals, divided
# by REQUESTS, leaves out start-up and shutdown. Counted: every thread of the server, user space
# only (not the kernel's TCP path, which is most of the real time per request). Runs of the same
# binary mostly agree within 1 %, now and then one is 5 % off (how the threads interleave
# changes the poll rounds); compare several runs of each build.
set -euo pipefail
binary=${1:-target/release/waitress-serve}
requests=${2:-5000}
port=${PORT:-19501}
case "${HEADERS:-}" in
  "" | browser) ;;
  *) echo "HEADERS is 'browser' or unset" >&2; exit 2 ;;
esac
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 2; }
[ -x "$binary" ] || { echo "no server binary at $binary (cargo build --release)" >&2; exit 2; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

client() { # N: send N GETs one after the other, reading each response whole
  python3 - "$port" "$1" "${HEADERS:-}" <<'EOF'
import socket, sys
port, n, headers = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port
if headers == "browser":
    request = (
        b"GET /a/b?x=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
        b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0\r\n"
        b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
        b"Accept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\n"
        b"Connection: keep-alive\r\nUpgrade-Insecure-Requests: 1\r\n"
        b"Sec-Fetch-Dest: document\r\nSec-Fetch-Mode: navigate\r\n\r\n" % port
    )
conn = socket.create_connection(("127.0.0.1", port))
pending = b""
for _ in range(n):
    conn.sendall(request)
    while True:
        end = pending.find(b"\r\n\r\n")
        if end >= 0:
            head = pending[:end].split(b"\r\n")
            length = [int(h.split(b":")[1]) for h in head if h.lower().startswith(b"content-length:")]
            if length and len(pending) >= end + 4 + length[0]:
                pending = pending[end + 4 + length[0]:]
                break
        data = conn.recv(65536)
        if not data:
            sys.exit("the server closed the connection")
        pending += data
EOF
}

total() { # N: callgrind's total for a server that served N requests
  valgrind --tool=callgrind --callgrind-out-file="$out/cg.$1" \
    "$binary" --listen="127.0.0.1:$port" --threads=4 hello >/dev/null 2>"$out/valgrind.$1" &
  local pid=$!
  for _ in $(seq 150); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $port)).close()" 2>/dev/null && break
    sleep 0.2
  done
  client "$1"
  kill -INT "$pid"
  wait "$pid" || true
  awk '/^totals:/ {print $2}' "$out/cg.$1"
}

base=$(total 200)
more=$(total $((200 + requests)))
echo "$(( (more - base) / requests )) user-space instructions per request ($binary, $requests requests${HEADERS:+, $HEADERS headers})"
