"""``streampi serve``: run the server on a model until SIGTERM/SIGINT, then a summary."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from ..protocol import Limits
from ._argtypes import (
    BACKENDS,
    DefaultsHelpFormatter,
    add_decoder_arguments,
    add_model_config_arguments,
    delegate,
    positive_float,
    positive_int,
    size_bytes,
)

FORMATTER = DefaultsHelpFormatter


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", default="shapes_int8", help="a .tflite file or a bundled model's name")
    g = p.add_argument_group("sockets")
    g.add_argument("--bind", default="tcp://127.0.0.1:5555",
                   help="endpoint of the PULL socket for protocol v1 frames (PUSH producers, no flow control)")
    g.add_argument("--credit-bind", default="tcp://127.0.0.1:5558",
                   help="endpoint of the ROUTER socket for protocol v1.1 frames (credit-based flow control; "
                        "streampi's Producer speaks it by default; 'none' to disable)")
    g.add_argument("--no-shared-memory", action="store_true",
                   help="hand v1.1 producers on this machine no shared-memory ring: their raw frames come over "
                        "the wire (docs/protocol.md, 'Shared memory')")
    g.add_argument("--publish", default="tcp://127.0.0.1:5556", help="endpoint of the PUB socket for results")
    g.add_argument("--recv-hwm", type=positive_int, default=64,
                   help="v1 frames ZeroMQ buffers per producer before that producer blocks")
    g.add_argument("--control", default="tcp://127.0.0.1:5557",
                   help="endpoint of the control socket for `streampi ctl` ('none' to disable)")
    g.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                   help="serve Prometheus metrics over HTTP on this port (0: any free port; default: off)")
    g.add_argument("--metrics-bind", default="127.0.0.1", metavar="ADDRESS",
                   help="address of the metrics endpoint (loopback unless you say otherwise)")
    g = p.add_argument_group("scheduling")
    g.add_argument("--workers", type=positive_int, default=None, help="interpreter instances (default: usable cores)")
    g.add_argument("--threads", type=positive_int, default=1, help="threads per interpreter")
    g.add_argument("--light-threads", type=int, default=None, metavar="N",
                   help="threads of each worker's wide interpreter, which runs a lone frame while the other "
                        "workers idle (default: every usable core; 0: off)")
    g.add_argument("--max-batch", type=positive_int, default=4, help="largest micro-batch")
    g.add_argument("--max-delay-ms", type=float, default=0.0,
                   help="how long the oldest frame may wait for a batch to fill (0: run as soon as a worker is free)")
    g.add_argument("--policy", action="append", default=[], metavar="POLICY|STREAM=POLICY",
                   help="latest (a newer frame replaces a waiting one) or queue (every frame, in order); "
                        "repeat with STREAM=POLICY for one stream (default: latest)")
    g.add_argument("--queue-size", type=positive_int, default=32, help="frames a queue-policy stream may hold")
    g.add_argument("--credit", type=int, default=0, metavar="N",
                   help="frames a v1.1 producer may have in flight (0: workers + 1 for latest streams, "
                        "queue-size for queue streams)")
    g.add_argument("--max-streams", type=positive_int, default=256, help="streams with frames waiting, at most")
    g.add_argument("--max-frame-memory", type=size_bytes, default="256M", metavar="SIZE",
                   help="bytes of frames the server may hold (waiting or running, e.g. 256M; 0: no budget); "
                        "frames past it are answered 'overloaded'")
    g.add_argument("--no-pin", action="store_true", help="do not pin workers to cores")
    g.add_argument("--backend", choices=BACKENDS, default=None)
    g.add_argument("--delegate", type=delegate, action="append", default=[], metavar="PATH[:key=value,...]",
                   help="load a delegate library in every worker (repeatable); the CPU runs the model if it fails")
    g = p.add_argument_group("supervision")
    g.add_argument("--isolation", choices=["process", "thread"], default="process",
                   help="run each interpreter in its own process (a crash is survived) or in a thread of the server")
    g.add_argument("--invoke-timeout", type=positive_float, default=10.0, metavar="SECONDS",
                   help="kill and replace a worker process stuck this long in one batch (process isolation)")
    g.add_argument("--stop-timeout", type=positive_float, default=5.0, metavar="SECONDS",
                   help="at SIGTERM/SIGINT: time to finish held frames; then they are answered 'shutdown'")
    g.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    g = add_model_config_arguments(p)
    g.add_argument("--top-k", type=int)
    add_decoder_arguments(p)
    g = p.add_argument_group("authentication (CurveZMQ, see docs/security.md)")
    g.add_argument("--curve-secret", metavar="SERVER.key_secret", help="this server's secret certificate")
    g.add_argument("--curve-clients", metavar="DIR", help="directory of the public certificates (*.key) allowed in")
    g = p.add_argument_group("limits on untrusted input (docs/protocol.md)")
    for f in dataclasses.fields(Limits):
        g.add_argument("--" + f.name.replace("_", "-"), type=positive_int, default=f.default, metavar="N",
                       help=f.metadata["help"])
    p.add_argument("--ready-json", action="store_true", help="print one JSON line when ready (for scripts)")
    p.add_argument("--log-json", action="store_true", help="log JSON lines (ts, level, logger, message) to stderr")
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="read options from this TOML file (keys: these options without dashes); flags override it")
    p.add_argument("--print-config", action="store_true",
                   help="print the effective configuration as TOML (for --config) and exit")


def _policies(values: Sequence[str]) -> tuple[str, dict[str, str]]:
    default, per_stream = "latest", {}
    for v in values:
        if "=" in v:
            stream, pol = v.split("=", 1)
            per_stream[stream] = pol
        else:
            default = v
    return default, per_stream


def run(args: argparse.Namespace) -> int:
    from .. import logs
    from ..serving import Server, ServerOptions
    from . import config_file
    from ._argtypes import decoder_overrides

    if args.print_config:
        sys.stdout.write(config_file.dumps(args))
        return 0

    policy, per_stream = _policies(args.policy)
    opts = ServerOptions(bind=args.bind, publish=args.publish, credit=args.credit,
                         credit_bind=None if args.credit_bind.lower() == "none" else args.credit_bind,
                         workers=args.workers, threads=args.threads, light_threads=args.light_threads,
                         max_batch=args.max_batch, max_delay_ms=args.max_delay_ms, policy=policy,
                         stream_policies=per_stream, queue_size=args.queue_size, max_streams=args.max_streams,
                         recv_hwm=args.recv_hwm, pin=not args.no_pin, backend=args.backend,
                         delegates=args.delegate, isolation=args.isolation, invoke_timeout=args.invoke_timeout,
                         stop_timeout=args.stop_timeout, max_frame_memory=args.max_frame_memory,
                         control=None if args.control.lower() == "none" else args.control,
                         metrics_port=args.metrics_port, metrics_bind=args.metrics_bind,
                         curve_secret=args.curve_secret, curve_clients=args.curve_clients,
                         shared_memory=not args.no_shared_memory,
                         limits=Limits(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Limits)}))
    logs.setup(args.log_level, json=args.log_json)
    from ..auth import warn_if_exposed

    warn_if_exposed([args.bind, args.publish] + [e for e in (opts.credit_bind, opts.control) if e],
                    args.curve_secret is not None)
    server = Server(args.model, opts, mean=args.mean, std=args.std, channels=args.channels, resize=args.resize,
                    labels_file=args.labels, top_k=args.top_k, decoder=decoder_overrides(args))

    def ready(s: Server) -> None:
        info = {"ready": True, "model": s.model_info["name"], "sha256": s.model_info["sha256"],
                "backend": s.backend, "isolation": s.options.isolation, "runtime": s.runtime_info,
                "workers": [{"index": w.index, "pid": w.pid, "cores": w.cores} for w in s.slots],
                "delegate_errors": s.delegate_errors, **s.bound}
        for err in s.delegate_errors:
            if args.log_json:
                logging.getLogger("streampi.cli").warning("%s", err)
            else:
                print(f"streampi: warning: {err}", file=sys.stderr, flush=True)
        if args.ready_json:
            print(json.dumps(info), flush=True)
        else:
            print(f"streampi: serving {info['model']} ({info['sha256']}) on {info['backend']} with "
                  f"{s.n_workers} workers; frames in at {info.get('credit_bind', '-')} (v1.1) and {info['bind']} "
                  f"(v1), results at {info['publish']}", flush=True)

    code = server.run(on_ready=ready)
    st = server.stats
    errors = ", ".join(f"{k[7:]} {v}" for k, v in sorted(st.items()) if k.startswith("errors.") and v)
    summary = f"stopped; received {st['received']}, answered {st['answered']} " \
              f"(ok {st['ok']}{', ' + errors if errors else ''})"
    if args.log_json:  # under --log-json every line on stderr is a JSON object
        logging.getLogger("streampi.cli").info("%s", summary)
    else:
        print(f"streampi: {summary}", file=sys.stderr)
    return code
