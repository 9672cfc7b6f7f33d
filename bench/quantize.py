"""What `streampi quantize` costs and buys on this machine, for docs/quantize.md.

For each float model: the quantization itself run as users run it (`streampi quantize` in a
child process: wall time and the child's peak resident memory, against the peak of a child
that only imports the same libraries and loads the float model), then the report's sizes,
agreement and invoke latency of float vs int8 (1 thread and all cores, same run).

Models: the bundled float shapes classifiers, and a float MobileNetV2 (3.5 M parameters,
224×224) made here by dequantizing the bundled int8 MobileNetV2 (random weights: its
agreement figure means little, its size, time and memory are those of a real MobileNetV2).

    .venv/bin/python bench/quantize.py [--frames 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from streampi import bundled_model


def dequantized_copy(src: Path, dst: Path) -> None:
    """A float32 twin of a full-integer model: constants dequantized, activations made float,
    quantization parameters dropped (same graph, same op count, 4× the weight bytes)."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(src.read_bytes()))
    T = schema.TensorType
    for sg in model.subgraphs:
        for t in sg.tensors:
            q = t.quantization
            has_q = q is not None and q.scale is not None and len(q.scale)
            if not has_q or t.type not in (T.INT8, T.UINT8, T.INT32):
                continue
            buf = model.buffers[t.buffer]
            if buf.data is not None and len(buf.data):
                dtype = {T.INT8: np.int8, T.UINT8: np.uint8, T.INT32: np.int32}[t.type]
                values = np.asarray(buf.data, np.uint8).view(dtype).astype(np.float32)
                scale = np.asarray(q.scale, np.float32)
                zp = np.asarray(q.zeroPoint if q.zeroPoint is not None else [0], np.float32)
                if scale.size > 1:  # per-channel along quantizedDimension
                    shape = [1] * len(t.shape)
                    shape[q.quantizedDimension] = scale.size
                    values = values.reshape(t.shape)
                    scale, zp = scale.reshape(shape), zp.reshape(shape)
                buf.data = ((values - zp) * scale).astype(np.float32).reshape(-1).view(np.uint8)
            t.type = T.FLOAT32
            t.quantization = None
    dst.write_bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def peak_rss_of(cmd: list[str]) -> tuple[int, float, str, int]:
    """(peak resident bytes of the child, wall seconds, stdout, exit code)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss * 1024, time.perf_counter() - t0, out, proc.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="streampi-qbench-") as tmp:
        tmpd = Path(tmp)
        mnv2 = tmpd / "mobilenet_v2_float32.tflite"
        dequantized_copy(bundled_model("mobilenet_v2_int8"), mnv2)
        models = [("shapes_float32", bundled_model("shapes_float32")), ("shapes_float16", bundled_model("shapes_float16")),
                  ("mobilenet_v2_float32 (made here)", mnv2)]
        for name, path in models:
            base_rss, _, _, rc = peak_rss_of([sys.executable, "-c",
                                              "import sys, ai_edge_quantizer, streampi.tools.quantize; "
                                              "from streampi import Model; Model(sys.argv[1]).invoke()", str(path)])
            out = tmpd / f"{path.stem}_int8.tflite"
            rss, wall, stdout, rc = peak_rss_of([sys.executable, "-m", "streampi", "quantize", str(path),
                                                 "--calibrate", "synthetic", "--frames", str(args.frames),
                                                 "--runs", str(args.runs), "-o", str(out), "--json"])
            rep = json.loads(stdout)
            v = rep.get("verification", {})
            row = {"model": name, "exit_code": rc, "frames": rep.get("frames"), "wall_s": wall,
                   "quantize_s": rep.get("timing_s", {}).get("quantize"),
                   "calibrate_s": rep.get("timing_s", {}).get("calibrate"),
                   "peak_rss_mib": rss / 2**20, "baseline_peak_rss_mib": base_rss / 2**20,
                   "float_kib": v.get("float_bytes", 0) / 1024, "int8_kib": v.get("quantized_bytes", 0) / 1024,
                   "agreement": v.get("agreement", {}).get("top1_agreement"),
                   "float_accuracy": v.get("agreement", {}).get("float_accuracy"),
                   "int8_accuracy": v.get("agreement", {}).get("quantized_accuracy"),
                   "latency_ms": v.get("latency_ms"), "memory_after_allocate": v.get("memory_after_allocate_bytes")}
            rows.append(row)
            lat = row["latency_ms"] or {}
            print(f"{name}: exit {rc}; {row['float_kib']:.0f} KiB → {row['int8_kib']:.0f} KiB; quantize "
                  f"{row['quantize_s']:.2f} s (calibrate {row['calibrate_s']:.2f} s), whole command {wall:.1f} s; "
                  f"peak RSS {row['peak_rss_mib']:.0f} MiB (libraries + float model alone: "
                  f"{row['baseline_peak_rss_mib']:.0f} MiB); top-1 agreement {row['agreement']}", flush=True)
            for t in (lat.get("float") or {}):
                f_ms, q_ms = lat["float"][t], lat["quantized"][t]
                print(f"    {t} thread(s): float {f_ms:.3f} ms, int8 {q_ms:.3f} ms, ratio {f_ms / q_ms:.2f}×")
    print(f"machine: {os.uname().machine}, {len(os.sched_getaffinity(0))} usable cores, "
          f"load average {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
