"""Reading results as a person would: a one-line summary of what a frame's result says.

Pure Python on the result maps (:func:`streampi.protocol.decode_result`), so that
``streampi subscribe`` on a machine without the kernels or an interpreter can print them.
"""

from __future__ import annotations


def _num(v: float) -> str:
    return f"{v:.0f}"


def summarize(result: dict, max_items: int = 4) -> str:
    """A one-line human summary of a result's decoded fields (for ``streampi subscribe``)."""
    if "detections" in result:
        dets = result["detections"]
        if not dets:
            return "no detections"
        parts = [f"{d.get('label') or d['class']} {d['score']:.2f} "
                 f"[{','.join(_num(v) for v in d['box'])}]" for d in dets[:max_items]]
        more = f" +{len(dets) - max_items} more" if len(dets) > max_items else ""
        return f"{len(dets)} det: " + "; ".join(parts) + more
    if "segmentation" in result:
        seg = result["segmentation"]
        top = sorted(seg.get("fractions", {}).items(), key=lambda kv: -kv[1])[:max_items]
        return f"mask {seg['width']}x{seg['height']}: " + ", ".join(f"{k} {v * 100:.0f}%" for k, v in top)
    top = result.get("top") or []
    if top:
        return f"{top[0][1] or top[0][0]} {top[0][2]:.3f}"
    return f"{len(result.get('outputs', []))} outputs"
