"""Argument types and flag groups shared by several verbs.

Each type is a function from the text on the command line to a value, raising
:class:`argparse.ArgumentTypeError` with a message that says what was expected; the
configuration file (:mod:`streampi.cli.config_file`) reads each function's return
annotation to know which TOML type a key takes, so keep the annotations.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..backends import BACKEND_NAMES
from ..units import parse_delegate_spec, parse_size_text

#: the ``--backend`` choices of every verb that loads a model
BACKENDS = BACKEND_NAMES


def floats(text: str) -> tuple[float, ...]:
    """One number, or one per channel: ``0.5`` or ``0.485,0.456,0.406``."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or comma-separated numbers, got {text!r}") from None
    if len(values) not in (1, 3):
        raise argparse.ArgumentTypeError("give one value or one per channel (3)")
    return values


def frame_size(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` of a frame, each at least 8."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    if w < 8 or h < 8:
        raise argparse.ArgumentTypeError("frames must be at least 8x8")
    return w, h


def endpoint_or_none(text: str) -> str | None:
    """A ZeroMQ endpoint, or ``none`` (any case): that socket is not bound."""
    return None if text.strip().lower() == "none" else text


def bounded(kind: type, *, minimum: float | None = None, above: float | None = None,
            maximum: float | None = None) -> Any:
    """An argument type: ``kind`` (int or float) within the bounds, each message saying which."""
    def convert(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if minimum is not None and not v >= minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text}")
        if above is not None and not v > above:
            raise argparse.ArgumentTypeError(f"must be > {above}, got {text}")
        if maximum is not None and not v <= maximum:
            raise argparse.ArgumentTypeError(f"must be <= {maximum}, got {text}")
        return v

    convert.__name__ = kind.__name__
    convert.__annotations__ = {"text": str, "return": kind}  # the configuration file reads its TOML type here
    return convert


positive_int = bounded(int, minimum=1)
positive_float = bounded(float, above=0)


def size_bytes(text: str) -> int:
    """'2G', '512M', '1.5G' → bytes."""
    try:
        return parse_size_text(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


size_bytes.config_kind = "size"  # type: ignore[attr-defined]  # a TOML key takes "256M" as well as bytes


def delegate(text: str) -> tuple[str, dict[str, str]]:
    """'libfoo.so:key=value,key2=value2' → ('libfoo.so', {...})."""
    try:
        return parse_delegate_spec(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_model_config_arguments(p: argparse.ArgumentParser) -> Any:
    """The flags that override a model's sidecar (serve, quantize); returns their group."""
    g = p.add_argument_group("model configuration (overrides the sidecar MODEL.json)")
    g.add_argument("--mean", type=floats, help="normalisation mean(s): (x/255 - mean)/std")
    g.add_argument("--std", type=floats, help="normalisation std(s)")
    g.add_argument("--channels", choices=["rgb", "bgr"])
    g.add_argument("--resize", choices=["stretch", "letterbox", "crop"])
    g.add_argument("--labels", type=Path, help="labels file, one per line")
    return g


def add_curve_client(p: argparse.ArgumentParser) -> None:
    """A client's CurveZMQ key files (produce, subscribe, ctl)."""
    g = p.add_argument_group("authentication (CurveZMQ, see docs/security.md)")
    g.add_argument("--curve-secret", metavar="NAME.key_secret", help="this client's secret certificate")
    g.add_argument("--curve-server", metavar="SERVER.key", help="the server's public certificate")


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default once: not when its help already says it, nor when there is
    none to show (None, an empty list, a switch that is off)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        nothing = action.default is None or action.default is False or action.default == [] \
            or action.default is argparse.SUPPRESS
        if "default:" in text or "%(default)" in text or nothing or not action.option_strings:
            return text
        return super()._get_help_string(action)


def add_decoder_arguments(parser: argparse.ArgumentParser) -> None:
    """``streampi serve``'s decoder flags (they override the sidecar's ``"decoder"``)."""
    from ..decoders.selection import KINDS as kinds

    g = parser.add_argument_group("decoding (overrides the sidecar's \"decoder\")")
    g.add_argument("--decoder", choices=kinds, help="decoder kind (default: the sidecar's, else chosen from the "
                                                   "output shapes)")
    g.add_argument("--decoder-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a decoder option, VALUE as JSON (e.g. layout=\"v5\", strides=[8,16]); repeatable")
    g.add_argument("--score-threshold", type=float, help="drop detections scoring below this")
    g.add_argument("--iou-threshold", type=float, help="NMS: suppress boxes overlapping a better one by more")
    g.add_argument("--max-detections", type=int, help="detections per frame, at most")
    g.add_argument("--class-agnostic", action="store_true", default=None, help="NMS across classes")
    g.add_argument("--raw-outputs", action="store_true", default=None, help="also send the output tensors")


def decoder_overrides(args: argparse.Namespace) -> dict[str, Any] | None:
    """The ``decoder`` override for :func:`streampi.config.load_config` from parsed flags."""
    import json

    from ..errors import ModelError

    section: dict[str, Any] = {}
    for item in getattr(args, "decoder_option", None) or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ModelError(f"--decoder-option takes KEY=VALUE, got {item!r}")
        try:
            section[key] = json.loads(value)
        except ValueError:
            section[key] = value  # a bare word: a string
    for name in ("score_threshold", "iou_threshold", "max_detections", "class_agnostic", "raw_outputs"):
        value = getattr(args, name, None)
        if value is not None:
            section[name] = value
    if getattr(args, "decoder", None):
        section["kind"] = args.decoder
    return section or None


def run_and_report(args: argparse.Namespace, verb: str, model: object, make: Any, print_report: Any) -> dict | None:
    """``make()`` a tool's report and print it (JSON with ``--json``); a StreampiError is said on
    stderr (and as ``{"model", "error"}`` with ``--json``) and gives None: the verb exits 2."""
    import json
    import sys

    from ..errors import StreampiError

    try:
        rep = make()
    except StreampiError as exc:
        if args.json:
            print(json.dumps({"model": str(model), "error": str(exc)}))
        print(f"streampi {verb}: {exc}", file=sys.stderr)
        return None
    if args.json:
        print(json.dumps(rep, indent=2, default=str))
    else:
        print_report(rep)
    return rep
