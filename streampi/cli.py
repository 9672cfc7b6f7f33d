"""``streampi`` command line: a thin face over the library.

    streampi serve [MODEL] [--workers N] [--policy latest|queue] ...
    streampi produce [--source synthetic|DIR|VIDEO] [--fps F] [--seconds S] ...
    streampi subscribe [--stream NAME] [--count N]
    streampi demo [--seconds 10]
    streampi inspect MODEL [--bench] [--json]
    streampi bench [...]
    streampi quantize MODEL --calibrate SOURCE [-o OUT.tflite]   (pip install streampi[quantize])
    streampi keygen DIR [--name NAME]
    streampi ctl health|workers|stats|reload [MODEL]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .bench import add_bench
from .errors import StreampiError
from .inspect_model import add_inspect, parse_delegate, parse_size
from .protocol import Limits


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or comma-separated numbers, got {text!r}") from None
    if len(values) not in (1, 3):
        raise argparse.ArgumentTypeError("give one value or one per channel (3)")
    return values


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    if w < 8 or h < 8:
        raise argparse.ArgumentTypeError("frames must be at least 8x8")
    return w, h


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return v


def _positive_int(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def add_model_config_arguments(p: argparse.ArgumentParser) -> Any:
    """The flags that override a model's sidecar (serve, quantize); returns their group."""
    g = p.add_argument_group("model configuration (overrides the sidecar MODEL.json)")
    g.add_argument("--mean", type=_floats, help="normalisation mean(s): (x/255 - mean)/std")
    g.add_argument("--std", type=_floats, help="normalisation std(s)")
    g.add_argument("--channels", choices=["rgb", "bgr"])
    g.add_argument("--resize", choices=["stretch", "letterbox", "crop"])
    g.add_argument("--labels", type=Path, help="labels file, one per line")
    return g


