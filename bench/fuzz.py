"""The longer fuzz run: the properties of tests/test_fuzz.py with many more examples, plus a
plain mutation loop over valid messages; prints executions, time and findings per target.

    .venv/bin/python bench/fuzz.py [--scale 20] [--mutations 200000] [--seconds 600]

A finding is any exception other than the documented ProtocolError/FrameError, or a broken
property; each is printed with the input that caused it (make it a corpus entry in
tests/test_limits.py). Exit code 1 when anything was found.
"""

from __future__ import annotations

import argparse
import collections
import random
import sys
import time
from pathlib import Path

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import test_fuzz as fz  # noqa: E402

from streampi.protocol import Limits  # noqa: E402


def run_property(name: str, strategies: tuple, check, n: int, limit_s: float, findings: list) -> dict:
    counts: collections.Counter[str] = collections.Counter()
    t0 = time.perf_counter()

    @settings(max_examples=n, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
    @given(st.tuples(*strategies))
    def prop(args):
        if time.perf_counter() - t0 > limit_s:
            return
        counts["executions"] += 1
        try:
            counts[check(*args)] += 1
        except Exception as exc:  # a finding: keep going, record it
            counts["findings"] += 1
            findings.append((name, f"{type(exc).__name__}: {str(exc)[:300]}", repr(args)[:400]))

    prop()
    return {"target": name, **counts, "seconds": time.perf_counter() - t0}


def mutation_loop(n: int, limit_s: float, findings: list, seed: int = 1) -> dict:
    """Valid messages with random bytes flipped, cut or inserted, as fast as the decoder goes."""
    rng = random.Random(seed)
    counts: collections.Counter[str] = collections.Counter()
    t0 = time.perf_counter()
    limits = fz.SMALL  # a 512-byte header limit: large one-part messages take the marker search
    for i in range(n):
        if i % 1000 == 0 and time.perf_counter() - t0 > limit_s:
            break
        w, h = rng.randint(1, 24), rng.randint(1, 24)
        head = {"v": 1, "stream": "cam", "seq": rng.getrandbits(64), "fmt": "rgb", "w": w, "h": h, "ts": 1.5,
                "meta": {"k": [1, {"x": "y"}]}}
        payload = bytes(w * h * 3)
        one = rng.random() < 0.5
        if one:
            head["data"] = payload
        raw = bytearray(msgpack.packb(head, use_bin_type=True))
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(raw) + 1)
            op = rng.randrange(3)
            if op == 0 and at < len(raw):
                raw[at] = rng.randrange(256)
            elif op == 1:
                del raw[at:at + rng.randint(1, 8)]
            else:
                raw[at:at] = rng.randbytes(rng.randint(1, 6))
        parts = [bytes(raw)] if one else [bytes(raw), payload]
        counts["executions"] += 1
        try:
            counts[fz.check_decode(parts, limits)] += 1
        except Exception as exc:
            counts["findings"] += 1
            findings.append(("mutation loop", f"{type(exc).__name__}: {str(exc)[:300]}", repr(parts)[:400]))
    return {"target": "decoder, mutation loop", **counts, "seconds": time.perf_counter() - t0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=20, help="examples per property: this times the default run's")
    ap.add_argument("--mutations", type=int, default=200_000, help="iterations of the plain mutation loop")
    ap.add_argument("--seconds", type=float, default=600, help="time limit per target")
    args = ap.parse_args()
    s = args.scale
    findings: list = []
    targets = [
        ("decoder, random bytes", (fz.raw_parts,), fz.check_decode, 1500),
        ("decoder, random headers", (fz.headers(),), fz.check_decode, 800),
        ("decoder, mutated messages", (fz.mutated(),), fz.check_decode, 1500),
        ("decoder, default limits", (fz.headers(),), lambda p: fz.check_decode(p, Limits()), 300),
        ("Preprocessor, raw frames", (fz.preprocessors, fz.raw_frames()),
         lambda pre, f: fz.check_preprocess(pre, *f), 800),
        ("Preprocessor, mutated JPEGs", (fz.preprocessors, fz.jpegs()),
         lambda pre, d: fz.check_preprocess(pre, d, "jpeg", None, None), 400),
    ]
    rows = []
    for name, strategies, check, n in targets:
        rows.append(run_property(name, strategies, check, int(n * s), args.seconds, findings))
        print(_row(rows[-1]), flush=True)
    rows.append(mutation_loop(args.mutations, args.seconds, findings))
    print(_row(rows[-1]), flush=True)
    total = sum(r.get("executions", 0) for r in rows)
    secs = sum(r["seconds"] for r in rows)
    print(f"total: {total} executions in {secs:.1f} s, {len(findings)} findings")
    for name, what, inp in findings[:50]:
        print(f"FINDING [{name}] {what}\n    input: {inp}")
    return 1 if findings else 0


def _row(r: dict) -> str:
    return (f"{r['target']:<30} {r.get('executions', 0):>8} executions {r['seconds']:8.1f} s "
            f"({r.get('executions', 0) / max(r['seconds'], 1e-9):8.0f}/s)  accepted {r.get('accepted', 0):>7} "
            f"refused {r.get('refused', 0):>7}  findings {r.get('findings', 0)}")


if __name__ == "__main__":
    sys.exit(main())
