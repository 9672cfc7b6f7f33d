"""A camera that only produces frames needs pyzmq, msgspec and NumPy: streampi.client must work
where the compiled kernels, every interpreter package and msgpack-python cannot be imported."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from streampi.client import Subscriber
from streampi.serving import ServerOptions
from streampi.testing import ServerThread, wait_subscribed

CAMERA = r"""
import sys

class Refuse:
    "An import hook: these packages are not installed on this camera."
    BLOCKED = ("streampi._ext", "ai_edge_litert", "tflite_runtime", "tensorflow", "cv2", "msgpack")
    def find_spec(self, name, path=None, target=None):
        if name.startswith(self.BLOCKED):
            raise ImportError(f"{name} is not installed here")
        return None

sys.meta_path.insert(0, Refuse())
import numpy as np
from streampi.client import Producer
from streampi import ShapesGenerator   # pure NumPy: fine without the kernels
try:
    import streampi.preprocess
except ImportError as exc:
    print("kernels refused:", exc)
else:
    raise SystemExit("the import hook did not work")
frame, _ = ShapesGenerator(seed=1).frame(160, 120)
with Producer(sys.argv[1], stream="camera") as cam:
    for _ in range(5):
        cam.send(frame)
loaded = sorted(m for m in sys.modules if m.startswith(("streampi._ext", "ai_edge_litert", "tflite_runtime")))
print("loaded:", loaded)
"""


def test_client_works_without_kernels_or_an_interpreter():
    with ServerThread("shapes_int8", ServerOptions(workers=1, policy="queue")) as st, Subscriber(st.results) as sub:
        wait_subscribed(sub, st.frames)
        out = subprocess.run([sys.executable, "-c", CAMERA, st.frames], capture_output=True, text=True, timeout=60)
        results = [sub.recv(timeout=10) for _ in range(5)] if out.returncode == 0 else []
    assert out.returncode == 0, out.stderr
    assert "kernels refused: streampi's compiled kernels are missing" in out.stdout
    assert "loaded: []" in out.stdout
    assert [r["seq"] for r in results] == list(range(5)) and all(r["ok"] for r in results)
    assert all(r["top"][0][1] is not None for r in results)
    assert np.isfinite([r["top"][0][2] for r in results]).all()


def test_a_camera_install_pulls_no_interpreter():
    """``pip install streampi`` on a camera Pi installs what the client needs and no TFLite
    runtime (LiteRT alone is ~20 MB of wheel); a server asks for ``streampi[litert]``."""
    import re
    from pathlib import Path

    import tomllib

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    required = {re.split(r"[<>=!~;\[ ]", dep, maxsplit=1)[0].lower() for dep in project["dependencies"]}
    assert not required & {"ai-edge-litert", "tflite-runtime", "tensorflow", "tensorflow-cpu", "opencv-python",
                           "opencv-python-headless", "av", "aiohttp", "paho-mqtt"}, required
    assert {"pyzmq", "msgspec", "numpy"} <= required
    assert any(dep.startswith("ai-edge-litert") for dep in project["optional-dependencies"]["litert"])