# -- serve ----------------------------------------------------------------------------------
def add_serve(sub: Any) -> None:
    p = sub.add_parser("serve", help="serve a model: frames in over ZeroMQ PULL, results out over PUB",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
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
    g.add_argument("--recv-hwm", type=_positive_int, default=64,
                   help="v1 frames ZeroMQ buffers per producer before that producer blocks")
    g.add_argument("--control", default="tcp://127.0.0.1:5557",
                   help="endpoint of the control socket for `streampi ctl` ('none' to disable)")
    g.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                   help="serve Prometheus metrics over HTTP on this port (0: any free port; default: off)")
    g.add_argument("--metrics-bind", default="127.0.0.1", metavar="ADDRESS",
                   help="address of the metrics endpoint (loopback unless you say otherwise)")
    g = p.add_argument_group("scheduling")
    g.add_argument("--workers", type=_positive_int, default=None, help="interpreter instances (default: usable cores)")
    g.add_argument("--threads", type=_positive_int, default=1, help="threads per interpreter")
    g.add_argument("--light-threads", type=int, default=None, metavar="N",
                   help="threads of each worker's wide interpreter, which runs a lone frame while the other "
                        "workers idle (default: every usable core; 0: off)")
    g.add_argument("--max-batch", type=_positive_int, default=4, help="largest micro-batch")
    g.add_argument("--max-delay-ms", type=float, default=0.0,
                   help="how long the oldest frame may wait for a batch to fill (0: run as soon as a worker is free)")
    g.add_argument("--policy", action="append", default=[], metavar="POLICY|STREAM=POLICY",
                   help="latest (a newer frame replaces a waiting one) or queue (every frame, in order); "
                        "repeat with STREAM=POLICY for one stream (default: latest)")
    g.add_argument("--queue-size", type=_positive_int, default=32, help="frames a queue-policy stream may hold")
    g.add_argument("--credit", type=int, default=0, metavar="N",
                   help="frames a v1.1 producer may have in flight (0: workers + 1 for latest streams, "
                        "queue-size for queue streams)")
    g.add_argument("--max-streams", type=_positive_int, default=256, help="streams with frames waiting, at most")
    g.add_argument("--max-frame-memory", type=parse_size, default="256M", metavar="SIZE",
                   help="bytes of frames the server may hold (waiting or running, e.g. 256M; 0: no budget); "
                        "frames past it are answered 'overloaded'")
    g.add_argument("--no-pin", action="store_true", help="do not pin workers to cores")
    g.add_argument("--backend", choices=["litert", "tflite_runtime", "tensorflow"], default=None)
    g.add_argument("--delegate", type=parse_delegate, action="append", default=[], metavar="PATH[:key=value,...]",
                   help="load a delegate library in every worker (repeatable); the CPU runs the model if it fails")
    g = p.add_argument_group("supervision")
    g.add_argument("--isolation", choices=["process", "thread"], default="process",
                   help="run each interpreter in its own process (a crash is survived) or in a thread of the server")
    g.add_argument("--invoke-timeout", type=_positive_float, default=10.0, metavar="SECONDS",
                   help="kill and replace a worker process stuck this long in one batch (process isolation)")
    g.add_argument("--stop-timeout", type=_positive_float, default=5.0, metavar="SECONDS",
                   help="at SIGTERM/SIGINT: time to finish held frames; then they are answered 'shutdown'")
    g.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    g = add_model_config_arguments(p)
    g.add_argument("--top-k", type=int)
    from .decoders import add_arguments as add_decoder_arguments

    add_decoder_arguments(p)
    g = p.add_argument_group("authentication (CurveZMQ, see docs/security.md)")
    g.add_argument("--curve-secret", metavar="SERVER.key_secret", help="this server's secret certificate")
    g.add_argument("--curve-clients", metavar="DIR", help="directory of the public certificates (*.key) allowed in")
    g = p.add_argument_group("limits on untrusted input (docs/protocol.md)")
    for f in dataclasses.fields(Limits):
        g.add_argument("--" + f.name.replace("_", "-"), type=_positive_int, default=f.default, metavar="N",
                       help=f.metadata["help"])
    p.add_argument("--ready-json", action="store_true", help="print one JSON line when ready (for scripts)")
    p.add_argument("--log-json", action="store_true", help="log JSON lines (ts, level, logger, message) to stderr")
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="read options from this TOML file (keys: these options without dashes); flags override it")
    p.add_argument("--print-config", action="store_true",
                   help="print the effective configuration as TOML (for --config) and exit")
    p.set_defaults(func=cmd_serve)


def _policies(values: Sequence[str]) -> tuple[str, dict[str, str]]:
    default, per_stream = "latest", {}
    for v in values:
        if "=" in v:
            stream, pol = v.split("=", 1)
            per_stream[stream] = pol
        else:
            default = v
    return default, per_stream


def cmd_serve(args: argparse.Namespace) -> int:
    from . import logs
    from .decoders import overrides_from_arguments as decoder_overrides
    from .serving import Server, ServerOptions, config_file

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
    from .auth import warn_if_exposed

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


# -- produce / subscribe ---------------------------------------------------------------------
def add_produce(sub: Any) -> None:
    p = sub.add_parser("produce", help="send frames: synthetic, a folder of images, or a video file",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--connect", default=None,
                   help="the server's frame endpoint (default: tcp://127.0.0.1:5558 for v1.1, :5555 for v1)")
    p.add_argument("--protocol", choices=["1.1", "1"], default="1.1",
                   help="1.1: credit-based flow control (the server's --credit-bind); 1: PUSH (its --bind)")
    p.add_argument("--stream", default="cam0", help="stream name (with --streams N: a prefix)")
    p.add_argument("--streams", type=_positive_int, default=1)
    p.add_argument("--source", default="synthetic", help="'synthetic', a folder of images, or a video file")
    p.add_argument("--size", type=_size, default=(320, 240), help="synthetic frame size WxH")
    p.add_argument("--fmt", choices=["rgb", "jpeg"], default="rgb", help="wire format of synthetic frames")
    p.add_argument("--fps", type=float, default=30.0, help="frames per second per stream (0: as fast as possible)")
    p.add_argument("--count", type=int, default=0, help="stop after this many frames per stream (0: no limit)")
    p.add_argument("--seconds", type=float, default=10.0, help="stop after this long (0: no limit)")
    p.add_argument("--shared-memory", action="store_true",
                   help="a server on this machine: write raw frames into its shared-memory ring, only their "
                        "header goes over the socket (protocol v1.1; docs/protocol.md)")
    _add_curve_client(p)
    p.set_defaults(func=cmd_produce)


