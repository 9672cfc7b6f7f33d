"""``streampi frigate-config MODEL``: the Frigate configuration that points Frigate's ``zmq``
detector at a streampi server serving MODEL, and the labelmap file matching MODEL's labels (so
that the class ids Frigate reads in the replies cannot drift from the model's). See
docs/frigate.md."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._argtypes import positive_int

FRIGATE_DEFAULT_ENDPOINT = "ipc:///tmp/cache/zmq_detector"  # Frigate's default for its zmq detector


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..serving.options import FRIGATE_INPUT_DTYPES, FRIGATE_PIXEL_FORMATS

    p.add_argument("model", help="the .tflite the server serves (or a bundled model's name)")
    p.add_argument("--endpoint", default=FRIGATE_DEFAULT_ENDPOINT,
                   help="where Frigate connects: the server's --frigate endpoint as Frigate reaches it, e.g. "
                        f"tcp://192.168.1.20:5560 (default {FRIGATE_DEFAULT_ENDPOINT}: same machine)")
    p.add_argument("--labelmap", type=Path, metavar="FILE",
                   help="where to write the labelmap (default: MODEL-labelmap.txt in this folder)")
    p.add_argument("--labelmap-path", metavar="PATH",
                   help="the labelmap's path as Frigate sees it (default: /config/ and the file's name)")
    p.add_argument("--model-path", metavar="PATH",
                   help="model.path as Frigate sees it: a copy of the served file there lets Frigate's model "
                        "handshake prove it is the same model (default: /config/model_cache/ and its name)")
    p.add_argument("--labels", type=Path, metavar="FILE", help="the labels file the server is given (--labels)")
    p.add_argument("--detectors", type=positive_int, default=1, metavar="N",
                   help="Frigate detectors (processes) to declare, each a request in flight (default 1)")
    p.add_argument("--pixel-format", choices=FRIGATE_PIXEL_FORMATS, default="rgb",
                   help="model.input_pixel_format (the server's --frigate-pixel-format)")
    p.add_argument("--input-dtype", choices=FRIGATE_INPUT_DTYPES, default="int",
                   help="model.input_dtype (the server's --frigate-input-dtype)")
    p.add_argument("--timeout-ms", type=positive_int, default=200,
                   help="the detectors' request_timeout_ms (the server's --frigate-deadline, default 200)")


def frigate_config(model: str, *, endpoint: str = FRIGATE_DEFAULT_ENDPOINT, labelmap: Path | None = None,
                   labelmap_path: str | None = None, model_path: str | None = None, labels: Path | None = None,
                   detectors: int = 1, pixel_format: str = "rgb", input_dtype: str = "int",
                   timeout_ms: int = 200) -> tuple[str, Path, tuple[str, ...]]:
    """The YAML for Frigate, the labelmap file written, and the labels in it."""
    from ..config import load_config
    from ..decoders import make_decoder
    from ..errors import StreampiError
    from ..integrations.frigate import BOX_DECODERS
    from ..model import Model, resolve_model

    path = resolve_model(model)
    probe = Model(path)
    height, width, _ = probe.image_input()
    config = load_config(path, **({"labels_file": str(labels)} if labels is not None else {}))
    kind = make_decoder(probe.outputs, config).kind
    if kind not in BOX_DECODERS:
        raise StreampiError(f"{path.name} is decoded by '{kind}', which gives no boxes: Frigate needs a detection "
                            f"model ({', '.join(BOX_DECODERS)} decoder)")
    if not config.labels:
        raise StreampiError(f"{path.name} has no labels (none embedded, none in its sidecar): give the file the "
                            f"server uses with --labels, so that Frigate names the classes as the server does")
    labelmap = labelmap or Path(f"{path.stem}-labelmap.txt")
    labelmap.write_text("".join(f"{i} {label}\n" for i, label in enumerate(config.labels)))
    labelmap_path = labelmap_path or f"/config/{labelmap.name}"
    model_path = model_path or f"/config/model_cache/{path.name}"
    names = ["streampi"] if detectors == 1 else [f"streampi{i}" for i in range(detectors)]
    lines = [f"# Frigate's zmq detector answered by streampi serving {path.name}:",
             f"#   streampi serve {model} --frigate SERVER_ENDPOINT --frigate-pixel-format {pixel_format} "
             f"--frigate-input-dtype {input_dtype} --frigate-deadline {timeout_ms}",
             f"# copy {labelmap} to {labelmap_path}",
             f"# and {path} to {model_path}",
             "# (Frigate's handshake compares it with the served model; streampi never loads a model Frigate sends)",
             "detectors:"]
    for name in names:
        lines += [f"  {name}:", "    type: zmq", f"    endpoint: {endpoint}", f"    request_timeout_ms: {timeout_ms}"]
    lines += ["model:", f"  path: {model_path}", f"  labelmap_path: {labelmap_path}", f"  width: {width}",
              f"  height: {height}", "  input_tensor: nhwc", f"  input_pixel_format: {pixel_format}",
              f"  input_dtype: {input_dtype}",
              "  model_type: ssd  # sent to the detector only: streampi decodes the model itself"]
    return "\n".join(lines) + "\n", labelmap, tuple(config.labels)


def run(args: argparse.Namespace) -> int:
    import sys

    yaml, labelmap, labels = frigate_config(
        args.model, endpoint=args.endpoint, labelmap=args.labelmap, labelmap_path=args.labelmap_path,
        model_path=args.model_path, labels=args.labels, detectors=args.detectors, pixel_format=args.pixel_format,
        input_dtype=args.input_dtype, timeout_ms=args.timeout_ms)
    sys.stdout.write(yaml)
    print(f"wrote {labelmap} ({len(labels)} labels)", file=sys.stderr)
    return 0
