"""``streampi serve``: run the server on a model until SIGTERM/SIGINT, then a summary."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import typing
from collections.abc import Sequence
from pathlib import Path

from ..protocol import Limits
from ..serving.options import GROUPS, ServerOptions
from ._argtypes import (
    DefaultsHelpFormatter,
    add_decoder_arguments,
    add_model_config_arguments,
    bounded,
    delegate,
    endpoint_or_none,
    positive_int,
    size_bytes,
)

FORMATTER = DefaultsHelpFormatter
#: the value types of ServerOptions' fields, resolved once (the module's annotations are strings)
_TYPES = typing.get_type_hints(ServerOptions)
# (an endpoint stays text here, "none" included, as --print-config writes it; none → None below)
_KIND_TYPES = {"size": size_bytes, "endpoint": None, "delegate": delegate, "policy": None}


def _flag(f: dataclasses.Field) -> str:
    return f.metadata.get("flag", "--" + f.name.replace("_", "-"))


def _dest(f: dataclasses.Field) -> str:
    return _flag(f)[2:].replace("-", "_")


def _add_option(group: argparse._ArgumentGroup, f: dataclasses.Field) -> None:
    """One field of ServerOptions as the flag its metadata describes."""
    md = f.metadata
    kw: dict = {"help": md["help"], "dest": _dest(f)}
    if md.get("negate") or md.get("switch"):  # a flag of no value (the field: its opposite, or itself)
        group.add_argument(_flag(f), action="store_true", **kw)
        return
    kind = md.get("kind")
    if kind in ("delegate", "policy"):  # repeatable
        kw.update(action="append", default=[])
    elif f.default is not dataclasses.MISSING:
        default = f.default
        if kind == "size" and default % 2**20 == 0:
            default = f"{default // 2**20}M"  # shown (and converted) as a person writes it
        kw["default"] = default
    if kind in _KIND_TYPES:
        kw["type"] = _KIND_TYPES[kind]
    else:
        value_type = next((t for t in typing.get_args(_TYPES[f.name]) if t is not type(None)), _TYPES[f.name])
        if value_type in (int, float):
            kw["type"] = bounded(value_type, minimum=md.get("minimum"), above=md.get("above"),
                                 maximum=md.get("maximum"))
    if "choices" in md and kind != "policy":  # a policy is checked with its STREAM= part
        kw["choices"] = md["choices"]
    if "metavar" in md:
        kw["metavar"] = md["metavar"]
    group.add_argument(_flag(f), **kw)


def add_option_group(p: argparse.ArgumentParser, group: str) -> argparse._ArgumentGroup:
    """The flags of every field of ServerOptions in ``group`` (the limits: one per field of Limits)."""
    g = p.add_argument_group(GROUPS[group])
    for f in dataclasses.fields(ServerOptions):
        if f.metadata.get("group") != group:
            continue
        if f.name == "limits":
            for lf in dataclasses.fields(Limits):
                g.add_argument("--" + lf.name.replace("_", "-"), type=positive_int, default=lf.default, metavar="N",
                               help=lf.metadata["help"])
        else:
            _add_option(g, f)
    return g


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", default="shapes_int8", help="a .tflite file or a bundled model's name")
    add_option_group(p, "sockets")
    add_option_group(p, "scheduling")
    g = add_option_group(p, "supervision")
    g.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info",
                   help="the least important messages logged")
    g = add_model_config_arguments(p)
    g.add_argument("--top-k", type=int)
    add_decoder_arguments(p)
    add_option_group(p, "frigate")
    add_option_group(p, "http")
    add_option_group(p, "events")
    add_option_group(p, "mqtt")
    add_option_group(p, "authentication")
    add_option_group(p, "limits")
    p.add_argument("--ready-json", action="store_true", help="print one JSON line when ready (for scripts)")
    p.add_argument("--log-json", action="store_true", help="log JSON lines (ts, level, logger, message) to stderr")
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="read options from this TOML file (keys: these options without dashes); flags override it")
    p.add_argument("--print-config", action="store_true",
                   help="print the effective configuration as TOML (for --config) and exit")


def _policies(values: Sequence[str]) -> tuple[str, dict[str, str]]:
    default, per_stream = ServerOptions.policy, {}
    for v in values:
        if "=" in v:
            stream, pol = v.split("=", 1)
            per_stream[stream] = pol
        else:
            default = v
    return default, per_stream


def options_from_arguments(args: argparse.Namespace) -> ServerOptions:
    """The ServerOptions the parsed flags say (checked when the server starts)."""
    values: dict = {}
    for f in dataclasses.fields(ServerOptions):
        if "help" not in f.metadata:
            continue
        if f.name == "limits":
            values["limits"] = Limits(**{lf.name: getattr(args, lf.name) for lf in dataclasses.fields(Limits)})
        elif f.metadata.get("kind") == "policy":
            values["policy"], values["stream_policies"] = _policies(getattr(args, _dest(f)))
        elif f.metadata.get("negate"):
            values[f.name] = not getattr(args, _dest(f))
        elif f.metadata.get("kind") == "endpoint":
            values[f.name] = endpoint_or_none(getattr(args, _dest(f)))
        else:
            values[f.name] = getattr(args, _dest(f))
    return ServerOptions(**values)


def run(args: argparse.Namespace) -> int:
    from .. import logs
    from ..serving import Server
    from . import config_file
    from ._argtypes import decoder_overrides

    if args.print_config:
        sys.stdout.write(config_file.dumps(args))
        return 0

    opts = options_from_arguments(args)
    logs.setup(args.log_level, json=args.log_json)
    from ..auth import warn_if_exposed

    warn_if_exposed([args.bind, args.publish] + [e for e in (opts.credit_bind, opts.control) if e],
                    args.curve_secret is not None)
    mqtt_broker = _mqtt_broker(opts)  # a bad URL or password file stops here, before anything starts
    server = Server(args.model, opts, mean=args.mean, std=args.std, channels=args.channels, resize=args.resize,
                    labels_file=args.labels, top_k=args.top_k, decoder=decoder_overrides(args))

    bridge = None

    def ready(s: Server) -> None:
        nonlocal bridge
        if mqtt_broker is not None:
            from ..integrations.mqtt_bridge import BridgeProcess

            bridge = BridgeProcess(s.options, s.bound, mqtt_broker).start()
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

    try:
        code = server.run(on_ready=ready)
    finally:
        if bridge is not None:
            bridge.stop()
    st = server.stats
    errors = ", ".join(f"{k[7:]} {v}" for k, v in sorted(st.items()) if k.startswith("errors.") and v)
    summary = f"stopped; received {st['received']}, answered {st['answered']} " \
              f"(ok {st['ok']}{', ' + errors if errors else ''})"
    if args.log_json:  # under --log-json every line on stderr is a JSON object
        logging.getLogger("streampi.cli").info("%s", summary)
    else:
        print(f"streampi: {summary}", file=sys.stderr)
    return code


def _mqtt_broker(opts: ServerOptions):
    """The broker of ``--mqtt`` (checked, with its password), or None."""
    if not opts.mqtt:
        return None
    from ..errors import StreampiError
    from ..integrations.mqtt import check_prefix, parse_broker
    from ..integrations.mqtt_bridge import check_paho

    check_paho()  # the extra is missing: say so now, not in a child that restarts for ever (not imported here)
    if opts.curve_secret is not None:
        raise StreampiError("--mqtt with CurveZMQ: run `streampi mqtt` beside the server with a client key "
                            "(--curve-secret, --curve-server) instead")
    broker, warnings = parse_broker(opts.mqtt, password_file=opts.mqtt_password_file, ca_file=opts.mqtt_ca)
    check_prefix(opts.mqtt_prefix)
    if opts.mqtt_discovery_prefix:
        check_prefix(opts.mqtt_discovery_prefix, "discovery prefix")
    for w in warnings:
        print(f"streampi: warning: {w}", file=sys.stderr, flush=True)
    return broker
