#!/usr/bin/env python3
"""Train, convert and write streampi's bundled models (a dev tool, run by hand).

    python -m venv .venv-models && .venv-models/bin/pip install -e '.[models]'
    .venv-models/bin/python tools/make_models.py            # everything
    .venv-models/bin/python tools/make_models.py --only mobilenet

TensorFlow is needed only here; the outputs in ``streampi/models/`` are committed so that
neither users nor CI ever install it. What it writes:

* ``shapes_int8.tflite``    the default model: a small CNN trained on
  :mod:`streampi.synthetic` frames, full-integer quantized (int8 in, int8 out), with its
  labels embedded as an associated file (a zip appended to the flatbuffer);
* ``shapes_float32.tflite`` its float twin, ``shapes_uint8.tflite`` (uint8 in and out),
  ``shapes_float16.tflite`` and ``shapes_dynamic.tflite`` (float16 and dynamic-range
  weights: the model doctor's examples of half-way quantization);
* ``mobilenet_v2_int8.tflite`` a MobileNetV2-shaped int8 model (224×224×3, 1000 classes,
  random weights) for benchmarks;
* ``custom_op.tflite`` a tiny model whose only op is a custom op no runtime knows, and
  ``vector_fixed_batch.tflite`` (a 1×4 float input, batch fixed) and ``int16_input.tflite``
  (an image model with an int16 input), for the error-path tests;
* a ``.json`` sidecar next to each model (normalisation, channel order, labels file) and
  ``shapes_labels.txt``; ``MODELS.md`` with sizes and measured accuracies.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
import zipfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from streampi.synthetic import LABELS, ShapesGenerator  # noqa: E402

OUT = ROOT / "streampi" / "models"
SIZE = 64  # the shapes model's input is SIZE × SIZE × 3
MEAN, STD = 0.5, 0.5  # x/255 → [-1, 1]


def log(msg: str) -> None:
    print(f"[make_models {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def draw(gen: ShapesGenerator, n: int, tf) -> tuple[np.ndarray, np.ndarray]:
    """n frames at SIZE×SIZE: half drawn at that size, half drawn larger (any aspect)
    and shrunk the way streampi's kernels shrink them (area beyond 2×, else bilinear)."""
    xs = np.empty((n, SIZE, SIZE, 3), np.float32)
    ys = np.empty(n, np.int64)
    rng = np.random.default_rng(1234 + n)
    for i in range(n):
        if i % 2 == 0:
            img, ys[i] = gen.frame(SIZE, SIZE)
            xs[i] = img
        else:
            w, h = (int(v) for v in rng.integers(48, 320, 2))
            img, ys[i] = gen.frame(w, h)
            method = "area" if max(w, h) > 2 * SIZE else "bilinear"
            xs[i] = np.round(tf.image.resize(img.astype(np.float32), (SIZE, SIZE), method=method).numpy())
        if (i + 1) % 5000 == 0:
            log(f"  drew {i + 1}/{n} frames")
    return xs / 255.0 / STD - MEAN / STD, ys


def build_shapes_model(tf):
    L = tf.keras.layers
    inp = tf.keras.Input((SIZE, SIZE, 3), name="image")
    x = inp
    for filters in (16, 32, 64, 96):
        x = L.Conv2D(filters, 3, strides=2, padding="same", use_bias=False)(x)
        x = L.BatchNormalization()(x)
        x = L.ReLU()(x)
        x = L.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = L.BatchNormalization()(x)
        x = L.ReLU()(x)
    x = L.GlobalAveragePooling2D()(x)
    out = L.Dense(len(LABELS), activation="softmax", name="scores")(x)
    return tf.keras.Model(inp, out, name="shapes")


def convert(tf, model, *, quant: str, rep=None) -> bytes:
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if quant in ("int8", "uint8"):
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = rep
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = conv.inference_output_type = getattr(tf, quant)
    elif quant == "float16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif quant == "dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    return conv.convert()


def tflite_accuracy(tf, blob: bytes, xs: np.ndarray, ys: np.ndarray) -> float:
    interp = tf.lite.Interpreter(model_content=blob)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    interp.resize_tensor_input(inp["index"], [len(xs), SIZE, SIZE, 3])
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    if inp["dtype"] == np.float32:
        data = xs
    else:
        scale, zp = inp["quantization"]
        info = np.iinfo(inp["dtype"])
        data = np.clip(np.round(xs / scale) + zp, info.min, info.max).astype(inp["dtype"])
    interp.set_tensor(inp["index"], data)
    interp.invoke()
    pred = interp.get_tensor(out["index"]).argmax(axis=1)
    return float((pred == ys).mean())


