"""Latency plots of a load test (matplotlib, a bench extra)."""

from __future__ import annotations

from pathlib import Path

from .histogram import LatencyHistogram


def plot(path: Path, steps: list[dict], hist: LatencyHistogram, title: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("streampi bench: matplotlib is not installed (pip install 'streampi[bench]'); no PNG written")
        return
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    offered = [s["offered_fps"] for s in steps]
    for p, style in (("p50", "o-"), ("p90", "s-"), ("p99", "^-"), ("max", "x--")):
        a.plot(offered, [s["latency_ms"][p] for s in steps], style, label=p)
    a.set_xlabel("offered load (frames/s)")
    a.set_ylabel("latency (ms, scheduled send → result)")
    a.set_yscale("log")
    a.grid(True, which="both", alpha=0.3)
    a.legend()
    a.set_title("latency against offered load")
    xs, ys = hist.cdf()
    b.plot(xs, ys)
    b.set_xscale("log")
    b.set_xlabel("latency (ms)")
    b.set_ylabel("fraction of frames")
    b.grid(True, which="both", alpha=0.3)
    b.set_title("latency CDF at the knee" if len(steps) > 1 else "latency CDF")
    from matplotlib.ticker import NullFormatter, ScalarFormatter
    for axis in (a.yaxis, b.xaxis):
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_formatter(NullFormatter())
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
