#!/usr/bin/env python3
"""Send the same raw requests to the Python waitress and to this port, both serving the echo
application, and report every difference in the answers.

Two modes:

    # the fixed cases below, servers started by hand
    python3 tools/compare_wire.py PY_PORT RS_PORT

    # N requests mutated from a small grammar of anomalies (seeded: the same seed sends the
    # same bytes), both servers started by the tool; waitress's main branch is the reference
    PYTHONPATH=<waitress checkout>/src python3 tools/compare_wire.py --mutate 3000 --seed 1 \
        --spawn target/release/waitress-serve
    # or the release from PyPI (3.0.2), whose missing checks are then counted as known
    pip install waitress && python3 tools/compare_wire.py --release --mutate 3000 ...

The Python side serves `echo_app` below (waitress's tests/fixtureapps/echo.py, rewritten), the
port its built-in `echo`. Answers are compared byte for byte once the Date value, the server
port in the echoed JSON and the order of the JSON keys are made equal, and a reset counts as a
close. Every mutated request is followed, most of the time, by pipelined requests, the last
asking to close: a difference in how much of the stream a request consumes shows as a
different number of answers. Differences that the README's "Differences from waitress" list
explains are counted under its entry (the generator labels the requests that use such an
anomaly); the rest are printed, a few examples each.
"""
import concurrent.futures
import json
import random
import re
import socket
import subprocess
import sys
import time

# ---------------------------------------------------------------------------------------------
# The Python side's application

def echo_app(environ, start_response):
    """The request as JSON, a blank line, then its body (as waitress's echo fixture)."""
    cl = environ.get("CONTENT_LENGTH")
    body = environ["wsgi.input"].read(int(cl) if cl is not None else None)
    meta = {key.lower(): environ[name] for key, name in (
        ("method", "REQUEST_METHOD"), ("path_info", "PATH_INFO"),
        ("script_name", "SCRIPT_NAME"), ("query_string", "QUERY_STRING"))}
    meta["content_length"] = str(len(body))
    meta["scheme"] = environ["wsgi.url_scheme"]
    for key in ("REMOTE_ADDR", "REMOTE_HOST", "SERVER_PORT", "SERVER_NAME"):
        meta[key.lower()] = environ[key]
    meta["headers"] = {k[5:]: v for k, v in environ.items() if k.startswith("HTTP_")}
    out = json.dumps(meta).encode("utf8") + b"\r\n\r\n" + body
    start_response("200 OK", [("Content-Length", str(len(out))), ("Content-Type", "text/plain")])
    return [out]


def serve_python(port):
    import logging
    import waitress
    # waitress logs the exceptions its parser lets through; the comparison shows them as drops.
    logging.basicConfig(level=logging.CRITICAL)
    print("waitress from", waitress.__file__, file=sys.stderr, flush=True)
    waitress.serve(echo_app, listen=f"127.0.0.1:{port}", _quiet=True)

# ---------------------------------------------------------------------------------------------
# Talking to a server

def fetch(port, data, timeout):
    """Everything the server answers to `data`, then <EOF>/<RESET> or <OPEN> (still open
    after `timeout` seconds of silence)."""
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(timeout)
    out = b""
    try:
        s.sendall(data)
        while True:
            d = s.recv(65536)
            if not d:
                out += b"<EOF>"
                break
            out += d
    except socket.timeout:
        out += b"<OPEN>"
    except (ConnectionResetError, BrokenPipeError):
        out += b"<RESET>"
    finally:
        s.close()
    return out


ECHO_JSON = re.compile(rb'\{"method": .*?\}\}(?=\r\n\r\n)', re.S)


def normalise(answer):
    answer = re.sub(rb"\r\nDate: [^\r]*", b"\r\nDate: X", answer)
    answer = answer.replace(b"<RESET>", b"<EOF>")

    def canonical(m):
        try:
            meta = json.loads(m.group(0))
        except ValueError:
            return m.group(0)
        meta.pop("server_port", None)
        return json.dumps(meta, sort_keys=True).encode()
    return ECHO_JSON.sub(canonical, answer)


def outline(answer):
    """The status codes in order and how the exchange ended: `200 400 EOF`."""
    codes = re.findall(rb"HTTP/\d\.\d (\d{3}) ", answer)
    end = answer[answer.rfind(b"<"):].strip(b"<>") if answer.endswith(b">") else b"?"
    return " ".join(c.decode() for c in codes + [end]) or "nothing"

