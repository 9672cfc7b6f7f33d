"""The serving package's light modules and its small promises about options."""

from __future__ import annotations

import subprocess
import sys

from streampi.serving import ServerOptions
from streampi.testing import ServerThread

LIGHT = r"""
import sys

class Refuse:
    "An import hook: neither an interpreter nor the compiled kernels are installed here."
    BLOCKED = ("streampi._ext", "ai_edge_litert", "tflite_runtime", "tensorflow")
    def find_spec(self, name, path=None, target=None):
        if name.startswith(self.BLOCKED):
            raise ImportError(f"{name} is not installed here")
        return None

sys.meta_path.insert(0, Refuse())
import streampi.serving.options, streampi.serving.launch
from streampi.serving import ServerOptions
ServerOptions(workers=2, policy="queue").check()
try:
    import streampi.serving.server
except ImportError as exc:
    print("server refused:", exc)
else:
    raise SystemExit("the import hook did not work")
print("loaded:", sorted(m for m in sys.modules if m.startswith(("streampi._ext", "ai_edge_litert", "tflite_runtime"))))
"""


def test_options_and_launch_import_neither_an_interpreter_nor_the_kernels():
    out = subprocess.run([sys.executable, "-c", LIGHT], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "server refused:" in out.stdout and "loaded: []" in out.stdout, out.stdout


def test_server_thread_leaves_the_callers_options_as_they_were():
    opts = ServerOptions(workers=1)
    st = ServerThread("shapes_int8", opts)
    assert st.server.options.bind == "tcp://127.0.0.1:*" and st.server.options.control == "tcp://127.0.0.1:*"
    assert opts == ServerOptions(workers=1)


def test_the_old_import_paths_still_work():
    from streampi.serving.launch import start_server as launcher
    from streampi.serving.server import ServerOptions as from_server
    from streampi.testing import start_server

    assert from_server is ServerOptions and start_server is launcher
