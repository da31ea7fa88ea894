#!/usr/bin/env python3
"""Send the same raw requests to the Python waitress and to this port, and print every
difference in the answers (the Date header aside).

    pip install waitress
    cargo build --release
    PYTHONPATH=../shared/bench/peers python3 -m waitress --listen=127.0.0.1:18201 hello_wsgi:app &
    target/release/waitress-serve --listen=127.0.0.1:18202 hello &
    python3 tools/compare_wire.py 18201 18202

Both must serve the same hello-world application. Expected differences are the README's
"Differences from waitress" and what waitress's main has and its latest release has not.
"""
import re
import socket
import sys

cases = {
 "simple11": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
 "simple10": b"GET / HTTP/1.0\r\n\r\n",
 "ka10": b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
 "close11": b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
 "pipelined": b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
 "lowercase": b"get / HTTP/1.1\r\n\r\n",
 "badheader": b"GET / HTTP/1.1\r\nfoo : bar\r\n\r\n",
 "dup_host": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
 "te_gzip": b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
 "te_double": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
 "bad_cl": b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello",
 "bad_chunk": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
 "bad_ext": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\r\nhello\r\n0\r\n\r\n",
 "chunk_noterm": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
 "chunked_ok": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
 "fold_first": b"GET / HTTP/1.1\r\n Host: x\r\n\r\n",
 "bare_lf": b"GET / HTTP/1.1\r\nHost: x\nX: y\r\n\r\n",
 "version84": b"GET / HTTP/8.4\r\n\r\n",
 "no_version": b"GET /\r\n\r\n",
 "garbage": b"\x00\x01garbage\r\n\r\n",
 "big_header": b"GET / HTTP/1.1\r\nX: " + b"a"*270000 + b"\r\n\r\n",
 "expect": b"POST / HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\nConnection: close\r\n\r\nok",
 "cl_te": b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /x HTTP/1.1\r\n\r\n",
 "abs_uri": b"GET http://example.com/x?y HTTP/1.1\r\nConnection: close\r\n\r\n",
 "head": b"HEAD / HTTP/1.1\r\nConnection: close\r\n\r\n",
 "bad_uri": b"GET http://[::1/ HTTP/1.1\r\n\r\n",
}
def fetch(port, data):
    s = socket.create_connection(("127.0.0.1", port)); s.settimeout(1.5)
    s.sendall(data)
    out = b""
    try:
        while True:
            d = s.recv(65536)
            if not d: out += b"<EOF>"; break
            out += d
    except socket.timeout:
        out += b"<OPEN>"
    except ConnectionResetError:
        out += b"<RESET>"
    s.close()
    return re.sub(rb"Date: [^\r]*", b"Date: X", out)
python_port, rust_port = (int(p) for p in sys.argv[1:3])
diffs = 0
for name, data in cases.items():
    a, b = fetch(python_port, data), fetch(rust_port, data)
    if a != b:
        diffs += 1
        print("DIFF", name); print("  py:", a[:400]); print("  rs:", b[:400])
print("cases", len(cases), "diffs", diffs)