def with_labels(blob: bytes, labels: tuple[str, ...]) -> bytes:
    """Append a zip holding labels.txt, as TFLite metadata's associated files are stored."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("labels.txt", "\n".join(labels) + "\n")
    return blob + buf.getvalue()


def write(name: str, blob: bytes, sidecar: dict | None) -> None:
    (OUT / name).write_bytes(blob)
    if sidecar is not None:
        (OUT / name).with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    log(f"wrote {name}: {len(blob) / 1024:.1f} KiB")


def make_shapes(tf, args, report: list[str]) -> None:
    tf.keras.utils.set_random_seed(7)
    log(f"drawing {args.train} training and {args.test} test frames")
    xtr, ytr = draw(ShapesGenerator(seed=1), args.train, tf)
    xte, yte = draw(ShapesGenerator(seed=2), args.test, tf)
    model = build_shapes_model(tf)
    model.compile(optimizer=tf.keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    log(f"training for {args.epochs} epochs ({model.count_params()} parameters)")
    model.fit(xtr, ytr, batch_size=64, epochs=args.epochs, validation_data=(xte, yte), verbose=2,
              callbacks=[tf.keras.callbacks.ReduceLROnPlateau(patience=2, factor=0.3)])

    def rep():
        for i in range(0, 400, 4):
            yield [xtr[i:i + 4]]

    sidecar = {"mean": MEAN, "std": STD, "channels": "rgb", "resize": "stretch",
               "labels": "shapes_labels.txt", "top_k": 3}
    (OUT / "shapes_labels.txt").write_text("\n".join(LABELS) + "\n")
    report.append("| model | size | accuracy on fresh frames |\n|---|---|---|")
    for quant, name in (("float32", "shapes_float32.tflite"), ("int8", "shapes_int8.tflite"),
                        ("uint8", "shapes_uint8.tflite"), ("float16", "shapes_float16.tflite"),
                        ("dynamic", "shapes_dynamic.tflite")):
        blob = convert(tf, model, quant=quant, rep=rep)
        acc = tflite_accuracy(tf, blob, xte, yte)
        if quant == "int8":
            blob = with_labels(blob, LABELS)
        write(name, blob, sidecar)
        log(f"{name}: test accuracy {acc:.4f} on {len(yte)} frames")
        report.append(f"| {name} | {len(blob) / 1024:.1f} KiB | {acc * 100:.2f} % |")


def make_mobilenet(tf, report: list[str]) -> None:
    tf.keras.utils.set_random_seed(11)
    log("building MobileNetV2 224×224×3 (random weights)")
    model = tf.keras.applications.MobileNetV2(input_shape=(224, 224, 3), weights=None, classes=1000)
    rng = np.random.default_rng(0)

    def rep():
        for _ in range(16):
            yield [rng.uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)]

    blob = convert(tf, model, quant="int8", rep=rep)
    write("mobilenet_v2_int8.tflite", blob, {"mean": 0.5, "std": 0.5, "channels": "rgb", "resize": "stretch"})
    report.append(f"| mobilenet_v2_int8.tflite | {len(blob) / 1024:.1f} KiB | random weights (benchmarks only) |")


def make_custom_op(tf) -> None:
    """A two-tensor model whose one op is renamed to a custom op nobody implements."""
    from tensorflow.lite.tools import flatbuffer_utils as fbu

    inp = tf.keras.Input((4,), name="x")
    model = tf.keras.Model(inp, tf.keras.layers.ReLU()(inp))
    blob = convert(tf, model, quant="float32")
    m = fbu.convert_bytearray_to_object(bytearray(blob))
    for code in m.operatorCodes:
        code.builtinCode = code.deprecatedBuiltinCode = 32  # BuiltinOperator.CUSTOM
        code.customCode = b"StreampiNoSuchOp"
    write("custom_op.tflite", bytes(fbu.convert_object_to_bytearray(m)), None)

    # a vector-input model with a fixed batch of 1 (not an image; batch not resizable)
    fn = tf.function(lambda x: tf.nn.relu(x) * 2.0, input_signature=[tf.TensorSpec([1, 4], tf.float32)])
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()])
    write("vector_fixed_batch.tflite", conv.convert(), None)

    # an image model with an int16 input (16x8 quantization): a dtype the kernels cannot write
    inp = tf.keras.Input((8, 8, 3), name="image")
    x = tf.keras.layers.Conv2D(2, 3, padding="same")(inp)
    tiny = tf.keras.Model(inp, tf.keras.layers.GlobalAveragePooling2D()(x))
    conv = tf.lite.TFLiteConverter.from_keras_model(tiny)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([np.random.rand(1, 8, 8, 3).astype(np.float32)] for _ in range(8))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int16
    write("int16_input.tflite", conv.convert(), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["shapes", "mobilenet", "custom"], help="make one group only")
    ap.add_argument("--train", type=int, default=30000, help="training frames (default 30000)")
    ap.add_argument("--test", type=int, default=3000, help="test frames (default 3000)")
    ap.add_argument("--epochs", type=int, default=12)
    args = ap.parse_args()
    import tensorflow as tf

    OUT.mkdir(parents=True, exist_ok=True)
    report: list[str] = []
    if args.only in (None, "shapes"):
        make_shapes(tf, args, report)
    if args.only in (None, "mobilenet"):
        make_mobilenet(tf, report)
    if args.only in (None, "custom"):
        make_custom_op(tf)
    if report:
        print("\n".join(report))
    if report and args.only is None:  # a partial run leaves the committed table alone
        text = "# Bundled models\n\nMade by `tools/make_models.py` with TensorFlow " + tf.__version__ + ".\n\n"
        (OUT / "MODELS.md").write_text(text + "\n".join(report) + "\n")


if __name__ == "__main__":
    main()