# ---------------------------------------------------------------------------------------------
# The fixed cases

CASES = {
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
    "big_header": b"GET / HTTP/1.1\r\nX: " + b"a" * 270000 + b"\r\n\r\n",
    "expect": b"POST / HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\nConnection: close\r\n\r\nok",
    "cl_te": b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /x HTTP/1.1\r\n\r\n",
    "abs_uri": b"GET http://example.com/x?y HTTP/1.1\r\nConnection: close\r\n\r\n",
    "head": b"HEAD / HTTP/1.1\r\nConnection: close\r\n\r\n",
    "bad_uri": b"GET http://[::1/ HTTP/1.1\r\n\r\n",
    "non_ascii_uri": b"GET /\x80\xff HTTP/1.1\r\n\r\n",
}

# ---------------------------------------------------------------------------------------------
# The mutation grammar. Each choice is (weight, bytes, label); a label names the README
# difference the choice can trigger, so that its answers may differ.

KNOWN = {
    "te+cl": "Content-Length together with chunked",
    "chunk-huge": "Numbers past 64 bits",
    "chunk-lf": "Trailing newline in digit checks",
    "bracket": "An unbalanced [ or ], a bracketed host that is not IPv6",
    "expect": "Expect: 100-continue on a request complete with its head",
    "long-chunk-line": "A chunk-size line longer than 4096 bytes",
    "head": "No response body for HEAD, 1xx, 204 and 304",
}
# What waitress's main checks and its 3.0.2 release does not (`--release` counts them as known).
KNOWN_RELEASE = {
    "dup-singleton": "(3.0.2) no duplicate Host/Content-Length/Content-Type check",
    "chunked-twice": "(3.0.2) no check of chunked named twice",
}

METHODS = [(8, b"GET", ""), (6, b"POST", ""), (1, b"PUT", ""), (1, b"HEAD", "head"),
           (1, b"get", ""), (1, b"G\x00T", ""), (1, b"OPTIONS", "")]
TARGETS = [(8, b"/", ""), (3, b"/a/b?x=1&y#frag", ""), (1, b"/%41%zz%4", ""), (1, b"*", ""),
           (2, b"//x/y?z", ""), (2, b"http://example.com/p?q", ""), (1, b"HTTP://EX:80/p", ""),
           (1, b"http://[::1]:8/x", ""), (1, b"http://[v1.x]/", ""),
           (1, b"http://[::1/x", "bracket"), (1, b"http://::1]/x", "bracket"),
           (1, b"http://[zz]/", "bracket"), (1, b"ftp://[1.2.3.4]/x", "bracket"),
           (2, b"/\x80\xff", ""), (1, b"//\xd0", ""), (1, b"/caf\xe9?q=\xe9", ""),
           (1, b"/a\tb", ""), (1, b"", ""), (1, b"/a b", ""), (1, b"?x", "")]
VERSIONS = [(12, b" HTTP/1.1", ""), (3, b" HTTP/1.0", ""), (1, b" HTTP/8.4", ""), (1, b"", ""),
            (1, b" HTTP/1.1 ", ""), (1, b" http/1.1", ""), (1, b" HTTP/1", ""),
            (1, b" HTTP/1.10", "")]
EOLS = [(20, b"\r\n", ""), (1, b"\n", ""), (1, b"\r", ""), (1, b" \r\n", "")]
HEADERS = [(4, b"Host: example.com", ""), (1, b"Host: other", ""), (2, b"Connection: close", ""),
           (1, b"Connection: keep-alive", ""), (1, b"Expect: 100-continue", "expect"),
           (3, b"X-Foo: bar", ""), (1, b"foo : bar", ""), (1, b"foo:\x0bbar", ""),
           (1, b"X_Foo: under", ""), (1, b" folded", ""), (1, b"\tfolded", ""),
           (1, b"X-Latin: caf\xe9", ""), (1, b"Content-Type: a", ""), (1, b"X-Empty:", ""),
           (1, b"X-Ctl: a\x00b", ""), (1, b"Trailer: X-T", ""), (1, b"X-Long: " + b"a" * 3000, ""),
           (1, b"Accept: */*", ""), (1, b": novalue", ""), (1, b"X-Q: \"quoted\"", ""),
           (1, b"X-CR: a\rb", ""), (1, b"X\x80: y", ""), (1, b"transfer-encoding: chunked", ""),
           (1, b"Content-Length: 0", ""), (1, b"X-Tab:\tvalue\t", ""), (1, b"X-Obs: a\r\n b", "")]