def _add_curve_client(p: Any) -> None:
    g = p.add_argument_group("authentication (CurveZMQ, see docs/security.md)")
    g.add_argument("--curve-secret", metavar="NAME.key_secret", help="this client's secret certificate")
    g.add_argument("--curve-server", metavar="SERVER.key", help="the server's public certificate")


def _frames(source: str, size: tuple[int, int], fmt: str):
    """Yield (payload, fmt, label or None) forever."""
    import numpy as np

    if source == "synthetic":
        from .synthetic import ShapesGenerator

        gen = ShapesGenerator()
        while True:
            rgb, label = gen.frame(*size)
            if fmt == "jpeg":
                import simplejpeg
                yield simplejpeg.encode_jpeg(rgb, quality=90), "jpeg", label
            else:
                yield rgb, "rgb", label
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
        if not files:
            raise StreampiError(f"no .jpg files in {path} (other image types: convert them, or use a video)")
        while True:
            for f in files:
                yield f.read_bytes(), "jpeg", None
    if path.is_file():
        try:
            import cv2
        except ImportError:
            raise StreampiError("reading video needs OpenCV: pip install opencv-python-headless") from None
        while True:
            cap = cv2.VideoCapture(str(path))
            if not cap.isOpened():
                raise StreampiError(f"OpenCV cannot open {path}")
            ok, frame = cap.read()
            if not ok:
                raise StreampiError(f"no frames in {path}")
            while ok:
                yield np.ascontiguousarray(frame), "bgr", None
                ok, frame = cap.read()
    raise StreampiError(f"--source {source!r} is neither 'synthetic', a folder, nor a file")


def cmd_produce(args: argparse.Namespace) -> int:
    from .client import Producer

    names = [args.stream] if args.streams == 1 else [f"{args.stream}{i}" for i in range(args.streams)]
    if args.shared_memory and args.protocol != "1.1":
        raise StreampiError("--shared-memory needs --protocol 1.1 (the ring comes with the server's credit)")
    prods = [Producer(args.connect, stream=n, curve_secret=args.curve_secret, curve_server=args.curve_server,
                      protocol_version=args.protocol, shared_memory=args.shared_memory) for n in names]
    frames = _frames(args.source, args.size, args.fmt)
    t0, k, sent = time.time(), 0, 0
    try:
        while (not args.count or k < args.count) and (not args.seconds or time.time() - t0 < args.seconds):
            if args.fps > 0:
                delay = t0 + k / args.fps - time.time()
                if delay > 0:
                    time.sleep(delay)
            for p in prods:
                payload, fmt, label = next(frames)
                p.send(payload, fmt=fmt, meta={"label": label} if label is not None else None)
                sent += 1
            k += 1
    except KeyboardInterrupt:
        pass
    finally:
        for p in prods:
            p.close()
        import zmq
        zmq.Context.instance().term()  # returns once every queued frame is sent (sockets linger 5 s)
    dropped = sum(p.dropped for p in prods)
    if args.shared_memory:
        print(f"shared memory: {prods[0].stats()['shared_memory']}; {sum(p.shm_frames for p in prods)} frames "
              f"through the ring", file=sys.stderr)
    print(f"sent {sent - dropped} frames on {len(prods)} stream(s) in {time.time() - t0:.1f} s"
          + (f"; {dropped} more were replaced by newer ones before they had credit (policy latest)" if dropped else ""),
          file=sys.stderr)
    return 0


