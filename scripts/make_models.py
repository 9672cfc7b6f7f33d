#!/usr/bin/env python3
"""Train, convert and write streampi's bundled models (a dev tool, run by hand).

    python -m venv .venv-models && .venv-models/bin/pip install -e '.[models]'
    .venv-models/bin/python scripts/make_models.py            # everything
    .venv-models/bin/python scripts/make_models.py --only mobilenet

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
* ``ssd_mobilenet_v2_320_int8.tflite`` an SSD detector shaped like those Frigate users run
  (MobileNetV2 at 320×320×3, SSDLite heads, TFLite_Detection_PostProcess, uint8 input,
  random weights) for benchmarks, with ``coco_labels.txt``;
* ``custom_op.tflite`` a tiny model whose only op is a custom op no runtime knows, and
  ``vector_fixed_batch.tflite`` (a 1×4 float input, batch fixed) and ``int16_input.tflite``
  (an image model with an int16 input), for the error-path tests;
* a ``.json`` sidecar next to each model (normalisation, channel order, labels file) and
  ``shapes_labels.txt``; ``MODELS.md`` with sizes and measured accuracies.

``--only pruned`` (not part of a full run) trains pruned twins of the shapes classifier for
``docs/optimizing.md`` and ``bench/pruning.py``: the dense model as ``make_shapes`` trains it,
then magnitude pruning during training (the TensorFlow Model Optimization toolkit:
``prune_low_magnitude`` with a ``PolynomialDecay`` schedule, ``UpdatePruningStep``,
``strip_pruning``) to 50 % and 80 % of the weights of every convolution and of the dense layer
zero; the dense reference (``shapes_dense_*``) gets the same fine-tuning, unpruned. Each
is written as float32 (``shapes_pruned50_float32.tflite``), float32 stored sparse
(``…_sparse.tflite``, the converter's ``EXPERIMENTAL_SPARSITY``) and int8 made by
``streampi quantize`` calibrated on ``synthetic`` (``…_int8.tflite``), into ``--out``
(default ``.cache/pruned``: they are not bundled; docs/optimizing.md says why). The toolkit
(0.8) works only with Keras 2: this group runs on ``tf_keras`` (``TF_USE_LEGACY_KERAS=1``),
the others on TensorFlow's own Keras 3, so it runs alone.
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
from streampi.synthetic import LABELS, ScenesGenerator, ShapesGenerator  # noqa: E402

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


# -- pruned twins of the shapes classifier ---------------------------------------------------
PRUNE_TARGETS = (0.5, 0.8)


def quantize_with_streampi(float_path: Path, out_path: Path) -> dict:
    """int8 by ``streampi quantize`` (ai-edge-quantizer, calibrated on ``synthetic`` frames through
    streampi's own preprocessing), as a user would make it; the report of that run."""
    from streampi.tools.quantize import QuantizeOptions, quantize_model

    rep = quantize_model(float_path, "synthetic", out_path, QuantizeOptions(), log=lambda m: log(f"  quantize: {m}"))
    if not rep.get("written"):
        raise SystemExit(f"streampi quantize did not write {out_path.name}: {rep.get('verdict')}")
    return rep


def make_pruned(tf, args, report: list[str]) -> None:
    import shutil

    import tensorflow_model_optimization as tfmot

    sparsity = tfmot.sparsity.keras
    out = Path(args.out) if args.out else ROOT / ".cache" / "pruned"
    out.mkdir(parents=True, exist_ok=True)
    tf.keras.utils.set_random_seed(7)
    log(f"drawing {args.train} training and {args.test} test frames (Keras {tf.keras.__name__.split('.')[0]}, "
        f"model-optimization toolkit {tfmot.__version__})")
    xtr, ytr = draw(ShapesGenerator(seed=1), args.train, tf)
    xte, yte = draw(ShapesGenerator(seed=2), args.test, tf)
    base = build_shapes_model(tf)
    base.compile(optimizer=tf.keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy",
                 metrics=["accuracy"])
    log(f"training the dense model for {args.epochs} epochs ({base.count_params()} parameters), as make_shapes does")
    base.fit(xtr, ytr, batch_size=64, epochs=args.epochs, validation_data=(xte, yte), verbose=2,
             callbacks=[tf.keras.callbacks.ReduceLROnPlateau(patience=2, factor=0.3)])
    dense_weights = base.get_weights()
    # the dense reference gets the same fine-tuning as the pruned twins (same epochs and rate),
    # without pruning, so that the table compares pruning and not extra training
    base.compile(optimizer=tf.keras.optimizers.Adam(5e-4), loss="sparse_categorical_crossentropy",
                 metrics=["accuracy"])
    log(f"fine-tuning the dense reference for {args.prune_epochs} epochs, unpruned")
    base.fit(xtr, ytr, batch_size=64, epochs=args.prune_epochs, validation_data=(xte, yte), verbose=2)

    sidecar = {"mean": MEAN, "std": STD, "channels": "rgb", "resize": "stretch",
               "labels": "shapes_labels.txt", "top_k": 3}
    shutil.copyfile(OUT / "shapes_labels.txt", out / "shapes_labels.txt")

    def put(name: str, blob: bytes) -> Path:
        (out / name).write_bytes(blob)
        (out / name).with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
        log(f"wrote {out / name}: {len(blob) / 1024:.1f} KiB")
        return out / name

    dense = put("shapes_dense_float32.tflite", convert(tf, base, quant="float32"))
    report.append("| model | size | accuracy on the test frames | weights zero |\n|---|---|---|---|")
    report.append(f"| {dense.name} | {dense.stat().st_size / 1024:.1f} KiB | "
                  f"{tflite_accuracy(tf, dense.read_bytes(), xte, yte) * 100:.2f} % | 0 % |")
    steps = int(np.ceil(len(xtr) / 64)) * args.prune_epochs
    for target in PRUNE_TARGETS:
        tag = f"shapes_pruned{round(target * 100)}"
        model = tf.keras.models.clone_model(base)
        model.set_weights(dense_weights)
        # from the trained dense model, the smallest weights zeroed step by step over the first two
        # thirds of the fine-tuning, held at the target for the rest
        schedule = sparsity.PolynomialDecay(initial_sparsity=0.0, final_sparsity=target, begin_step=0,
                                            end_step=max(1, steps * 2 // 3), frequency=50)
        pruned = sparsity.prune_low_magnitude(model, pruning_schedule=schedule)
        pruned.compile(optimizer=tf.keras.optimizers.Adam(5e-4), loss="sparse_categorical_crossentropy",
                       metrics=["accuracy"])
        log(f"{tag}: pruning to {target:.0%} during {args.prune_epochs} epochs of fine-tuning")
        pruned.fit(xtr, ytr, batch_size=64, epochs=args.prune_epochs, validation_data=(xte, yte), verbose=2,
                   callbacks=[sparsity.UpdatePruningStep()])
        final = sparsity.strip_pruning(pruned)
        kernels = [w for layer in final.layers for w in layer.get_weights()[:1]
                   if isinstance(layer, (tf.keras.layers.Conv2D, tf.keras.layers.Dense))]
        zeros = sum(int((k == 0).sum()) for k in kernels) / sum(k.size for k in kernels)
        f32 = put(f"{tag}_float32.tflite", convert(tf, final, quant="float32"))
        conv = tf.lite.TFLiteConverter.from_keras_model(final)
        conv.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
        sparse = put(f"{tag}_sparse.tflite", conv.convert())
        q = quantize_with_streampi(f32, out / f"{tag}_int8.tflite")
        for path in (f32, sparse, out / f"{tag}_int8.tflite"):
            acc = tflite_accuracy(tf, path.read_bytes(), xte, yte)
            log(f"{path.name}: test accuracy {acc:.4f} on {len(yte)} frames")
            report.append(f"| {path.name} | {path.stat().st_size / 1024:.1f} KiB | {acc * 100:.2f} % | {zeros:.1%} |")
        log(f"{tag}_int8: streampi quantize's verdict: {q.get('verdict')}")
    # the dense model through the same int8 step, for a like-for-like int8 row
    q = quantize_with_streampi(dense, out / "shapes_dense_int8.tflite")
    log(f"shapes_dense_int8: streampi quantize's verdict: {q.get('verdict')}")
    acc = tflite_accuracy(tf, (out / "shapes_dense_int8.tflite").read_bytes(), xte, yte)
    report.append(f"| shapes_dense_int8.tflite | {(out / 'shapes_dense_int8.tflite').stat().st_size / 1024:.1f} KiB "
                  f"| {acc * 100:.2f} % | 0 % |")
    (out / "README.md").write_text(
        f"Made by `scripts/make_models.py --only pruned` with TensorFlow {tf.__version__} and "
        f"tensorflow-model-optimization {tfmot.__version__} on tf_keras ({args.train} training frames, "
        f"{args.epochs} dense epochs, {args.prune_epochs} pruning epochs); accuracy on the {args.test} test frames "
        "(seed 2) through the TFLite interpreter.\n\n" + "\n".join(report) + "\n")


# -- the shapes detector ------------------------------------------------------------------
DET_SIZE = 96  # the detector's input is DET_SIZE × DET_SIZE × 3 (letterboxed)
DET_STRIDE = 8
DET_GRID = DET_SIZE // DET_STRIDE
DET_MAX_WH = 0.6  # largest box side, as a fraction of the input


def letterbox(tf, img: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Letterbox ``img`` into DET_SIZE² as streampi's preprocessing does (same geometry;
    area resampling beyond 2× shrink, else bilinear; pad 0) and map its boxes alike."""
    h, w = img.shape[:2]
    s = min(DET_SIZE / w, DET_SIZE / h)
    dw, dh = max(1, min(DET_SIZE, round(w * s))), max(1, min(DET_SIZE, round(h * s)))
    dx, dy = (DET_SIZE - dw) // 2, (DET_SIZE - dh) // 2
    out = np.zeros((DET_SIZE, DET_SIZE, 3), np.float32)
    if (w, h) == (dw, dh):
        out[dy:dy + dh, dx:dx + dw] = img
    else:
        method = "area" if (w > 2 * dw or h > 2 * dh) else "bilinear"
        out[dy:dy + dh, dx:dx + dw] = np.round(tf.image.resize(img.astype(np.float32), (dh, dw), method=method).numpy())
    b = boxes.copy()
    b[:, [0, 2]] = b[:, [0, 2]] * (dw / w) + dx
    b[:, [1, 3]] = b[:, [1, 3]] * (dh / h) + dy
    return out, b


def draw_scenes(gen: ScenesGenerator, n: int, tf, seed: int) -> tuple[np.ndarray, list, list]:
    """n letterboxed scenes: a quarter drawn at DET_SIZE², the rest at random sizes and
    aspects (96..400 pixels a side), shrunk like streampi's kernels shrink them."""
    rng = np.random.default_rng(seed)
    xs = np.empty((n, DET_SIZE, DET_SIZE, 3), np.float32)
    all_boxes, all_classes = [], []
    for i in range(n):
        if i % 4 == 0:
            w = h = DET_SIZE
        elif i % 4 == 1:
            w, h = 320, 240
        else:
            w, h = (int(v) for v in rng.integers(96, 400, 2))
        img, boxes, classes = gen.scene(w, h)
        xs[i], b = letterbox(tf, img, boxes)
        all_boxes.append(b / DET_SIZE)
        all_classes.append(classes)
        if (i + 1) % 2000 == 0:
            log(f"  drew {i + 1}/{n} scenes")
    return xs / 255.0 / STD - MEAN / STD, all_boxes, all_classes


def detector_targets(all_boxes: list, all_classes: list) -> np.ndarray:
    """Per-cell targets ``(n, G*G, 4 + classes + 1)``: the box (normalised cx, cy, w, h)
    and one-hot class of the shape whose centre falls in the cell, then a positive flag."""
    nc = len(LABELS)
    y = np.zeros((len(all_boxes), DET_GRID * DET_GRID, 4 + nc + 1), np.float32)
    for i, (boxes, classes) in enumerate(zip(all_boxes, all_classes)):
        for (x0, y0, x1, y1), c in zip(boxes, classes):
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            gx, gy = min(DET_GRID - 1, int(cx * DET_GRID)), min(DET_GRID - 1, int(cy * DET_GRID))
            cell = gy * DET_GRID + gx
            y[i, cell, :4] = (cx, cy, x1 - x0, y1 - y0)
            y[i, cell, 4 + c] = 1.0
            y[i, cell, -1] = 1.0
    return y


def build_detector(tf):
    """A small single-scale anchor-free detector; ``(train model, export model)``.

    Each of the G×G cells of the stride-8 feature map predicts one box and per-class
    sigmoid scores. Boxes are decoded inside the network to normalised ``cx, cy, w, h``
    so that every output value lies in [0, 1] and one int8 scale serves the whole output
    tensor. The export model transposes to the YOLOv8 layout ``[batch, 4 + classes, cells]``.
    """
    L = tf.keras.layers
    nc = len(LABELS)
    inp = tf.keras.Input((DET_SIZE, DET_SIZE, 3), name="image")
    x = inp
    for filters, stride in ((16, 2), (16, 1), (32, 2), (32, 1), (64, 2), (64, 1), (96, 1), (96, 1)):
        x = L.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
        x = L.BatchNormalization()(x)
        x = L.ReLU()(x)
    raw = L.Conv2D(4 + nc, 1, name="head")(x)
    raw = L.Reshape((DET_GRID * DET_GRID, 4 + nc))(raw)
    g = np.stack(np.meshgrid(np.arange(DET_GRID), np.arange(DET_GRID)), -1).reshape(1, -1, 2).astype(np.float32)
    sig = L.Activation("sigmoid")(raw)
    xy = L.Lambda(lambda s: (s[..., :2] * 2.0 - 0.5 + g) / DET_GRID, name="centres")(sig)
    wh = L.Lambda(lambda s: s[..., 2:4] * DET_MAX_WH, name="sizes")(sig)
    cls = L.Lambda(lambda s: s[..., 4:], name="class_scores")(sig)
    cells = L.Concatenate(name="cells")([xy, wh, cls])
    train = tf.keras.Model(inp, cells, name="shapes_detector_train")
    export = tf.keras.Model(inp, L.Permute((2, 1), name="detections")(cells), name="shapes_detector")
    return train, export


def detector_loss(tf):
    def loss(y, p):
        pos = y[..., -1]
        npos = tf.maximum(tf.reduce_sum(pos), 1.0)
        t_cls, p_cls = y[..., 4:-1], tf.clip_by_value(p[..., 4:], 1e-6, 1 - 1e-6)
        # focal loss on every cell and class (most cells hold nothing)
        pt = tf.where(t_cls > 0.5, p_cls, 1 - p_cls)
        alpha = tf.where(t_cls > 0.5, 0.5, 0.5)
        focal = -alpha * (1 - pt) ** 2 * tf.math.log(pt)
        cls_loss = tf.reduce_sum(focal) / npos
        # box: IoU loss and L1 on the positive cells
        tb = tf.concat([y[..., :2] - y[..., 2:4] / 2, y[..., :2] + y[..., 2:4] / 2], -1)
        pb = tf.concat([p[..., :2] - p[..., 2:4] / 2, p[..., :2] + p[..., 2:4] / 2], -1)
        iw = tf.maximum(tf.minimum(tb[..., 2], pb[..., 2]) - tf.maximum(tb[..., 0], pb[..., 0]), 0.0)
        ih = tf.maximum(tf.minimum(tb[..., 3], pb[..., 3]) - tf.maximum(tb[..., 1], pb[..., 1]), 0.0)
        inter = iw * ih
        union = y[..., 2] * y[..., 3] + p[..., 2] * p[..., 3] - inter + 1e-9
        iou = inter / union
        l1 = tf.reduce_sum(tf.abs(y[..., :4] - p[..., :4]), -1) * DET_GRID
        box_loss = tf.reduce_sum(pos * ((1 - iou) + 0.5 * l1)) / npos
        return cls_loss + 2.0 * box_loss
    return loss


def train_detector(tf, args):
    tf.keras.utils.set_random_seed(17)
    log(f"drawing {args.det_train} training and {args.det_test} test scenes")
    xtr, btr, ctr = draw_scenes(ScenesGenerator(seed=101), args.det_train, tf, 5)
    xte, bte, cte = draw_scenes(ScenesGenerator(seed=202), args.det_test, tf, 6)
    ytr, yte = detector_targets(btr, ctr), detector_targets(bte, cte)
    train, export = build_detector(tf)
    steps = args.det_epochs * (len(xtr) // 64)
    train.compile(optimizer=tf.keras.optimizers.Adam(tf.keras.optimizers.schedules.CosineDecay(3e-3, steps)),
                  loss=detector_loss(tf))
    log(f"training the detector for {args.det_epochs} epochs ({train.count_params()} parameters)")
    train.fit(xtr, ytr, batch_size=64, epochs=args.det_epochs, validation_data=(xte, yte), verbose=2)
    return export, xtr, (xte, bte, cte)


DET_SIDECAR = {"mean": MEAN, "std": STD, "channels": "rgb", "resize": "letterbox", "pad": 0,
               "labels": "shapes_labels.txt",
               "decoder": {"kind": "yolo", "layout": "v8", "coords": "normalized", "score_threshold": 0.3,
                           "iou_threshold": 0.5, "max_detections": 20}}


def tflite_outputs(tf, blob: bytes, xs: np.ndarray) -> list[list[np.ndarray]]:
    """Per-frame float outputs of a .tflite on normalised inputs, one frame at a time."""
    interp = tf.lite.Interpreter(model_content=blob)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    outs = interp.get_output_details()
    frames = []
    for x in xs:
        data = x[None]
        if inp["dtype"] != np.float32:
            scale, zp = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            data = np.clip(np.round(data / scale) + zp, info.min, info.max).astype(inp["dtype"])
        interp.set_tensor(inp["index"], data)
        interp.invoke()
        got = []
        for o in outs:
            v = interp.get_tensor(o["index"]).astype(np.float32)
            scale, zp = o["quantization"]
            got.append((v - zp) * scale if scale else v)
        frames.append(got)
    return frames


def detector_map(tf, blob: bytes, test, sidecar: dict) -> float:
    """mAP@0.5 of a detector .tflite on letterboxed test scenes, decoded by streampi's decoder."""
    from streampi.config import ModelConfig
    from streampi.decoders import make_decoder
    from streampi.evaluation import mean_average_precision
    from streampi.model import _spec

    xs, boxes, classes = test
    interp = tf.lite.Interpreter(model_content=blob)
    interp.allocate_tensors()  # the post-process op's output shapes are known only then
    specs = [_spec(d) for d in interp.get_output_details()]
    cfg = ModelConfig(labels=LABELS, decoder=dict(sidecar["decoder"]))
    dec = make_decoder(specs, cfg)
    dets = []
    for out in tflite_outputs(tf, blob, xs):
        # the scenes are already letterboxed: input pixels are the frame's
        t = _identity(DET_SIZE)
        dets.append(dec.frame_result(out, 0, t)["detections"])
    truths = [(b * DET_SIZE, c) for b, c in zip(boxes, classes)]
    return mean_average_precision(dets, truths)[0]


def _identity(size: int):
    from streampi.preprocess import Transform

    return Transform(1.0, 1.0, 0.0, 0.0, 0, 0, size, size, size, size)


def ssd_variant(tf, export, nc: int) -> bytes:
    """The detector ending in TFLite's TFLite_Detection_PostProcess op (batch fixed at 1).

    Each cell's box is re-encoded for the op's centre-size decoding against a unit anchor
    at the origin (``y = ty``, ``h = exp(th)`` with all scales 1), and its class scores get
    the background column the op expects first; the op then ranks, suppresses and emits
    boxes, classes, scores and count.
    """
    signature = " ".join([
        'name: "TFLite_Detection_PostProcess"',
        'attr { key: "max_detections" value { i: 20 } }',
        'attr { key: "max_classes_per_detection" value { i: 1 } }',
        'attr { key: "use_regular_nms" value { b: false } }',
        'attr { key: "nms_score_threshold" value { f: 0.100000 } }',
        'attr { key: "nms_iou_threshold" value { f: 0.500000 } }',
        'attr { key: "y_scale" value { f: 1.000000 } }',
        'attr { key: "x_scale" value { f: 1.000000 } }',
        'attr { key: "h_scale" value { f: 1.000000 } }',
        'attr { key: "w_scale" value { f: 1.000000 } }',
        f'attr {{ key: "num_classes" value {{ i: {nc} }} }}'])

    @tf.function(experimental_implements=signature)
    def postprocess(box_encodings, class_predictions, anchors):  # replaced by the op on conversion
        return (tf.constant(0.0, name="boxes"), tf.constant(0.0, name="classes"),
                tf.constant(0.0, name="scores"), tf.constant(0.0, name="num_detections"))

    cells = DET_GRID * DET_GRID
    anchors = tf.constant(np.tile(np.array([[0.0, 0.0, 1.0, 1.0]], np.float32), (cells, 1)))
    # the trained network as constants (batch norm folded into the convolutions), so that
    # nothing stays a variable in the converted graph
    convs, pending = [], None
    for layer in export.layers:
        if isinstance(layer, tf.keras.layers.Conv2D):
            w = layer.get_weights()
            pending = [w[0], w[1] if len(w) > 1 else np.zeros(w[0].shape[-1], np.float32), layer.strides[0]]
            convs.append(pending)
        elif isinstance(layer, tf.keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            k = gamma / np.sqrt(var + layer.epsilon)
            pending[0] = pending[0] * k
            pending[1] = (pending[1] - mean) * k + beta
    grid = np.stack(np.meshgrid(np.arange(DET_GRID), np.arange(DET_GRID)), -1).reshape(1, -1, 2).astype(np.float32)

    @tf.function(input_signature=[tf.TensorSpec([1, DET_SIZE, DET_SIZE, 3], tf.float32, name="image")])
    def detect(image):
        x = image
        for n, (kernel, bias, stride) in enumerate(convs):
            x = tf.nn.conv2d(x, tf.constant(kernel), stride, "SAME") + tf.constant(bias)
            if n < len(convs) - 1:
                x = tf.nn.relu(x)
        sig = tf.sigmoid(tf.reshape(x, [1, cells, 4 + nc]))
        xy = (sig[..., :2] * 2.0 - 0.5 + grid) / DET_GRID
        wh = sig[..., 2:4] * DET_MAX_WH
        enc = tf.stack([xy[..., 1], xy[..., 0], tf.math.log(wh[..., 1] + 1e-6), tf.math.log(wh[..., 0] + 1e-6)], -1)
        scores = tf.concat([tf.zeros_like(sig[..., :1]), sig[..., 4:]], -1)
        return postprocess(enc, scores, anchors)

    import tempfile

    module = tf.Module()
    module.detect = detect
    with tempfile.TemporaryDirectory() as tmp:  # via a SavedModel, as TF's detection exports go
        tf.saved_model.save(module, tmp, signatures={"serving_default": detect.get_concrete_function()})
        conv = tf.lite.TFLiteConverter.from_saved_model(tmp)
        conv.allow_custom_ops = True
        return conv.convert()


def make_detector(tf, args, report: list[str]) -> None:
    if args.detector_weights:
        tf.keras.utils.set_random_seed(17)
        _, export = build_detector(tf)
        export.load_weights(args.detector_weights)
        log(f"loaded trained weights from {args.detector_weights}; drawing scenes")
        xtr = draw_scenes(ScenesGenerator(seed=101), 400, tf, 5)[0]
    else:
        export, xtr, _ = train_detector(tf, args)
    test = draw_scenes(ScenesGenerator(seed=303), args.det_test, tf, 7)

    def rep():
        for i in range(0, 400, 4):
            yield [xtr[i:i + 4]]

    report.append("| shapes detector | size | mAP@0.5 on fresh scenes (TFLite interpreter) |\n|---|---|---|")
    for quant, name in (("float32", "shapes_detector_float32.tflite"), ("int8", "shapes_detector.tflite")):
        blob = convert(tf, export, quant=quant, rep=rep)
        m = detector_map(tf, blob, test, DET_SIDECAR)
        if quant == "int8":
            blob = with_labels(blob, LABELS)
        write(name, blob, DET_SIDECAR)
        log(f"{name}: mAP@0.5 {m:.4f} on {args.det_test} scenes")
        report.append(f"| {name} | {len(blob) / 1024:.1f} KiB | {m * 100:.2f} % |")
    ssd_sidecar = {k: v for k, v in DET_SIDECAR.items() if k != "decoder"}
    ssd_sidecar["decoder"] = {"kind": "ssd_postprocess", "score_threshold": 0.3}
    blob = ssd_variant(tf, export, len(LABELS))
    m = detector_map(tf, blob, test, ssd_sidecar)
    write("shapes_detector_ssd.tflite", blob, ssd_sidecar)
    log(f"shapes_detector_ssd.tflite: mAP@0.5 {m:.4f}")
    report.append(f"| shapes_detector_ssd.tflite | {len(blob) / 1024:.1f} KiB | {m * 100:.2f} % "
                  "(float32, ends in TFLite_Detection_PostProcess, batch 1) |")


DETECTOR_SECTION = "## Shapes detector"


def detector_section(tf, args, report: list[str]) -> str:
    rows = "\n".join(r for r in report if r.startswith("| shapes") or r.startswith("|---"))
    trained = ("from saved weights" if args.detector_weights else
               f"{args.det_train} training scenes, {args.det_epochs} epochs")
    return (f"{DETECTOR_SECTION}\n\nMade by `scripts/make_models.py --only detector` with TensorFlow {tf.__version__} "
            f"({trained}); mAP@0.5 on {args.det_test} fresh scenes from `streampi.synthetic.ScenesGenerator`, "
            "letterboxed to 96×96, run through the TFLite interpreter and decoded by `streampi.decoders`.\n\n"
            + rows)


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


# -- an SSD detector at 320×320 (benchmarks) ----------------------------------------------
SSD320_SIZE = 320
COCO_LABELS = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush")


def ssd_anchors(grids: list[int], per_cell: list[int], min_scale: float = 0.2, max_scale: float = 0.95) -> np.ndarray:
    """SSD's multiple-grid anchors ``(N, 4)`` as ``ycenter, xcenter, h, w`` (normalised), in
    the order the heads emit them: per feature map, per cell (row-major), per anchor. The first
    map has 3 anchors a cell (scale 0.1 at 1:1, then 2:1 and 1:2), the others 6 (1:1, 2:1,
    1:2, 3:1, 1:3 and 1:1 at the geometric mean of this scale and the next)."""
    m = len(grids)
    scales = [min_scale + (max_scale - min_scale) * k / (m - 1) for k in range(m)] + [1.0]
    out = []
    for k, (g, a) in enumerate(zip(grids, per_cell)):
        if a == 3:
            shapes = [(0.1, 1.0), (scales[k], 2.0), (scales[k], 0.5)]
        else:
            shapes = [(scales[k], r) for r in (1.0, 2.0, 0.5, 3.0, 1 / 3)] + [(np.sqrt(scales[k] * scales[k + 1]), 1.0)]
        for y in range(g):
            for x in range(g):
                for s, r in shapes:
                    out.append(((y + 0.5) / g, (x + 0.5) / g, s / np.sqrt(r), s * np.sqrt(r)))
    return np.array(out, np.float32)


def make_ssd320(tf, report: list[str]) -> None:
    """``ssd_mobilenet_v2_320_int8.tflite``: the shape of the SSD detectors Frigate users run
    (a MobileNetV2 backbone at 320×320, SSDLite heads on six feature maps from 20×20 to 1×1,
    2034 anchors, 80 COCO classes, ending in TFLite_Detection_PostProcess), full-integer
    quantized with a uint8 input, random weights: for benchmarks at Frigate's size only."""
    L = tf.keras.layers
    tf.keras.utils.set_random_seed(23)
    nc = len(COCO_LABELS)
    log(f"building SSD MobileNetV2 {SSD320_SIZE}×{SSD320_SIZE}×3 with SSDLite heads (random weights)")
    backbone = tf.keras.applications.MobileNetV2(input_shape=(SSD320_SIZE, SSD320_SIZE, 3), include_top=False,
                                                 weights=None)
    maps = [backbone.get_layer("block_13_expand_relu").output, backbone.get_layer("out_relu").output]
    x = maps[-1]
    for depth in (512, 256, 256, 128):  # the extra feature maps: 5×5, 3×3, 2×2, 1×1
        x = L.ReLU(6.0)(L.BatchNormalization()(L.Conv2D(depth // 2, 1, use_bias=False)(x)))
        x = L.ReLU(6.0)(L.BatchNormalization()(L.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False)(x)))
        x = L.ReLU(6.0)(L.BatchNormalization()(L.Conv2D(depth, 1, use_bias=False)(x)))
        maps.append(x)
    per_cell = [3] + [6] * (len(maps) - 1)
    boxes, classes = [], []
    for fmap, a in zip(maps, per_cell):
        def head(n: int, fmap=fmap, a=a):  # SSDLite: a depthwise 3×3, then a 1×1 to the predictions
            y = L.ReLU(6.0)(L.BatchNormalization()(L.DepthwiseConv2D(3, padding="same", use_bias=False)(fmap)))
            return L.Reshape((-1, n))(L.Conv2D(a * n, 1)(y))
        boxes.append(head(4))
        classes.append(head(nc + 1))
    net = tf.keras.Model(backbone.input, [L.Concatenate(1)(boxes), L.Activation("sigmoid")(L.Concatenate(1)(classes))],
                         name="ssd_mobilenet_v2_320")
    # random weights with untouched batch norms fade to nothing through the backbone (every
    # box its anchor, every score alike, whatever the frame): the batch norms take the
    # statistics of a batch of scenes, so that each layer's output is normalised, and the
    # classes start at a prior of 1 % as SSD training does; a frame then gives a few boxes of
    # varied classes, places and scores that depend on it, as a trained model's do
    scenes = ScenesGenerator(seed=31)
    batch = np.stack([scenes.scene(SSD320_SIZE, SSD320_SIZE)[0] for _ in range(16)]).astype(np.float32) / 127.5 - 1
    for layer in net.layers:
        if isinstance(layer, L.BatchNormalization):
            layer.momentum = 0.0
        elif isinstance(layer, L.Conv2D) and layer.use_bias:  # the heads' last convolutions
            kernel, bias = layer.get_weights()
            if kernel.shape[-1] % (nc + 1) == 0:
                layer.set_weights([kernel, np.full_like(bias, -4.6)])
    net(batch, training=True)
    grids = [int(m.shape[1]) for m in maps]
    anchors = ssd_anchors(grids, per_cell)
    log(f"feature maps {grids}, {len(anchors)} anchors")
    signature = " ".join([
        'name: "TFLite_Detection_PostProcess"',
        'attr { key: "max_detections" value { i: 100 } }',
        'attr { key: "max_classes_per_detection" value { i: 1 } }',
        'attr { key: "detections_per_class" value { i: 100 } }',
        'attr { key: "use_regular_nms" value { b: false } }',
        'attr { key: "nms_score_threshold" value { f: 0.00000001 } }',
        'attr { key: "nms_iou_threshold" value { f: 0.600000 } }',
        'attr { key: "y_scale" value { f: 10.000000 } }',
        'attr { key: "x_scale" value { f: 10.000000 } }',
        'attr { key: "h_scale" value { f: 5.000000 } }',
        'attr { key: "w_scale" value { f: 5.000000 } }',
        f'attr {{ key: "num_classes" value {{ i: {nc} }} }}'])

    @tf.function(experimental_implements=signature)
    def postprocess(box_encodings, class_predictions, anchors):  # replaced by the op on conversion
        return (tf.constant(0.0, name="boxes"), tf.constant(0.0, name="classes"),
                tf.constant(0.0, name="scores"), tf.constant(0.0, name="num_detections"))

    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    # the network with its variables frozen into constants (the converter would keep them as
    # variables), then the post-processing op's stand-in, via a SavedModel as ssd_variant does
    spec = tf.TensorSpec([1, SSD320_SIZE, SSD320_SIZE, 3], tf.float32, name="image")
    frozen = convert_variables_to_constants_v2(tf.function(lambda image: net(image, training=False))
                                               .get_concrete_function(spec))

    @tf.function(input_signature=[spec])
    def detect(image):
        enc, scores = frozen(image)
        return postprocess(enc, scores, tf.constant(anchors))

    def rep():
        for _ in range(16):
            yield [scenes.scene(SSD320_SIZE, SSD320_SIZE)[0][None].astype(np.float32) / 127.5 - 1]

    import tempfile

    module = tf.Module()
    module.detect = detect
    with tempfile.TemporaryDirectory() as tmp:
        tf.saved_model.save(module, tmp, signatures={"serving_default": detect.get_concrete_function()})
        conv = tf.lite.TFLiteConverter.from_saved_model(tmp)
        conv.allow_custom_ops = True
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = rep
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.uint8
        blob = conv.convert()
    (OUT / "coco_labels.txt").write_text("\n".join(COCO_LABELS) + "\n")
    # mean and std from the uint8 input's quantization, so that streampi's (x/255 - mean)/std,
    # quantized, is the frame's pixels as they are: what Frigate's CPU detector feeds it
    scale, zero_point = tf.lite.Interpreter(model_content=blob).get_input_details()[0]["quantization"]
    write("ssd_mobilenet_v2_320_int8.tflite", blob,
          {"mean": zero_point / 255, "std": 1 / (255 * scale), "channels": "rgb", "resize": "stretch", "labels": "coco_labels.txt",
           "decoder": {"kind": "ssd_postprocess", "score_threshold": 0.3}})
    report.append(f"| ssd_mobilenet_v2_320_int8.tflite | {len(blob) / 1024:.1f} KiB | random weights "
                  f"(benchmarks only: SSD MobileNetV2 320×320, SSDLite heads, {len(anchors)} anchors, "
                  "TFLite_Detection_PostProcess) |")


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
    ap.add_argument("--only", choices=["shapes", "detector", "mobilenet", "ssd320", "custom", "pruned"],
                    help="make one group only (pruned: only this way)")
    ap.add_argument("--train", type=int, default=30000, help="training frames (default 30000)")
    ap.add_argument("--test", type=int, default=3000, help="test frames (default 3000)")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--prune-epochs", type=int, default=4, help="fine-tuning epochs while pruning (default 4)")
    ap.add_argument("--out", help="where --only pruned writes (default .cache/pruned)")
    ap.add_argument("--det-train", type=int, default=10000, help="detector training scenes (default 10000)")
    ap.add_argument("--det-test", type=int, default=500, help="detector test scenes (default 500)")
    ap.add_argument("--det-epochs", type=int, default=16)
    ap.add_argument("--detector-weights", help="convert these trained detector weights (.weights.h5) "
                                               "instead of training")
    args = ap.parse_args()
    if args.only == "pruned":
        # tensorflow-model-optimization 0.8 prunes Keras 2 models only: tf.keras must be tf_keras,
        # chosen before TensorFlow first resolves tf.keras
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tensorflow as tf

    OUT.mkdir(parents=True, exist_ok=True)
    report: list[str] = []
    if args.only in (None, "shapes"):
        make_shapes(tf, args, report)
    if args.only in (None, "detector"):
        make_detector(tf, args, report)
    if args.only in (None, "mobilenet"):
        make_mobilenet(tf, report)
    if args.only in (None, "ssd320"):
        make_ssd320(tf, report)
    if args.only in (None, "custom"):
        make_custom_op(tf)
    if args.only == "pruned":
        make_pruned(tf, args, report)
    if report:
        print("\n".join(report))
    if report and args.only == "detector":  # replace the detector's section of MODELS.md only
        path = OUT / "MODELS.md"
        text = path.read_text() if path.is_file() else "# Bundled models\n"
        head = text.split(DETECTOR_SECTION)[0].rstrip("\n")
        path.write_text(head + "\n\n" + detector_section(tf, args, report) + "\n")
    if report and args.only is None:  # a partial run leaves the committed table alone
        text = "# Bundled models\n\nMade by `scripts/make_models.py` with TensorFlow " + tf.__version__ + ".\n\n"
        (OUT / "MODELS.md").write_text(text + "\n".join(report) + "\n")


if __name__ == "__main__":
    main()