CONTENT_LENGTHS = [(1, b"+5", ""), (1, b"-1", ""), (1, b"0x5", ""), (1, b" 5", ""),
                   (1, b"5, 5", ""), (1, b"99999999999999999999999", ""), (1, b"", ""),
                   (1, b"5\x0b", "")]
TRANSFER_ENCODINGS = [(1, b"Chunked", ""), (1, b"chunked, chunked", "chunked-twice"), (1, b"gzip, chunked", ""),
                      (1, b"chunked, gzip", ""), (1, b"chunked\x85", ""), (1, b"identity", ""),
                      (1, b" chunked", ""), (1, b"chunked,", ""), (1, b",chunked", "")]


def pick(rng, choices, labels):
    weights = [w for w, _, _ in choices]
    _, value, label = rng.choices(choices, weights)[0]
    if label:
        labels.add(label)
    return value


def chunked_body(rng, labels):
    out = b""
    for _ in range(rng.randint(0, 3)):
        data = bytes(rng.choice(b"abcdefXYZ\r\n") for _ in range(rng.randint(1, 20)))
        size = b"%x" % len(data)
        roll = rng.random()
        if roll < 0.05:
            size = size.upper().rjust(4, b"0")
        elif roll < 0.10:
            size += rng.choice([b";a=b", b';a="q\\"x"', b";a", b";a=", b"; a", b";\x01"])
        elif roll < 0.13:
            size = rng.choice([b"0x" + size, b"+" + size, b" " + size, b"g"])
        elif roll < 0.15:
            size, data = b"1" + b"0" * 17, data
            labels.add("chunk-huge")
        elif roll < 0.16:
            size += b";" + b"x" * 5000
            labels.add("long-chunk-line")
        end = b"\r\n" if rng.random() > 0.05 else rng.choice([b"\n", b"XX", b""])
        if end == b"\n":
            labels.add("chunk-lf")
        eol = b"\r\n" if rng.random() > 0.03 else b"\n"
        if eol == b"\n":
            labels.add("chunk-lf")
        out += size + eol + data + end
    roll = rng.random()
    if roll < 0.85:
        out += b"0\r\n\r\n"
    elif roll < 0.90:
        out += b"0\r\nX-T: 1\r\n\r\n"
    elif roll < 0.94:
        out += b"0\n\r\n"
        labels.add("chunk-lf")
    elif roll < 0.97:
        out += b"0\r\n"
    return out


def mutated_request(rng):
    """One request (with pipelined followers) and the labels of the anomalies it uses."""
    labels = set()
    eol = pick(rng, EOLS, labels) if rng.random() < 0.1 else b"\r\n"
    line = pick(rng, METHODS, labels) + b" " + pick(rng, TARGETS, labels)
    version = pick(rng, VERSIONS, labels)
    head = [line + version]
    for _ in range(rng.randint(0, 4)):
        head.append(pick(rng, HEADERS, labels))
    body = bytes(rng.choice(b"hello world\r\n") for _ in range(rng.randint(0, 12)))
    framing = rng.random()
    if framing < 0.30:
        body = b""
    elif framing < 0.50:
        head.append(b"Content-Length: %d" % len(body))
    elif framing < 0.55:
        head.append(b"Content-Length: %d" % max(0, len(body) - rng.randint(1, 3)))
    elif framing < 0.57:
        head.append(b"Content-Length: %d" % (len(body) + 2))
    elif framing < 0.63:
        head.append(b"Content-Length: " + pick(rng, CONTENT_LENGTHS, labels))
    elif framing < 0.65:
        head += [b"Content-Length: 3", b"Content-Length: 3"]
    elif framing < 0.85:
        head.append(b"Transfer-Encoding: chunked")
        body = chunked_body(rng, labels)
        if rng.random() < 0.1:
            head.append(b"Content-Length: %d" % rng.randint(0, 9))
    else:
        head.append(b"Transfer-Encoding: " + pick(rng, TRANSFER_ENCODINGS, labels))
        body = chunked_body(rng, labels)
    if rng.random() < 0.3:
        rest = head[1:]
        rng.shuffle(rest)
        head = head[:1] + rest
    names = [h.split(b":")[0].lower() for h in head[1:] if not h[:1].isspace()]
    if any(names.count(n) > 1 for n in (b"host", b"content-length", b"content-type")):
        labels.add("dup-singleton")
    te = [h for h in head[1:] if h.lower().startswith(b"transfer-encoding:")]
    if b",".join(te).lower().count(b"chunked") > 1:
        labels.add("chunked-twice")
    if te and b"content-length" in names:
        labels.add("te+cl")
    lines = [h + (eol if rng.random() < 0.5 else b"\r\n") for h in head]
    request = b"".join(lines) + b"\r\n" + body
    if rng.random() < 0.05:
        request = b"\r\n" + request  # blank lines before a request are allowed
    if rng.random() < 0.05:
        request += b"\r\n"
    roll = rng.random()
    if roll < 0.6:
        request += b"GET /next HTTP/1.1\r\nConnection: close\r\n\r\n"
    elif roll < 0.85:
        request += b"GET /next HTTP/1.1\r\n\r\nGET /last HTTP/1.1\r\nConnection: close\r\n\r\n"
    return request, labels

