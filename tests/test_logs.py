"""``streampi.logs.setup``: text or JSON lines on stderr, one line per event, in a fresh process."""

from __future__ import annotations

import calendar
import json
import subprocess
import sys
import time

import pytest

PROGRAM = """
import logging, sys, warnings
from streampi import logs
logs.setup(sys.argv[1], json=sys.argv[2] == "json")
logs.setup(sys.argv[1], json=sys.argv[2] == "json")  # twice: still one handler, one line per event
log = logging.getLogger("streampi.server")
log.debug("not shown at info")
log.info("serving %s with %d workers", "shapes_int8", 4)
log.warning("two\\nlines in one message", extra={"worker": 3, "odd": object()})
try:
    1 / 0
except ZeroDivisionError:
    logging.getLogger("streampi.workers").exception("worker %d failed", 2)
warnings.warn("something deprecated")
print("done", flush=True)
"""


def run(level: str, fmt: str) -> tuple[list[str], subprocess.CompletedProcess]:
    r = subprocess.run([sys.executable, "-c", PROGRAM, level, fmt], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "done\n"  # logs never go to stdout (--ready-json and --print-config own it)
    return r.stderr.splitlines(), r


def test_json_lines_one_object_per_event():
    started = time.time()
    lines, _ = run("info", "json")
    events = [json.loads(line) for line in lines]  # every line is a whole JSON object
    assert [e["level"] for e in events] == ["INFO", "WARNING", "ERROR", "WARNING"]
    info, warning, error, warned = events
    assert info["logger"] == "streampi.server" and info["message"] == "serving shapes_int8 with 4 workers"
    assert set(info) == {"ts", "level", "logger", "message", "pid"}
    ts = calendar.timegm(time.strptime(info["ts"], "%Y-%m-%dT%H:%M:%S.%fZ"))
    assert abs(ts - started) < 30 and info["ts"].endswith("Z")
    assert warning["message"] == "two\nlines in one message" and warning["worker"] == 3
    assert warning["odd"].startswith("<object object")  # not JSON: logged as text, not dropped
    assert error["logger"] == "streampi.workers" and error["message"] == "worker 2 failed"
    assert error["exc"].startswith("Traceback") and "ZeroDivisionError: division by zero" in error["exc"]
    assert warned["logger"] == "py.warnings" and "something deprecated" in warned["message"]


def test_text_one_line_per_event_with_the_traceback_folded_in():
    lines, _ = run("info", "text")
    assert len(lines) == 4
    assert lines[0] == "streampi: INFO: serving shapes_int8 with 4 workers"
    assert lines[1] == "streampi: WARNING: two | lines in one message"
    assert lines[2].startswith("streampi: ERROR: worker 2 failed | Traceback (most recent call last):")
    assert lines[2].endswith("ZeroDivisionError: division by zero")
    assert lines[3].startswith("streampi: WARNING: ") and "something deprecated" in lines[3]


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_levels_filter(fmt):
    lines, _ = run("debug", fmt)
    assert len(lines) == 5 and "not shown at info" in lines[0]
    lines, _ = run("error", fmt)
    assert len(lines) == 1 and "worker 2 failed" in lines[0]


def test_a_bad_level_is_a_clear_error():
    from streampi import logs

    with pytest.raises(ValueError, match="log level must be one of debug, info"):
        logs.setup("loud")
