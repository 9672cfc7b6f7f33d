"""What pruning, int8 and both do to the shapes classifier on this machine, in one run.

The four steps of the usual advice, on models made by ``scripts/make_models.py --only pruned``
(one training run: the dense model, its pruned twins fine-tuned from it to 50 % and 80 % zeros,
each as float32, float32 stored sparse and int8 made by ``streampi quantize``):

    float32 → pruned 50 % / 80 % (dense file, stored sparse) → int8 → pruned + int8

For each model: file size; resident memory after load (``streampi.measure.runtime_report``,
in a child process of its own: after ``allocate_tensors`` and after the first invoke); invoke
time at 1 thread and at the best thread count (the median of ``--runs`` invokes with XNNPACK on,
each model in a child process of its own, in ``--rounds`` interleaved rounds, the best round
kept); top-1 accuracy on ``--frames`` fresh frames of ``streampi.synthetic.ShapesGenerator``
(a seed training never used; as MODELS.md measures it, half drawn at 64×64 and half at random
sizes 48..320 a side, here shrunk by streampi's own preprocessing, as the server does); and
what ``streampi inspect --profile`` says of it (zeros, stored sparse, densified at load or run
sparse, the top ops, the sum of the ops against the whole invoke, the delegate's partitions).

``--aarch64`` adds an ESTIMATE for the Pi where timing is impossible here: executed arm64
instructions per invoke, counted by callgrind under qemu-user (QEMU_CPU=cortex-a72, a Pi 4's
/proc/cpuinfo) in the root filesystem scripts/check-aarch64 builds (run that first; needs
root), as scripts/aarch64-instructions counts the kernels. All models in one process (start-up
under emulation is most of the time): each is loaded and invoked once, then callgrind dumps its
counts (``--dump-before=sched_yield``, called from Python) and the next 4 invokes are counted
alone, so loading and the first invoke's set-up stay out. A few minutes in all.

    .venv/bin/python bench/pruning.py [--models .cache/pruned] [--aarch64] [--json out.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: (step, file) in table order; the files are the ones make_models.py --only pruned writes
STEPS = [
    ("float32", "shapes_dense_float32.tflite"),
    ("pruned 50 %", "shapes_pruned50_float32.tflite"),
    ("pruned 50 %, stored sparse", "shapes_pruned50_sparse.tflite"),
    ("pruned 80 %", "shapes_pruned80_float32.tflite"),
    ("pruned 80 %, stored sparse", "shapes_pruned80_sparse.tflite"),
    ("int8", "shapes_dense_int8.tflite"),
    ("pruned 50 % + int8", "shapes_pruned50_int8.tflite"),
    ("pruned 80 % + int8", "shapes_pruned80_int8.tflite"),
]
A64_CALLS = 4  # invokes counted per model, after its first


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        return f"{fields['Model name'].strip()}, {fields.get('CPU(s)', '?').strip()} CPUs visible"
    except (OSError, KeyError, subprocess.SubprocessError):
        return platform.processor() or "unknown CPU"


# -- the child: one model, loaded alone ----------------------------------------------------------
def child(path: str, runs: int, threads: list[int]) -> None:
    from streampi.measure import invoke_ms, ready, runtime_report
    from streampi.model import Model, get_backend

    out = {"runtime": runtime_report(Path(path), get_backend())}
    for n in threads:
        m = ready(Model(path, num_threads=n), warmup=10)
        out[f"invoke_ms_{n}"] = float(np.median(invoke_ms(m, runs)))
        del m
    print(json.dumps(out))


def measure_in_child(path: Path, runs: int, threads: list[int]) -> dict:
    cmd = [sys.executable, __file__, "--child", str(path), "--runs", str(runs), "--threads",
           ",".join(map(str, threads))]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if res.returncode:
        raise SystemExit(f"measuring {path.name} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


# -- accuracy ------------------------------------------------------------------------------------
def draw(n: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    from streampi.synthetic import ShapesGenerator

    gen, rng = ShapesGenerator(seed=seed), np.random.default_rng(seed)
    frames, labels = [], np.empty(n, np.int64)
    for i in range(n):
        w, h = (64, 64) if i % 2 == 0 else (int(v) for v in rng.integers(48, 320, 2))
        img, labels[i] = gen.frame(w, h)
        frames.append(img)
    return frames, labels


def accuracy(path: Path, frames: list[np.ndarray], labels: np.ndarray, batch: int = 250) -> float:
    from streampi.config import load_config
    from streampi.model import Model
    from streampi.preprocess import Preprocessor

    m = Model(path)
    pre = Preprocessor.for_model(m, load_config(path))
    m.resize_batch(batch)
    right = 0
    for s in range(0, len(frames), batch):
        chunk = frames[s:s + batch]
        view = m.input_view()
        for i, f in enumerate(chunk):
            pre(f, "rgb", out=view[i])
        del view
        m.invoke()
        right += int((m.outputs_float()[0][:len(chunk)].argmax(axis=1) == labels[s:s + len(chunk)]).sum())
    return right / len(frames)


# -- what inspect --profile says ------------------------------------------------------------------
def profile_summary(path: Path, runs: int) -> dict:
    from streampi.tools.inspect import InspectOptions, inspect

    rep = inspect(path, InspectOptions(profile=True, runs=runs))
    sp = rep["static"].get("sparsity") or {}
    prof, pr = rep["profile"], rep.get("pruning", {})
    top = sorted(prof["ops"], key=lambda o: -o["ms"])[:3]
    d = prof["delegation"]
    out = {"zero_fraction": sp.get("zero_fraction", 0.0), "stored_sparse": sp.get("stored_sparse", False),
           "densify_ops": sp.get("densify_ops", 0), "quantization": rep["static"]["quantization"],
           "sum_ms": prof["sum_ms"], "invoke_ms": prof["invoke_ms"],
           "top_ops": [f"#{o['index']} {o['op']} {o['share']:.0%}" for o in top],
           "by_type": {k: round(v["share"], 3) for k, v in prof["by_type"].items()},
           "partitions": d.get("partitions"), "delegate_nodes": (d.get("replaced"), d.get("of")),
           "runtime_line": (d.get("log_lines") or [None])[0],
           "sparse_inference_possible": sp.get("sparse_inference_possible"), "why_not": sp.get("why_not", []),
           "findings": [f["text"] for f in rep["findings"] if "prun" in f["text"] or "sparse" in f["text"]]}
    if "runs_sparse" in pr:
        out["runs_sparse"] = pr["runs_sparse"]
        out["as_stored"], out["dense_copy"] = pr["as_stored"], pr["dense_copy"]
    if "probe" in pr:
        out["probe"] = {k: pr["probe"].get(k) for k in ("dense_ms", "sparse_ms", "speedup", "effect")}
    return out


# -- the Pi estimate: arm64 instructions per invoke under qemu + callgrind ------------------------
A64_RUN = r'''
import os, sys
from ai_edge_litert.interpreter import Interpreter
import numpy as np
calls = int(sys.argv[1])
for path in sys.argv[2:]:
    it = Interpreter(model_path=path, num_threads=1)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    it.invoke()  # the first invoke's set-up stays out of the count
    os.sched_yield()  # callgrind dumps the counts so far (--dump-before=sched_yield)
    for _ in range(calls):
        it.invoke()
    os.sched_yield()  # and the part that holds only the invokes
    del it
'''


class Aarch64:
    """The root filesystem of scripts/check-aarch64, mounted for counting (under its lock)."""

    VENV, SITE = "/opt/streampi-venv", "/opt/streampi-count-models-site"

    def __init__(self, wait: float = 0.0) -> None:
        self.wait = wait  # seconds to wait for the root filesystem's lock
        self.root = Path(os.environ.get("STREAMPI_AARCH64_ROOT", ROOT / ".cache" / "aarch64-rootfs"))
        self.mounted: list[Path] = []
        self.lock = None

    def __enter__(self) -> Aarch64:
        import fcntl

        if os.geteuid() != 0:
            raise SystemExit("--aarch64 needs root (chroot, mount)")
        if not (self.root / ".streampi-rootfs-ready").exists():
            raise SystemExit(f"no arm64 root filesystem at {self.root}: run scripts/check-aarch64 first "
                             "(or set STREAMPI_AARCH64_ROOT)")
        self.lock = open(f"{self.root}.lock", "w")
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"scripts/check-aarch64 is using {self.root}; try again when it is done "
                                     "(or wait longer: --aarch64-wait)") from None
                time.sleep(10)
        for target, args in ((self.root / "proc", ["-t", "proc", "proc"]), (self.root / "sys", ["-t", "sysfs", "sysfs"]),
                             (self.root / "proc" / "cpuinfo", ["--bind", f"{self.root}.cpuinfo"])):
            if target.name != "cpuinfo" and subprocess.run(["mountpoint", "-q", str(target)]).returncode == 0:
                continue
            subprocess.run(["mount", *args, str(target)], check=True)
            self.mounted.append(target)
        self.shell("command -v valgrind >/dev/null || (apt-get update -qq && "
                   "apt-get install -y -qq --no-install-recommends valgrind >/dev/null)")
        # copies of the wheels with .eh_frame hidden from valgrind (scripts/elf-hide-eh-frame says why)
        sp = self.shell(f"{self.VENV}/bin/python -c 'import sysconfig; print(sysconfig.get_path(\"purelib\"))'").strip()
        stamp = " ".join(sorted(p.name for p in (self.root / sp.lstrip("/")).glob("*.dist-info")
                                if p.name.startswith(("numpy-", "ai_edge_litert-", "flatbuffers-"))))
        site = self.root / self.SITE.lstrip("/")
        if not (site / ".stamp").is_file() or (site / ".stamp").read_text() != stamp:
            shutil.rmtree(site, ignore_errors=True)
            site.mkdir(parents=True)
            for name in ("numpy", "numpy.libs", "ai_edge_litert", "flatbuffers"):
                src = self.root / sp.lstrip("/") / name
                if src.exists():
                    shutil.copytree(src, site / name, symlinks=True)
            libs = [str(p) for p in site.rglob("*.so*") if p.is_file()]
            subprocess.run([sys.executable, str(ROOT / "scripts" / "elf-hide-eh-frame"), *libs], check=True,
                           capture_output=True)
            (site / ".stamp").write_text(stamp)
        (self.root / "tmp" / "streampi-count").mkdir(parents=True, exist_ok=True)
        (self.root / "tmp" / "streampi-count" / "run.py").write_text(A64_RUN)
        self.versions = stamp
        return self

    def shell(self, command: str, *env: str) -> str:
        res = subprocess.run(["chroot", str(self.root), "/usr/bin/env", "-i", "HOME=/root",
                              "PATH=/usr/bin:/bin:/usr/sbin:/sbin", "QEMU_CPU=cortex-a72", "LANG=C.UTF-8",
                              "OPENBLAS_NUM_THREADS=1", "DEBIAN_FRONTEND=noninteractive", *env, "/bin/bash", "-c",
                              command], capture_output=True, text=True, timeout=3600)
        if res.returncode:
            raise RuntimeError(f"inside the arm64 root filesystem: {command!r} failed: {res.stderr[-1500:]}")
        return res.stdout

    def count(self, models: list[Path]) -> dict[str, dict]:
        """Instructions per invoke of each model, all in one process (start-up under valgrind and
        qemu is most of the time): after loading a model and its first invoke, callgrind dumps its
        counts; the next dump holds only the A64_CALLS invokes that follow."""
        work = self.root / "tmp" / "streampi-count"
        for old in work.glob("cg.out*"):
            old.unlink()
        for m in models:
            shutil.copyfile(m, work / m.name)
        t0 = time.perf_counter()
        self.shell(f"cd /tmp/streampi-count && valgrind --tool=callgrind --dump-before='sched_yield*' "
                   f"--callgrind-out-file=/tmp/streampi-count/cg.out {self.VENV}/bin/python run.py {A64_CALLS} "
                   + " ".join(m.name for m in models), f"PYTHONPATH={self.SITE}")
        seconds = time.perf_counter() - t0
        parts = {}
        for f in work.glob("cg.out*"):
            text = f.read_text(errors="replace")
            part = re.search(r"^part:\s+(\d+)", text, re.M)
            total = re.search(r"^(?:totals|summary):\s+(\d+)", text, re.M)
            if part and total:
                parts[int(part.group(1))] = int(total.group(1))
        # parts 1, 3, 5…: start-up, loading and the first invoke; 2, 4, 6…: the invokes alone
        if len(parts) < 2 * len(models):
            raise RuntimeError(f"callgrind wrote {len(parts)} parts, expected {2 * len(models) + 1}")
        return {m.name: {"instructions_per_invoke": parts[2 * (i + 1)] / A64_CALLS,
                         "instructions_load_and_first_invoke": parts[2 * i + 1] if i else None,
                         "seconds_all": seconds} for i, m in enumerate(models)}

    def __exit__(self, *exc) -> None:
        for target in reversed(self.mounted):
            subprocess.run(["umount", "-l", str(target)])
        if self.lock:
            self.lock.close()


def print_tables(rows, figures, a64: bool) -> None:
    base = figures[rows[0][1].name]
    a64_col = " | Pi estimate: arm64 instr./invoke" if a64 else ""
    print(f"\n| step | file | size | compressed (zlib -9) | resident after load (+first invoke) | invoke 1 thread | invoke best "
          f"(threads) | accuracy{a64_col} |")
    print("|---|---|---|---|---|---|---|---|" + ("---|" if a64 else ""))
    for step, p in rows:
        f = figures[p.name]
        mem = f.get("memory") or {}
        one, best = f["invoke_ms"][1], f["invoke_ms"][f["best_threads"]]
        pi = ""
        if a64:
            a = f["aarch64"]["instructions_per_invoke"]
            pi = f" | {a / 1e6:.1f} M ({a / base['aarch64']['instructions_per_invoke']:.2f}×)"
        print(f"| {step} | {p.name} | {f['file_bytes'] / 1024:.0f} KiB ({f['file_bytes'] / base['file_bytes']:.2f}×) "
              f"| {f['zlib_bytes'] / 1024:.0f} KiB ({f['zlib_bytes'] / base['zlib_bytes']:.2f}×) "
              f"| {mem.get('after_allocate_bytes', 0) / 2**20:.2f} MiB (+{mem.get('after_first_invoke_bytes', 0) / 2**20:.2f}) "
              f"| {one:.3f} ms ({base['invoke_ms'][1] / one:.2f}×) "
              f"| {best:.3f} ms ({f['best_threads']}) | {f['accuracy'] * 100:.2f} %{pi} |")
    print("\n(× : against the float32 row; for invoke, its time over this one: above 1 is faster)")
    print("\nwhat inspect --profile says")
    print("| file | weights zero | stored sparse | at load | top ops (share of the ops' time) | sum of ops / whole "
          "| XNNPACK (runtime's report) |")
    print("|---|---|---|---|---|---|---|")
    for _, p in rows:
        pr = figures[p.name]["profile"]
        if pr["densify_ops"]:
            load = ("runs sparse" if pr.get("runs_sparse") else "densified") + \
                   f" ({pr['densify_ops']} DENSIFY; as stored {pr['as_stored']['invoke_ms']:.3f} ms, resident " \
                   f"+{pr['as_stored']['rss_after_invoke_bytes'] / 2**20:.1f} MiB; its dense copy " \
                   f"{pr['dense_copy']['invoke_ms']:.3f} ms, +{pr['dense_copy']['rss_after_invoke_bytes'] / 2**20:.1f} MiB)"
        else:
            load = "dense file"
        print(f"| {p.name} | {pr['zero_fraction']:.0%} | {'yes' if pr['stored_sparse'] else 'no'} | {load} | "
              f"{', '.join(pr['top_ops'])} | {pr['sum_ms']:.3f} / {pr['invoke_ms']:.3f} ms | "
              f"{pr['delegate_nodes'][0]} of {pr['delegate_nodes'][1]} nodes, {pr['partitions']} partition(s) |")
    probe = next((figures[p.name]["profile"].get("probe") for _, p in rows
                  if figures[p.name]["profile"].get("probe")), None)
    if probe and probe.get("speedup"):
        print(f"\nXNNPACK's sparse path on this machine (inspect's probe: 1×1 convolutions 80 % zeros): "
              f"stored sparse {probe['sparse_ms']:.2f} ms against dense {probe['dense_ms']:.2f} ms "
              f"({probe['speedup']:.2f}×, {probe['effect']})")
    why = figures[rows[2][1].name]["profile"]["why_not"]
    if why:
        print(f"why XNNPACK's sparse inference cannot apply to the shapes classifier: {'; '.join(why)}")


def save(args, started, folder, figures) -> None:
    if args.json:
        Path(args.json).write_text(json.dumps({"date": f"{started:%Y-%m-%d}", "cpu": cpu_name(),
                                               "models": str(folder), "figures": figures}, indent=2, default=str))


# -- the run ---------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=str(ROOT / ".cache" / "pruned"),
                    help="where make_models.py --only pruned wrote them (default .cache/pruned)")
    ap.add_argument("--frames", type=int, default=3000, help="fresh frames for the accuracy (default 3000)")
    ap.add_argument("--seed", type=int, default=20260326, help="their seed (training used 1 and 2)")
    ap.add_argument("--runs", type=int, default=300, help="invokes per timing figure (default 300)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds, best kept (default 3)")
    ap.add_argument("--profile-runs", type=int, default=30, help="invokes per figure of inspect --profile")
    ap.add_argument("--aarch64", action="store_true", help="also count arm64 instructions per invoke (root)")
    ap.add_argument("--aarch64-wait", type=float, default=0.0,
                    help="seconds to wait while scripts/check-aarch64 holds the root filesystem (default 0)")
    ap.add_argument("--json", help="write every figure here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--threads", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.runs, [int(t) for t in args.threads.split(",")])
        return

    from streampi.runtime_info import usable_cores

    folder = Path(args.models)
    rows = [(step, folder / name) for step, name in STEPS]
    missing = [p.name for _, p in rows if not p.is_file()]
    if missing:
        raise SystemExit(f"missing in {folder}: {', '.join(missing)}; make them with "
                         ".venv-models/bin/python scripts/make_models.py --only pruned")
    cores = len(usable_cores())
    threads = list(range(1, cores + 1))
    started = datetime.datetime.now()
    print(f"bench/pruning.py  {started:%Y-%m-%d %H:%M}  CPU: {cpu_name()}  ({cores} usable cores)")
    print(f"models: {folder}" + (f" ({(folder / 'README.md').read_text().splitlines()[0]})"
                                  if (folder / "README.md").is_file() else ""))
    # compressed: what the file costs to download or to ship in a wheel (zip), where zeros are cheap
    figures: dict[str, dict] = {p.name: {"step": step, "file_bytes": p.stat().st_size,
                                         "zlib_bytes": len(zlib.compress(p.read_bytes(), 9))} for step, p in rows}

    print(f"timing: {args.rounds} rounds × {len(rows)} models, {args.runs} invokes at {threads} threads each")
    for _round in range(args.rounds):
        for _, p in rows:
            got = measure_in_child(p, args.runs, threads)
            f = figures[p.name]
            f.setdefault("memory", got["runtime"].get("memory"))
            for n in threads:
                f.setdefault("invoke_rounds", {}).setdefault(n, []).append(got[f"invoke_ms_{n}"])
    for f in figures.values():
        f["invoke_ms"] = {n: min(v) for n, v in f["invoke_rounds"].items()}
        f["best_threads"] = min(f["invoke_ms"], key=f["invoke_ms"].get)

    print(f"accuracy: {args.frames} fresh frames (seed {args.seed})")
    frames, labels = draw(args.frames, args.seed)
    for _, p in rows:
        figures[p.name]["accuracy"] = accuracy(p, frames, labels)

    for _, p in rows:
        print(f"inspect --profile {p.name}", flush=True)
        figures[p.name]["profile"] = profile_summary(p, args.profile_runs)

    print_tables(rows, figures, False)
    save(args, started, folder, figures)
    if args.aarch64:
        if args.aarch64_wait:
            print(f"waiting up to {args.aarch64_wait:.0f} s for the arm64 root filesystem", flush=True)
        with Aarch64(args.aarch64_wait) as a64:
            print(f"arm64 instruction counts (qemu-user cortex-a72 + callgrind; {a64.versions})", flush=True)
            counts = a64.count([p for _, p in rows])
            for _, p in rows:
                figures[p.name]["aarch64"] = counts[p.name]
                print(f"  {p.name}: {counts[p.name]['instructions_per_invoke'] / 1e6:.2f} M", flush=True)
            print(f"  ({counts[rows[0][1].name]['seconds_all']:.0f} s under valgrind + qemu)")

        print_tables(rows, figures, True)
        save(args, started, folder, figures)
    print(f"\n(whole run {(datetime.datetime.now() - started).total_seconds():.0f} s)")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