# ---------------------------------------------------------------------------------------------


def free_port():
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port >= 10000:  # five digits on both sides, so echoed lengths stay equal
            return port


def wait_listening(port, deadline=20):
    end = time.time() + deadline
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"nothing listens on {port}")


def compare(py_port, rs_port, requests, timeout):
    def both(item):
        return item, fetch(py_port, item[1], timeout), fetch(rs_port, item[1], timeout)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        yield from pool.map(both, requests)


def main(argv):
    mutate = seed = spawn = None
    args = list(argv)
    while args and args[0].startswith("--"):
        flag = args.pop(0)
        if flag == "--serve-python":
            return serve_python(int(args.pop(0)))
        elif flag == "--mutate":
            mutate = int(args.pop(0))
        elif flag == "--seed":
            seed = int(args.pop(0))
        elif flag == "--spawn":
            spawn = args.pop(0)
        elif flag == "--release":
            KNOWN.update(KNOWN_RELEASE)
        else:
            sys.exit(__doc__)
    servers = []
    if spawn:
        py_port, rs_port = free_port(), free_port()
        servers.append(subprocess.Popen([sys.executable, __file__, "--serve-python", str(py_port)]))
        servers.append(subprocess.Popen([spawn, f"--listen=127.0.0.1:{rs_port}", "echo"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    elif len(args) == 2:
        py_port, rs_port = int(args[0]), int(args[1])
    else:
        sys.exit(__doc__)
    try:
        wait_listening(py_port)
        wait_listening(rs_port)
        if mutate is None:
            return fixed_cases(py_port, rs_port)
        return mutation_run(py_port, rs_port, mutate, 1 if seed is None else seed)
    finally:
        for server in servers:
            server.terminate()
            server.wait()


def fixed_cases(py_port, rs_port):
    diffs = 0
    for (name, data), a, b in compare(py_port, rs_port, [(n, CASES[n]) for n in CASES], 1.5):
        a, b = normalise(a), normalise(b)
        if a != b:
            diffs += 1
            print("DIFF", name)
            print("  py:", a[:400])
            print("  rs:", b[:400])
    print("cases", len(CASES), "diffs", diffs)


def mutation_run(py_port, rs_port, count, seed):
    rng = random.Random(seed)
    requests = [(i,) + mutated_request(rng) for i in range(count)]
    same = 0
    explained = {}
    unexplained = {}
    started = time.time()
    for (i, data), a, b in compare(py_port, rs_port, [(r[0], r[1]) for r in requests], 0.5):
        labels = requests[i][2]
        a, b = normalise(a), normalise(b)
        if a == b:
            same += 1
            continue
        known = sorted(labels & KNOWN.keys())
        if known:
            explained[known[0]] = explained.get(known[0], 0) + 1
            continue
        key = f"py: {outline(a)}  |  rs: {outline(b)}"
        unexplained.setdefault(key, []).append((i, data, a, b))
    print(f"seed {seed}: {count} requests in {time.time() - started:.0f} s")
    print(f"  identical answers:        {same} ({100 * same / count:.1f} %)")
    for label, n in sorted(explained.items(), key=lambda kv: -kv[1]):
        print(f"  differ, README explains:  {n:5}  {KNOWN[label]}")
    total = sum(len(v) for v in unexplained.values())
    print(f"  differ, unexplained:      {total}")
    for key, cases in sorted(unexplained.items(), key=lambda kv: -len(kv[1])):
        print(f"\n  {len(cases)} x {key}")
        for i, data, a, b in cases[:3]:
            print(f"    #{i} request: {data[:300]!r}")
            print(f"        py: {a[:300]!r}")
            print(f"        rs: {b[:300]!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
