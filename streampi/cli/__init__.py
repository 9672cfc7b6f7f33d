"""``streampi`` command line: a thin face over the library, one module per verb.

    streampi serve [MODEL] [--workers N] [--policy latest|queue] ...
    streampi produce [--source synthetic|DIR|VIDEO|rtsp://…|http://…] [--fps F] [--config CAMERAS.toml] ...
    streampi subscribe [--stream NAME] [--count N]
    streampi demo [--seconds 10]
    streampi inspect MODEL [--bench] [--json]
    streampi bench [...]
    streampi quantize MODEL --calibrate SOURCE [-o OUT.tflite]   (pip install streampi[quantize])
    streampi keygen DIR [--name NAME]
    streampi ctl health|workers|stats|reload [MODEL]
    streampi mqtt --broker mqtt://HOST [--server ENDPOINT]   (pip install streampi[mqtt])
    streampi node [MODEL] --join tcp://server:5570

Each verb's module (``streampi.cli.<verb>``) has ``add_arguments(parser)`` and ``run(args)``;
it imports only argparse and light helpers at module level and its stack inside ``run``. Only
the verb named on the command line is imported, so that a probe (``ctl health``) or a
camera (``produce``) never loads the interpreter or the compiled kernels.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .. import version
from ..errors import StreampiError

#: verb -> its one-line help; the module ``streampi.cli.<verb>`` defines the rest
VERBS = {
    "serve": "serve a model: frames in over ZeroMQ, results out over PUB",
    "produce": "send frames: synthetic, a folder of images, a video file, or cameras (RTSP, MJPEG, USB, Pi)",
    "subscribe": "print results, one line each",
    "demo": "run server, producer and subscriber on the bundled model, then a summary",
    "inspect": "a model doctor: what a .tflite is, whether and how fast it runs here",
    "bench": "load-test a server: open-loop producers, latency percentiles, sweeps, plots",
    "quantize": "turn a float .tflite into a verified int8 model, calibrated on your frames",
    "keygen": "write a CurveZMQ key pair: NAME.key (public) and NAME.key_secret",
    "frigate-config": "print the Frigate config (zmq detector) for a server of MODEL and write its labelmap",
    "mqtt": "bridge a running server to an MQTT broker and Home Assistant: events, counts, snapshots, stats",
    "node": "run this machine's workers for a server elsewhere (--join the server's --node-bind)",
    "ctl": "ask a running server: health (exit code 0 when healthy), workers, stats, reload [MODEL]",
}


class _VersionAction(argparse.Action):
    """``--version`` that reads the package metadata only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kw: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="show the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print(f"streampi {version()}")
        parser.exit()


def verb_parser(sub: argparse._SubParsersAction, verb: str) -> argparse.ArgumentParser:
    """Add ``verb``'s parser with all its arguments (imports ``streampi.cli.<verb>``)."""
    module = importlib.import_module(f".{verb.replace('-', '_')}", __name__)
    p = sub.add_parser(verb, help=VERBS[verb], description=VERBS[verb][0].upper() + VERBS[verb][1:] + ".",
                       formatter_class=getattr(module, "FORMATTER", argparse.HelpFormatter))
    module.add_arguments(p)
    p.set_defaults(func=module.run)
    return p


def build_parser(verbs: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``streampi`` parser; ``verbs``: the verbs whose arguments to add (default: all;
    the others are listed with their help only, and refuse to run)."""
    parser = argparse.ArgumentParser(prog="streampi", description="Edge-inference streaming server for the Raspberry Pi")
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", required=True, metavar="VERB")
    for verb in VERBS:
        if verbs is None or verb in verbs:
            verb_parser(sub, verb)
        else:
            sub.add_parser(verb, help=VERBS[verb], add_help=False)
    return parser


def _named_verb(argv: Sequence[str]) -> str | None:
    """The verb on a command line (the first word that is not an option), if it is one."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in VERBS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    from .config_file import parse_args

    argv = list(sys.argv[1:] if argv is None else argv)
    verb = _named_verb(argv)
    try:
        args = parse_args(build_parser([verb] if verb else []), argv)  # serve --config FILE under flags
        return int(args.func(args) or 0)
    except StreampiError as exc:
        print(f"streampi: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # bad option values reported by the library
        print(f"streampi: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
