"""A server's runners (its interpreter processes) import the streampi the server imports,
whatever folder the server was started in: `streampi serve` run inside a folder that holds
another `streampi/` package (a clone, a decoy) serves with its own code."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from streampi.client import Producer, Subscriber
from streampi.testing import wait_subscribed

CONSOLE_SCRIPT = Path(sys.executable).with_name("streampi")


def _serve_in(folder: Path, console_script: Path = CONSOLE_SCRIPT) -> tuple[subprocess.Popen, dict | None, list[str]]:
    """``streampi serve`` (the installed console script) with ``folder`` as its working
    directory; its ready line, or None and its output when it stopped before being ready."""
    cmd = [str(console_script), "serve", "shapes_int8", "--workers", "1", "--ready-json",
           "--bind", "tcp://127.0.0.1:*", "--credit-bind", "tcp://127.0.0.1:*",
           "--publish", "tcp://127.0.0.1:*", "--control", "tcp://127.0.0.1:*"]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}
    proc = subprocess.Popen(cmd, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    for line in proc.stdout:  # ends when the server prints its ready line or exits
        lines.append(line)
        if line.startswith("{") and json.loads(line).get("ready"):
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            return proc, json.loads(line), lines
    proc.wait(30)
    return proc, None, lines


def _serves_a_frame(proc: subprocess.Popen, info: dict | None, lines: list[str]) -> None:
    """The server that ``_serve_in`` started answers a frame, then stops cleanly at SIGTERM."""
    try:
        assert info is not None, "".join(lines)
        assert not any("decoy" in line for line in lines), "".join(lines)
        frame = np.random.default_rng(1).integers(0, 256, (120, 160, 3), np.uint8)
        with Subscriber(info["publish"]) as sub:
            wait_subscribed(sub, info["credit_bind"])
            with Producer(info["credit_bind"], stream="cwd") as prod:
                prod.send(frame, seq=7)
            result = sub.recv(timeout=30)
        assert result["stream"] == "cwd" and result["seq"] == 7 and result["ok"], result
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0


def test_a_decoy_streampi_in_the_working_directory_is_not_imported_by_the_runners(tmp_path):
    decoy = tmp_path / "streampi"
    decoy.mkdir()
    (decoy / "__init__.py").write_text('"""A decoy: imports, and holds nothing."""\n')
    (decoy / "serving").mkdir()
    (decoy / "serving" / "__init__.py").write_text('raise ImportError("decoy streampi.serving")\n')
    _serves_a_frame(*_serve_in(tmp_path))


def test_a_runner_that_imported_another_streampi_is_a_clear_start_up_error(tmp_path):
    """The runners' fork server imports streampi after the server did; here PYTHONPATH, changed in
    between, puts another copy first (one whose modules are the real ones, so that it loads the
    model). The runner's start-up handshake names the streampi it imported and the server refuses
    to start, naming both, rather than serve with code it did not mean to run."""
    import streampi

    real = Path(streampi.__file__).parent
    other = tmp_path / "other" / "streampi"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text(f"__path__ = [{str(real)!r}]\n"
                                       f"exec(compile(open({str(real / '__init__.py')!r}).read(), __file__, 'exec'))\n")
    script = (f"import os, streampi\n"
              f"os.environ['PYTHONPATH'] = {str(other.parent)!r}\n"
              f"from streampi.errors import StreampiError\n"
              f"from streampi.serving import ServerOptions\n"
              f"from streampi.testing import ServerThread\n"
              f"try:\n"
              f"    ServerThread('shapes_int8', ServerOptions(workers=1)).start().stop()\n"
              f"    print('SERVED')\n"
              f"except StreampiError as exc:\n"
              f"    print('REFUSED', exc)\n")
    r = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert r.stdout.startswith("REFUSED"), r.stdout + r.stderr
    assert str(other / "__init__.py") in r.stdout and streampi.__file__ in r.stdout, r.stdout


@pytest.mark.slow
def test_an_installed_copy_started_inside_a_clone_serves_with_its_own_code(tmp_path):
    """What users hit: streampi installed from a wheel (not editable) and `streampi serve` started
    in a clone of the repository, whose streampi/ has no compiled kernels. Builds the wheel of this
    tree (about a minute: the kernels compile) into a virtual environment of its own that takes its
    other packages from this one."""
    import sysconfig

    repo = Path(__file__).resolve().parents[1]
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True, timeout=120)
    assert not list((clone / "streampi" / "_ext").glob("*.so"))  # a clone: source only
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "wheels"), str(repo)], check=True, timeout=900, cwd=tmp_path)
    env_dir = tmp_path / "installed"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=120)
    site = next((env_dir / "lib").glob("python3*/site-packages"))
    # this environment's packages (numpy, pyzmq, LiteRT…) after the new one's own: a path line, so that
    # this environment's editable hook (a .pth inside it) does not run there
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    wheel = next((tmp_path / "wheels").glob("streampi-*.whl"))
    subprocess.run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
                   check=True, timeout=300)
    where = subprocess.run([str(env_dir / "bin" / "python"), "-c", "import streampi; print(streampi.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(site)), where  # the installed copy, not this tree
    _serves_a_frame(*_serve_in(clone, env_dir / "bin" / "streampi"))
