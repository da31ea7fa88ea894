#!/usr/bin/env python3
"""List the waitress tests that the port neither carries over nor explains.

tools/waitress_tests.txt names every test function of waitress's test suite. A test counts as
handled when the Rust files that port its module contain either a function of the same name
(in snake_case, as rustc wants it) or a comment line that names it (the "why it cannot carry
over" notes at the top of each test module). Prints the gaps per waitress file and a summary;
exits 1 when there is any gap, so .ci/run can hold the line.

    python3 tools/test_gaps.py            # summary and every gap
    python3 tools/test_gaps.py --counts   # the summary only
    python3 tools/test_gaps.py --root DIR # check another checkout against this list
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Which Rust files port which waitress test module; integration tests under tests/ count for all.
MODULES = {
    "test_adjustments.py": ["src/adjustments.rs"],
    "test_buffers.py": ["src/buffers.rs"],
    "test_channel.py": ["src/channel.rs"],
    "test_functional.py": ["tests/functional.rs"],
    "test_init.py": ["src/lib.rs"],
    "test_parser.py": ["src/parser.rs"],
    "test_proxy_headers.py": ["src/proxy_headers.rs"],
    "test_receiver.py": ["src/receiver.rs"],
    "test_regression.py": ["src/channel.rs", "src/parser.rs"],
    "test_runner.py": ["src/runner.rs", "src/apps.rs"],
    "test_server.py": ["src/server.rs"],
    "test_task.py": ["src/task.rs", "src/app.rs"],
    "test_trigger.py": ["src/trigger.rs"],
    "test_utilities.py": ["src/utilities.rs"],
    "test_wasyncore.py": ["src/wasyncore.rs"],
}


def rust_names(name):
    """The spellings a port may give waitress's test name: snake_case, with or without
    waitress's runs of underscores (`test___len__`)."""
    snake = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()
    return {name.lower(), snake, re.sub(r"_+", "_", snake).strip("_")}


def handled_names(paths):
    """Names defined as functions, and words on comment lines, in the given files."""
    functions, mentioned = set(), set()
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            stripped = line.strip()
            # A test function, or a named case of a table-driven test (`test_x: input => ...`).
            match = re.match(r"(?:pub(?:\(crate\))?\s+)?fn\s+(\w+)", stripped) or re.match(
                r"(test\w*)\s*:[^:]", stripped
            )
            if match:
                functions.add(match.group(1))
            elif stripped.startswith("//"):
                mentioned.update(re.findall(r"\w+", stripped))
    return functions, mentioned


def main():
    args = sys.argv[1:]
    counts_only = "--counts" in args
    root = pathlib.Path(args[args.index("--root") + 1]) if "--root" in args else ROOT
    listed = ROOT / "tools" / "waitress_tests.txt"
    tests = {}
    for line in listed.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        module, _class, name = line.split()
        tests.setdefault(module, {})[name] = None  # each name once per module
    integration = sorted((root / "tests").glob("**/*.rs"))
    total_gaps = 0
    print(f"{'waitress file':24} {'tests':>5} {'ported':>6} {'noted':>5} {'gaps':>4}")
    for module in sorted(tests):
        paths = [root / p for p in MODULES[module]] + integration
        functions, mentioned = handled_names(paths)
        ported = noted = 0
        gaps = []
        for name in tests[module]:
            spellings = rust_names(name)
            if spellings & functions:
                ported += 1
            elif name in mentioned or spellings & mentioned:
                noted += 1
            else:
                gaps.append(name)
        total_gaps += len(gaps)
        print(f"{module:24} {len(tests[module]):5} {ported:6} {noted:5} {len(gaps):4}")
        if gaps and not counts_only:
            for name in gaps:
                print(f"    gap: {name}")
    print(f"{total_gaps} gaps")
    return 1 if total_gaps else 0


if __name__ == "__main__":
    sys.exit(main())