def add_subscribe(sub: Any) -> None:
    p = sub.add_parser("subscribe", help="print results, one line each")
    p.add_argument("--connect", default="tcp://127.0.0.1:5556")
    p.add_argument("--stream", action="append", default=[], help="only these streams (repeatable)")
    p.add_argument("--count", type=int, default=0, help="stop after N results")
    p.add_argument("--json", action="store_true", help="print each result as JSON (without the raw outputs)")
    _add_curve_client(p)
    p.set_defaults(func=cmd_subscribe)


def format_result(r: dict) -> str:
    t = r.get("timing", {})
    head = f"{r['stream']:>10} {str(r.get('seq')):>7}"
    if not r["ok"]:
        return f"{head}  ERROR {r['error']['code']}: {r['error']['message']}"
    from .decoders import summarize

    best = summarize(r)
    return f"{head}  {best:<24} total {t.get('total_ms', 0):6.2f} ms  infer {t.get('infer_ms', 0):6.2f} ms  " \
           f"batch {r.get('batch', '-')} worker {r.get('worker', '-')}"


def cmd_subscribe(args: argparse.Namespace) -> int:
    from .client import Subscriber

    n = 0
    with Subscriber(args.connect, streams=args.stream, curve_secret=args.curve_secret,
                    curve_server=args.curve_server) as sub:
        try:
            for r in sub:
                if args.json:
                    print(json.dumps({k: v for k, v in r.items() if k != "outputs"}), flush=True)
                else:
                    print(format_result(r), flush=True)
                n += 1
                if args.count and n >= args.count:
                    break
        except KeyboardInterrupt:
            pass
    return 0


# -- demo --------------------------------------------------------------------------------------
def add_demo(sub: Any) -> None:
    p = sub.add_parser("demo", help="run server, producer and subscriber on the bundled model, then a summary",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="shapes_int8")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--fps", type=float, default=30.0, help="frames per second per stream")
    p.add_argument("--streams", type=_positive_int, default=2)
    p.add_argument("--size", type=_size, default=(320, 240))
    p.add_argument("--json", type=Path, help="also write the summary here")
    p.add_argument("--picture", default="demo-detections.png",
                   help="detectors: write frames with their detections drawn here ('' for none)")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    s = run_demo(args.model, args.seconds, args.fps, args.streams, args.size, picture=args.picture or None)
    if args.json:
        args.json.write_text(json.dumps(s, indent=2))
    healthy = s["unanswered"] == 0 and s["server_exit_code"] == 0 and s["ok"] > 0
    return 0 if healthy else 1


# -- keygen -----------------------------------------------------------------------------------
def add_keygen(sub: Any) -> None:
    p = sub.add_parser("keygen", help="write a CurveZMQ key pair: NAME.key (public) and NAME.key_secret")
    p.add_argument("directory", type=Path)
    p.add_argument("--name", default="streampi", help="file name of the pair (e.g. server, cam0)")
    p.set_defaults(func=cmd_keygen)


def cmd_keygen(args: argparse.Namespace) -> int:
    from .auth import keygen

    public, secret = keygen(args.directory, args.name)
    print(f"wrote {public} (public: give it to the other side) and {secret} (secret: keep it here)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streampi", description="Edge-inference streaming server for the Raspberry Pi")
    parser.add_argument("--version", action="version", version="streampi 0.1.0")
    sub = parser.add_subparsers(dest="command", required=True)
    add_serve(sub)
    add_produce(sub)
    add_subscribe(sub)
    add_demo(sub)
    add_inspect(sub)
    add_bench(sub)
    add_keygen(sub)
    from .ctl import add_ctl
    from .tools.quantize import add_quantize  # the verb's heavy imports happen only when it runs

    add_ctl(sub)
    add_quantize(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .serving.config_file import parse_args

    try:
        args = parse_args(build_parser(), None if argv is None else list(argv))  # serve --config FILE under flags
        return int(args.func(args) or 0)
    except StreampiError as exc:
        print(f"streampi: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # bad option values reported by the library
        print(f"streampi: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
