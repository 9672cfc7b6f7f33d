"""``streampi quantize MODEL --calibrate SOURCE``: a float model made int8 on the user's own frames,
verified against the float model on held-out frames (``pip install 'streampi[quantize]'``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._argtypes import DefaultsHelpFormatter, add_model_config_arguments, positive_int, run_and_report

FORMATTER = DefaultsHelpFormatter
#: the recipes of :data:`streampi.tools.quantize.RECIPES` (named here so that --help imports no quantizer)
RECIPE_NAMES = ("int8", "dynamic", "weight-only")


def fraction(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a float .tflite file or a bundled model's name")
    p.add_argument("--calibrate", required=True, metavar="SOURCE",
                   help="'synthetic', a folder of images, or a video file")
    p.add_argument("-o", "--output", type=Path, help="the quantized model (default: ./MODEL_int8.tflite)")
    p.add_argument("--recipe", choices=RECIPE_NAMES, default="int8",
                   help="int8: int8 weights and activations, int8 in and out (fastest); dynamic: int8 weights, "
                        "float activations; weight-only: int8 weights stored, float compute (smallest change)")
    p.add_argument("--frames", type=int, default=200, help="frames to read from SOURCE")
    p.add_argument("--holdout", type=fraction, default=0.2, help="fraction of the frames kept for verification only")
    p.add_argument("--min-agreement", type=fraction, default=0.98,
                   help="pass mark: top-1 agreement (classifiers), detection agreement (detectors) or the "
                        "worst output's cosine similarity (others)")
    p.add_argument("--force", action="store_true", help="write the output even when it fails verification")
    p.add_argument("--runs", type=positive_int, default=30, help="invokes per latency figure")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic frames and of the hold-out split")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_model_config_arguments(p)


def run(args: argparse.Namespace) -> int:
    from ..tools.quantize import QuantizeOptions, print_report, quantize_model

    opts = QuantizeOptions(recipe=args.recipe, frames=args.frames, holdout=args.holdout,
                           min_agreement=args.min_agreement, force=args.force, seed=args.seed, runs=args.runs,
                           progress=not args.no_progress and not args.json and sys.stderr.isatty(),
                           overrides={"mean": args.mean, "std": args.std, "channels": args.channels,
                                      "resize": args.resize, "labels_file": args.labels})
    log = (lambda msg: None) if args.json else (lambda msg: print(f"… {msg}", file=sys.stderr, flush=True))
    rep = run_and_report(args, "quantize", args.model,
                         lambda: quantize_model(args.model, args.calibrate, args.output, opts, log), print_report)
    if rep is None:
        return 2
    return 0 if rep.get("passed") else 1
