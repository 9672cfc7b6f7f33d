"""``streampi node``: run this machine's workers for a server elsewhere (docs/cluster.md)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from ..serving.options import ServerOptions
from ._argtypes import DefaultsHelpFormatter, add_curve_client, add_decoder_arguments, add_model_config_arguments
from .serve import _add_option

FORMATTER = DefaultsHelpFormatter
#: the fields of ServerOptions a node has (its workers); the rest is the server's
NODE_FIELDS = ("workers", "threads", "light_threads", "max_batch", "pin", "backend", "delegates", "isolation",
               "invoke_timeout")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", default="shapes_int8",
                   help="the server's model: the same file (its sha256 is checked) and the same model options")
    p.add_argument("--join", required=True, metavar="ENDPOINT",
                   help="the server's --node-bind, e.g. tcp://server:5570 (the node connects out)")
    p.add_argument("--name", help="this node's name in `streampi ctl workers` (default: the host name)")
    g = p.add_argument_group("workers")
    fields = {f.name: f for f in dataclasses.fields(ServerOptions)}
    for name in NODE_FIELDS:
        _add_option(g, fields[name])
    g.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    g.add_argument("--log-json", action="store_true", help="log JSON lines to stderr")
    g.add_argument("--ready-json", action="store_true", help="print one JSON line when the workers are up")
    g = add_model_config_arguments(p)
    g.add_argument("--top-k", type=int)
    add_decoder_arguments(p)
    add_curve_client(p)


def run(args: argparse.Namespace) -> int:
    from .. import logs
    from ..serving.node_agent import NodeAgent
    from ._argtypes import decoder_overrides

    values = {name: getattr(args, name if name != "delegates" else "delegate") for name in NODE_FIELDS if name != "pin"}
    values["pin"] = not args.no_pin
    if values["workers"] == 0:
        print("streampi: error: a node needs at least one worker (--workers)", file=sys.stderr)
        return 2
    opts = ServerOptions(**values)
    logs.setup(args.log_level, json=args.log_json)
    agent = NodeAgent(args.model, args.join, opts, name=args.name, curve_secret=args.curve_secret,
                      curve_server=args.curve_server, mean=args.mean, std=args.std, channels=args.channels,
                      resize=args.resize, labels_file=args.labels, top_k=args.top_k, decoder=decoder_overrides(args))

    def ready(a: NodeAgent) -> None:
        info = {"ready": True, "node": a.name, "model": a.spec.model_info["name"], "sha256": a.sha256[:12],
                "join": a.join_endpoint, "workers": [{"index": s.index, "pid": s.pid} for s in a.slots]}
        if args.ready_json:
            print(json.dumps(info), flush=True)
        else:
            print(f"streampi: node {a.name} runs {info['model']} ({info['sha256']}) with {len(a.slots)} workers, "
                  f"joining {a.join_endpoint}", flush=True)

    code = agent.run(on_ready=ready)
    st = agent.stats
    print(f"streampi: node stopped; batches {st['batches']}, frames {st['frames']}, lost {st['lost']}, "
          f"joins {st['joins']}", file=sys.stderr)
    return code
