"""Slow NumPy twins of streampi's kernels: the reference the Cython path is checked against.

Written from the definitions (OpenCV's fixed-point bilinear, its area weights, BT.601
conversion, the quantization formula), independently of streampi/preprocess.py.
"""

from __future__ import annotations

import math

import numpy as np

LIMITED = (1220542, 1673527, -852492, -409993, 2116026)
FULL = (1048576, 1470104, -748830, -360857, 1858077)


def yuv420_to_rgb(buf: np.ndarray, fmt: str, w: int, h: int, full_range: bool = False) -> np.ndarray:
    buf = buf.reshape(-1).astype(np.int64)
    y = buf[: w * h].reshape(h, w)
    if fmt == "i420":
        u = buf[w * h: w * h + (w // 2) * (h // 2)].reshape(h // 2, w // 2)
        v = buf[w * h + (w // 2) * (h // 2):].reshape(h // 2, w // 2)
    else:
        uv = buf[w * h:].reshape(h // 2, w // 2, 2)
        u, v = uv[..., 0], uv[..., 1]
    u = np.repeat(np.repeat(u, 2, 0), 2, 1) - 128
    v = np.repeat(np.repeat(v, 2, 0), 2, 1) - 128
    cy, cvr, cvg, cug, cub = FULL if full_range else LIMITED
    yy = np.maximum(y - (0 if full_range else 16), 0) * cy
    half = 1 << 19
    rgb = np.stack([(yy + half + cvr * v) >> 20, (yy + half + cvg * v + cug * u) >> 20, (yy + half + cub * u) >> 20], -1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def to_rgb_or_gray(data: np.ndarray, fmt: str, w: int, h: int, out_c: int, full_range: bool = False) -> np.ndarray:
    """The frame as h×w×out_c uint8 in RGB order (or gray)."""
    flat = np.asarray(data, np.uint8).reshape(-1)
    if fmt in ("i420", "nv12"):
        if out_c == 1:  # the luma plane as it is
            return flat[: w * h].reshape(h, w, 1)
        rgb = yuv420_to_rgb(flat, fmt, w, h, full_range)
    elif fmt == "gray":
        g = flat.reshape(h, w, 1)
        return g if out_c == 1 else np.repeat(g, 3, axis=2)
    else:
        n = 3 if fmt in ("rgb", "bgr") else 4
        px = flat.reshape(h, w, n)[..., :3]
        rgb = px[..., ::-1] if fmt in ("bgr", "bgra") else px
    if out_c == 1:
        r, g, b = (rgb[..., i].astype(np.int64) for i in range(3))
        return ((r * 9798 + g * 19235 + b * 3735 + 16384) >> 15).astype(np.uint8)[..., None]
    return np.ascontiguousarray(rgb)


def linear_coeffs(ss: int, ds: int, clamp_weights: bool = True):
    scale = 1.0 / (ds / float(ss))
    d = np.arange(ds)
    f = ((d + 0.5) * scale - 0.5).astype(np.float32)
    s = np.floor(f).astype(np.int64)
    f = (f - s).astype(np.float32)
    if clamp_weights:  # columns: OpenCV clamps index and weight; rows: the index only
        lo = s < 0
        f[lo], s[lo] = 0, 0
        hi = s >= ss - 1
        f[hi], s[hi] = 0, ss - 1
    a0 = np.rint((np.float32(1) - f) * np.float32(2048)).astype(np.int64)
    a1 = np.rint(f * np.float32(2048)).astype(np.int64)
    return np.clip(s, 0, ss - 1), np.clip(s + 1, 0, ss - 1), a0, a1


def resize_linear(img: np.ndarray, dw: int, dh: int) -> np.ndarray:
    sh, sw = img.shape[:2]
    x0, x1, a0, a1 = linear_coeffs(sw, dw)
    y0, y1, b0, b1 = linear_coeffs(sh, dh, clamp_weights=False)
    im = img.astype(np.int64)
    hrow = im[:, x0] * a0[None, :, None] + im[:, x1] * a1[None, :, None]
    r = ((((hrow[y0] >> 4) * b0[:, None, None]) >> 16) + (((hrow[y1] >> 4) * b1[:, None, None]) >> 16) + 2) >> 2
    return np.clip(r, 0, 255).astype(np.uint8)


def area_parts(ss: int, ds: int) -> list[tuple[int, float, int, int, float, int, float]]:
    """OpenCV's INTER_AREA weights, per destination index, as the kernel groups them:
    (first-edge index, weight or 0, run start, run length, run weight 1/cell, last-edge
    index, weight or 0). Written from OpenCV's definition of the cells."""
    scale = ss / ds
    out = []
    for d in range(ds):
        f1 = d * scale
        f2 = f1 + scale
        cell = min(scale, ss - f1)
        s1, s2 = math.ceil(f1), min(math.floor(f2), ss - 1)
        s1 = min(s1, s2)
        fi, fa = (s1 - 1, (s1 - f1) / cell) if s1 - f1 > 1e-3 else (s1, 0.0)
        li, la = (s2, min(min(f2 - s2, 1.0), cell) / cell) if f2 - s2 > 1e-3 else (s2, 0.0)
        out.append((fi, fa, s1, s2 - s1, 1.0 / cell, li, la))
    return out


def resize_area(img: np.ndarray, dw: int, dh: int) -> np.ndarray:
    """Area averaging with OpenCV's weights, in streampi's order (float32): each destination
    row first averages its source rows as ((first edge · weight) + (the whole cells summed as
    integers) / cell) + last edge · weight, then the columns the same way, the whole cells
    summed left to right."""
    f32 = np.float32
    sh, sw = img.shape[:2]
    src = img.astype(np.int64)
    out = np.empty((dh, dw, img.shape[2]), np.float32)
    cols = area_parts(sw, dw)
    for y, (fi, fa, rs, rn, ra, li, la) in enumerate(area_parts(sh, dh)):
        run = src[rs:rs + rn].sum(axis=0).astype(f32)  # exact: integers
        acc = f32(fa) * src[fi].astype(f32) + f32(ra) * run if fa else f32(ra) * run
        if la:
            acc = acc + f32(la) * src[li].astype(f32)
        for x, (cfi, cfa, crs, crn, cra, cli, cla) in enumerate(cols):
            t = np.zeros(img.shape[2], np.float32)
            for k in range(crs, crs + crn):  # left to right, as the kernel
                t = t + acc[k]
            out[y, x] = (f32(cfa) * acc[cfi] + f32(cra) * t) + f32(cla) * acc[cli]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def rects(mode: str, w: int, h: int, ow: int, oh: int):
    if mode == "stretch":
        return (0, 0, w, h), (0, 0, ow, oh)
    if mode == "crop":
        if w * oh > h * ow:
            cw = max(1, round(h * ow / oh))
            return ((w - cw) // 2, 0, cw, h), (0, 0, ow, oh)
        ch = max(1, round(w * oh / ow))
        return (0, (h - ch) // 2, w, ch), (0, 0, ow, oh)
    s = min(ow / w, oh / h)
    dw, dh = max(1, min(ow, round(w * s))), max(1, min(oh, round(h * s)))
    return (0, 0, w, h), ((ow - dw) // 2, (oh - dh) // 2, dw, dh)


def quantize(x: np.ndarray, dtype, mean, std, scale=0.0, zp=0) -> np.ndarray:
    c = x.shape[-1]
    v = (x.astype(np.float64) / 255.0 - np.broadcast_to(np.asarray(mean, float), (c,))) / np.broadcast_to(np.asarray(std, float), (c,))
    if np.dtype(dtype) == np.float32:
        return v.astype(np.float32)
    q = v / scale
    q = np.sign(q) * np.floor(np.abs(q) + 0.5) + zp
    info = np.iinfo(dtype)
    return np.clip(q, info.min, info.max).astype(dtype)


def uses_area(interpolation, cw, ch, dw, dh) -> bool:
    if interpolation == "linear":
        return False
    if interpolation == "area":
        return cw >= dw and ch >= dh
    return cw >= dw and ch >= dh and (cw > 2 * dw or ch > 2 * dh)


def reference(data, fmt, w, h, shape, dtype, *, mean=(0.0,), std=(1.0,), scale=0.0, zp=0, channels="rgb",
              resize="stretch", pad=0, interpolation="auto", full_range=False, resampler=None) -> np.ndarray:
    """The whole path: convert, crop/letterbox, resize, normalise, quantize.

    ``resampler(img, dw, dh, area)`` replaces the NumPy resize (the OpenCV comparison uses it)."""
    oh, ow, oc = shape
    img = to_rgb_or_gray(data, fmt, w, h, oc, full_range)
    if channels == "bgr" and oc == 3:
        img = img[..., ::-1]
    (cx, cy, cw, ch), (dx, dy, dw, dh) = rects(resize, w, h, ow, oh)
    img = np.ascontiguousarray(img[cy:cy + ch, cx:cx + cw])
    area = uses_area(interpolation, cw, ch, dw, dh)
    if resampler is not None:
        small = resampler(img, dw, dh, area)
    else:
        small = resize_area(img, dw, dh) if area else resize_linear(img, dw, dh)
    canvas = np.full((oh, ow, oc), pad, np.uint8)
    canvas[dy:dy + dh, dx:dx + dw] = small.reshape(dh, dw, oc)
    return quantize(canvas, dtype, mean, std, scale, zp)
