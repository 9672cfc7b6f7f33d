"""The load generator behind ``streampi bench`` and the scripts under ``bench/``.

A stable API for measuring a running server from outside, as its users' cameras would load it:

- :func:`run_load`: producer processes on an open-loop schedule (or at saturation) and one
  subscriber; returns a :class:`RunResult` whose counts add up (every frame answered once);
- :func:`producer_main`: one such producer process, for scripts that start their own;
- :class:`LatencyHistogram`: percentiles that merge across processes in fixed memory;
- :func:`run_baseline`: the REQ/REP + OpenCV server a user would write first, same load;
- :func:`tree_cpu_s`, :func:`tree_rss_mib`: a server's CPU and memory with its worker processes;
- :func:`plot`: latency against load and the CDF, as a PNG.

The ceilings a run is compared with (:func:`streampi.measure.ceiling`,
:func:`streampi.measure.pipeline_ceiling`) time interpreters without a server. Needs the bench
extra (``pip install 'streampi[bench]'``: hdrhistogram, psutil, matplotlib, OpenCV).
"""

from .baseline import run_baseline
from .histogram import LatencyHistogram
from .loadgen import (
           STAGES,
           RunResult,
           make_frames,
           producer_main,
           run_load,
           schedule,
           tree_cpu_s,
           tree_rss_mib,
)
from .plot import plot

__all__ = ["STAGES", "LatencyHistogram", "RunResult", "make_frames", "plot", "producer_main",
           "run_baseline", "run_load", "schedule", "tree_cpu_s", "tree_rss_mib"]
