"""Frigate's ``zmq`` detector against a real server (ZeroMQ on 127.0.0.1 and ipc, real
interpreters, the bundled shapes detector).

The client here is written from Frigate's plugin (``frigate/detectors/plugins/zmq_ipc.py``,
blakeblackshear/frigate; the tensor from ``frigate/util/object.py``'s ``create_tensor_input``
and ``frigate/util/image.py``'s ``yuv_to_3_channel_yuv``; the labelmap from
``frigate/util/builtin.py``'s ``load_labels``), not from streampi's door."""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time

import cv2
import numpy as np
import pytest
import yaml
import zmq

from streampi import bundled_model
from streampi.cli import main
from streampi.client import Producer, Subscriber
from streampi.errors import StreampiError
from streampi.evaluation import mean_average_precision
from streampi.serving import ServerOptions
from streampi.synthetic import LABELS, ScenesGenerator
from streampi.testing import ServerThread, wait_subscribed

MODEL = "shapes_detector"


class FrigateZmqDetector:
    """Frigate's ``ZmqIpcDetector``, as its plugin does it: a REQ socket with RCVTIMEO and
    SNDTIMEO of ``request_timeout_ms`` and LINGER 0; the model handshake at start and after
    every timeout or ZMQ error; ``[header, tensor]`` requests; zeros on any error. It also
    keeps the raw reply frames, so that tests can check what came on the wire."""

    def __init__(self, endpoint: str, model_path: str, request_timeout_ms: int = 200, model_type: str = "ssd"):
        self._context = zmq.Context()
        self._endpoint, self._request_timeout_ms, self._linger_ms = endpoint, request_timeout_ms, 0
        self.model_path, self.model_type = model_path, model_type
        self._socket = None
        self._create_socket()
        self._model_ready = False
        self._model_name = os.path.basename(model_path)
        self._zero_result = np.zeros((20, 6), np.float32)
        self.replies: list[list[bytes]] = []  # raw reply frames of detection requests
        self.timeouts = 0
        self._initialize_model()

    def _create_socket(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=self._linger_ms)
        self._socket = self._context.socket(zmq.REQ)
        self._socket.setsockopt(zmq.RCVTIMEO, self._request_timeout_ms)
        self._socket.setsockopt(zmq.SNDTIMEO, self._request_timeout_ms)
        self._socket.setsockopt(zmq.LINGER, self._linger_ms)
        self._socket.connect(self._endpoint)

    def _initialize_model(self) -> None:
        self._model_ready = self._check_and_transfer_model()

    def _request(self, frames: list) -> list[bytes] | None:
        self._socket.send_multipart(frames)
        original = self._socket.getsockopt(zmq.RCVTIMEO)
        self._socket.setsockopt(zmq.RCVTIMEO, 30000)  # (the plugin waits 30 s for model operations)
        try:
            return self._socket.recv_multipart()
        finally:
            self._socket.setsockopt(zmq.RCVTIMEO, original)

    def _check_and_transfer_model(self) -> bool:
        try:
            frames = self._request([json.dumps({"model_request": True, "model_name": self._model_name}).encode()])
            if len(frames) != 1:
                return False
            response = json.loads(frames[0].decode("utf-8"))
            if response.get("model_available", False) and response.get("model_loaded", False):
                return True
            if response.get("model_available", False):
                return False  # "Model exists but failed to load"
            with open(self.model_path, "rb") as f:
                model_data = f.read()
            frames = self._request([json.dumps({"model_data": True, "model_name": self._model_name}).encode(),
                                    model_data])
            if len(frames) != 1:
                return False
            response = json.loads(frames[0].decode("utf-8"))
            self.transfer_message = response.get("message")
            return bool(response.get("model_saved", False) and response.get("model_loaded", False))
        except Exception:
            return False

    def _decode_response(self, frames: list[bytes]) -> np.ndarray:
        if len(frames) == 1:
            if len(frames[0]) != 20 * 6 * 4:
                return self._zero_result
            return np.frombuffer(frames[0], dtype=np.float32).reshape((20, 6))
        if len(frames) >= 2:
            header = json.loads(frames[0].decode("utf-8"))
            return np.frombuffer(frames[1], dtype=np.dtype(header.get("dtype", "float32"))).reshape(
                tuple(header.get("shape", [])))
        return self._zero_result

    def detect_raw(self, tensor_input: np.ndarray) -> np.ndarray:
        if not self._model_ready:
            return self._zero_result
        try:
            header = {"shape": list(tensor_input.shape), "dtype": str(tensor_input.dtype.name),
                      "model_type": self.model_type}
            self._socket.send_multipart([json.dumps(header).encode("utf-8"),
                                         memoryview(tensor_input.tobytes(order="C"))])
            reply = self._socket.recv_multipart()
            self.replies.append(reply)
            return self._decode_response(reply)
        except zmq.Again:
            self.timeouts += 1
            self._create_socket()
            self._initialize_model()
            return self._zero_result
        except zmq.ZMQError:
            self._create_socket()
            self._initialize_model()
            return self._zero_result

    def close(self) -> None:
        self._socket.close(linger=0)
        self._context.term()


def frigate_tensor(rgb: np.ndarray, pixel_format: str = "rgb", input_dtype: str = "int",
                   input_tensor: str = "nhwc") -> np.ndarray:
    """What Frigate sends for a region already at the model's size (create_tensor_input, then
    LocalObjectDetector._transform_input)."""
    if pixel_format == "rgb":
        img = rgb
    elif pixel_format == "bgr":
        img = np.ascontiguousarray(rgb[:, :, ::-1])
    else:  # yuv_to_3_channel_yuv of the I420 frame
        i420 = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
        h, w = rgb.shape[:2]
        flat = i420.ravel()
        img = np.empty((h, w, 3), np.uint8)
        img[:, :, 0] = flat[:h * w].reshape(h, w)
        uv = (h // 2) * (w // 2)
        img[:, :, 1] = np.repeat(np.repeat(flat[h * w:h * w + uv].reshape(h // 2, w // 2), 2, axis=0), 2, axis=1)
        img[:, :, 2] = np.repeat(np.repeat(flat[h * w + uv:].reshape(h // 2, w // 2), 2, axis=0), 2, axis=1)
    tensor = np.expand_dims(img, axis=0)
    if input_tensor == "nchw":
        tensor = np.transpose(tensor, (0, 3, 1, 2))
    if input_dtype == "float":
        tensor = tensor.astype(np.float32)
        tensor /= 255
    elif input_dtype == "float_denorm":
        tensor = tensor.astype(np.float32)
    return tensor


def frigate_options(**kw) -> ServerOptions:
    return ServerOptions(**{"workers": 2, "policy": "queue", "frigate": "tcp://127.0.0.1:*", **kw})


def native_rows(st: ServerThread, frames: list[np.ndarray], fmt: str = "rgb") -> list[np.ndarray]:
    """The same frames through Producer/Subscriber, their detections as Frigate's rows."""
    with Subscriber(st.results, streams=["native"]) as sub, Producer(st.frames, stream="native") as prod:
        wait_subscribed(sub, st.frames)
        seqs = {}
        for k, rgb in enumerate(frames):
            h, w = rgb.shape[:2]
            data = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420) if fmt == "i420" else rgb
            seqs[prod.send(data, fmt=fmt, width=w, height=h)] = k
        results = {}
        while len(results) < len(seqs):
            r = sub.recv(timeout=30)
            assert r["ok"], r
            results[seqs[r["seq"]]] = r
    return [rows_of(results[k]["detections"], *frames[k].shape[1::-1]) for k in range(len(frames))]


def rows_of(detections: list[dict], width: int, height: int) -> np.ndarray:
    """Frigate's rows, computed here from the plugin's description (not the door's code)."""
    rows = np.zeros((20, 6), np.float32)
    for i, d in enumerate(detections[:20]):
        x0, y0, x1, y1 = d["box"]
        rows[i] = [d["class"], d["score"], y0 / height, x0 / width, y1 / height, x1 / width]
    return rows


def detections_of(rows: np.ndarray, width: int, height: int) -> list[dict]:
    return [{"class": int(r[0]), "score": float(r[1]), "box": [r[3] * width, r[2] * height, r[5] * width,
                                                                r[4] * height]} for r in rows if r[1] > 0]


def frigate_stats(st: ServerThread) -> dict:
    return {k: v for k, v in st.stats.items() if k.startswith("frigate.") or k in ("received", "answered", "max_pending")}


def wait_idle(st: ServerThread, timeout: float = 30) -> dict:
    """The door's and the server's counters once every request received is answered (bounded)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        s = frigate_stats(st)
        if s.get("frigate.received", 0) == s.get("frigate.answered", 0) and s.get("received", 0) == s.get("answered", 0):
            return s
        time.sleep(0.05)
    return frigate_stats(st)


def test_four_frigate_detectors_in_parallel_get_480_bytes_each_and_the_native_boxes():
    gen = ScenesGenerator(seed=22)
    sizes = [(96, 96), (320, 320), (320, 240)]  # the model's size, and sizes the server resizes
    scenes = [gen.scene(*sizes[k % 3]) for k in range(24)]
    frames = [s[0] for s in scenes]
    with ServerThread(MODEL, frigate_options()) as st:
        endpoint = st.server.bound["frigate"]
        got: dict[int, np.ndarray] = {}
        clients = [FrigateZmqDetector(endpoint, str(bundled_model(MODEL)), request_timeout_ms=20000) for _ in range(4)]

        def work(c: int) -> None:
            for k in range(c, len(frames), 4):
                got[k] = clients[c].detect_raw(frigate_tensor(frames[k])).copy()

        threads = [threading.Thread(target=work, args=(c,)) for c in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        native = native_rows(st, frames)
        stats = wait_idle(st)
        for c in clients:
            c.close()
    assert all(c._model_ready for c in clients)
    assert [len(r) for c in clients for r in c.replies] == [1] * 24
    assert all(len(r[0]) == 480 for c in clients for r in c.replies)
    for k in range(24):
        np.testing.assert_allclose(got[k], native[k], atol=1e-6, err_msg=f"frame {k}")
    assert sum(1 for k in range(24) if got[k][0, 1] > 0) >= 20  # the scenes' shapes are found
    truths = [(b, c) for _, b, c in scenes]
    m_frigate = mean_average_precision([detections_of(got[k], *frames[k].shape[1::-1]) for k in range(24)], truths)[0]
    m_native = mean_average_precision([detections_of(native[k], *frames[k].shape[1::-1]) for k in range(24)], truths)[0]
    assert m_frigate == pytest.approx(m_native, abs=1e-9) and m_frigate > 0.8
    assert stats["frigate.received"] == stats["frigate.answered"] == stats["frigate.ok"] == 24
    assert stats["received"] == stats["answered"] >= 24 + 24  # frigate's, the native frames (and a probe)
    assert stats["frigate.handshakes"] == 4


@pytest.mark.parametrize("pixel_format, input_dtype, input_tensor", [
    ("bgr", "int", "nhwc"), ("yuv", "int", "nhwc"), ("rgb", "float", "nchw"), ("rgb", "float_denorm", "nhwc")])
def test_each_pixel_format_and_dtype_frigate_sends_gives_the_native_boxes(pixel_format, input_dtype, input_tensor):
    gen = ScenesGenerator(seed=7)
    frames = [gen.scene(96, 96)[0] for _ in range(3)] + [gen.scene(320, 240)[0]]
    opts = frigate_options(frigate_pixel_format=pixel_format, frigate_input_dtype=input_dtype)
    with ServerThread(MODEL, opts) as st:
        client = FrigateZmqDetector(st.server.bound["frigate"], str(bundled_model(MODEL)), request_timeout_ms=20000)
        got = [client.detect_raw(frigate_tensor(f, pixel_format, input_dtype, input_tensor)).copy() for f in frames]
        native = native_rows(st, frames, fmt="i420" if pixel_format == "yuv" else "rgb")
        client.close()
        stats = wait_idle(st)
    for k in range(len(frames)):
        np.testing.assert_allclose(got[k], native[k], atol=1e-6, err_msg=f"frame {k}")
    assert all(g[0, 1] > 0 for g in got)
    assert stats["frigate.ok"] == stats["frigate.received"] == len(frames)


def test_each_wrong_request_gets_480_zero_bytes_a_count_and_its_reason(caplog):
    tensor = frigate_tensor(ScenesGenerator(seed=3).scene(96, 96)[0])
    good = {"shape": [1, 96, 96, 3], "dtype": "uint8", "model_type": "ssd"}
    wrong = [
        ([b"{not json", tensor.tobytes()], "not JSON"),
        ([json.dumps([1, 96, 96, 3]).encode(), tensor.tobytes()], "JSON list"),
        ([json.dumps({"dtype": "uint8"}).encode(), tensor.tobytes()], "shape must be"),
        ([json.dumps({**good, "shape": [96, 96, 3]}).encode(), tensor.tobytes()], "shape must be"),
        ([json.dumps({**good, "shape": [1, 96, 96, 3.0]}).encode(), tensor.tobytes()], "shape must be"),
        ([json.dumps({**good, "dtype": "int16"}).encode(), tensor.tobytes()], "dtype 'int16'"),
        ([json.dumps({**good, "dtype": "float32"}).encode(), tensor.tobytes()], "dtype 'float32'"),
        ([json.dumps({**good, "shape": [2, 96, 96, 3]}).encode(), tensor.tobytes() * 2], "one image per request"),
        ([json.dumps({**good, "shape": [1, 96, 96, 4]}).encode(), bytes(96 * 96 * 4)], "no 3-channel axis"),
        ([json.dumps({**good, "shape": [1, 0, 96, 3]}).encode(), b""], "outside 1"),
        ([json.dumps({**good, "shape": [1, 100000, 100000, 3]}).encode(), b"x"], "outside 1"),
        ([json.dumps(good).encode(), tensor.tobytes()[:-1]], "needs 27648 bytes, got 27647"),
        ([json.dumps(good).encode()], "2 parts"),
        ([json.dumps(good).encode(), tensor.tobytes(), b"extra"], "2 parts"),
    ]
    with caplog.at_level(logging.WARNING, logger="streampi.frigate"), ServerThread(MODEL, frigate_options()) as st:
        ctx = zmq.Context()
        sock = ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.RCVTIMEO, 20000)
        sock.connect(st.server.bound["frigate"])
        replies = []
        for parts, _ in wrong:
            sock.send_multipart(parts)
            replies.append(sock.recv_multipart())
        sock.send_multipart([json.dumps(good).encode(), tensor.tobytes()])  # and it still serves
        after = np.frombuffer(sock.recv_multipart()[0], np.float32).reshape(20, 6)
        sock.close(linger=0)
        ctx.term()
        stats = wait_idle(st)
    assert all(len(r) == 1 and r[0] == bytes(480) for r in replies)
    assert after[0, 1] > 0
    assert stats["frigate.bad_frame"] == len(wrong) and stats["frigate.ok"] == 1
    assert stats["frigate.received"] == stats["frigate.answered"] == len(wrong) + 1
    assert stats["received"] == stats["answered"] == 1  # the bad ones never reached a worker
    logged = " | ".join(r.getMessage() for r in caplog.records if r.name == "streampi.frigate")
    for _, reason in wrong:
        assert reason in logged, reason


def test_a_header_that_changes_between_requests_on_one_socket_is_honoured_and_a_bad_one_after_good_ones_refused(
        caplog):
    """The door remembers each distinct header it has parsed: every request must still be read
    by its own header (sizes that change on one socket, the same bytes again after another),
    and a wrong header or a wrong size after good ones is still refused with its reason."""
    gen = ScenesGenerator(seed=9)
    frames = [gen.scene(96, 96)[0], gen.scene(320, 240)[0], gen.scene(96, 96)[0], gen.scene(240, 320)[0]]

    def header(shape: list[int], dtype: str = "uint8") -> bytes:
        return json.dumps({"shape": shape, "dtype": dtype, "model_type": "ssd"}).encode()

    with caplog.at_level(logging.WARNING, logger="streampi.frigate"), ServerThread(MODEL, frigate_options()) as st:
        ctx = zmq.Context()
        sock = ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.RCVTIMEO, 20000)
        sock.connect(st.server.bound["frigate"])

        def ask(parts: list[bytes]) -> np.ndarray:
            sock.send_multipart(parts)
            reply = sock.recv_multipart()
            assert len(reply) == 1 and len(reply[0]) == 480
            return np.frombuffer(reply[0], np.float32).reshape(20, 6).copy()

        good = [ask([header([1, f.shape[0], f.shape[1], 3]), frigate_tensor(f).tobytes()]) for f in frames[:2]]
        bad_dtype = ask([header([1, 96, 96, 3], "int16"), frigate_tensor(frames[0]).tobytes()])
        bad_size = ask([header([1, 240, 320, 3]), frigate_tensor(frames[0]).tobytes()])  # a known header, 96×96 bytes
        good += [ask([header([1, f.shape[0], f.shape[1], 3]), frigate_tensor(f).tobytes()]) for f in frames[2:]]
        sock.close(linger=0)
        ctx.term()
        native = native_rows(st, frames)
        stats = wait_idle(st)
    for k in range(len(frames)):
        np.testing.assert_allclose(good[k], native[k], atol=1e-6, err_msg=f"frame {k}")
    assert all(g[0, 1] > 0 for g in good)
    assert not bad_dtype.any() and not bad_size.any()
    assert stats["frigate.ok"] == len(frames) and stats["frigate.bad_frame"] == 2
    assert stats["frigate.received"] == stats["frigate.answered"] == len(frames) + 2
    logged = " | ".join(r.getMessage() for r in caplog.records if r.name == "streampi.frigate")
    assert "dtype 'int16'" in logged and "needs 230400 bytes, got 27648" in logged


def test_a_request_past_the_deadline_is_answered_empty_and_never_run():
    tensor = frigate_tensor(ScenesGenerator(seed=4).scene(96, 96)[0])
    # a deadline shorter than the door's own handling: every request is past it at hand-off
    with ServerThread(MODEL, frigate_options(frigate_deadline_ms=0.001)) as st:
        client = FrigateZmqDetector(st.server.bound["frigate"], str(bundled_model(MODEL)), request_timeout_ms=20000)
        rows = [client.detect_raw(tensor).copy() for _ in range(5)]
        client.close()
        stats = wait_idle(st)
    assert all(len(r[0]) == 480 for r in client.replies) and len(client.replies) == 5
    assert all(not r.any() for r in rows)
    assert stats["frigate.expired"] == stats["frigate.received"] == stats["frigate.answered"] == 5
    assert stats.get("received", 0) == 0  # none was handed to the server


def test_detectors_that_time_out_and_reset_mid_load_do_not_grow_what_the_server_holds():
    gen = ScenesGenerator(seed=5)
    tensors = [frigate_tensor(gen.scene(320, 320)[0]) for _ in range(8)]
    with ServerThread(MODEL, frigate_options(workers=1, max_batch=2)) as st:
        endpoint, model = st.server.bound["frigate"], str(bundled_model(MODEL))
        door = st.server.doors[0]
        impatient = [FrigateZmqDetector(endpoint, model, request_timeout_ms=1) for _ in range(3)]
        patient = FrigateZmqDetector(endpoint, model, request_timeout_ms=20000)
        patient_rows = []
        end = time.monotonic() + 20  # bounded in count and in time

        def rush(c: FrigateZmqDetector) -> None:
            for k in range(60):
                if time.monotonic() > end:
                    return
                c.detect_raw(tensors[k % len(tensors)])

        def wait_each() -> None:
            for k in range(30):
                patient_rows.append(patient.detect_raw(tensors[k % len(tensors)]).copy())

        threads = [threading.Thread(target=rush, args=(c,)) for c in impatient] + [threading.Thread(target=wait_each)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        stats = wait_idle(st)
        held, waiting = st.server.held_bytes, len(door._waiting)
        for c in impatient + [patient]:
            c.close()
    assert len(patient.replies) == 30 and all(len(r) == 1 and len(r[0]) == 480 for r in patient.replies)
    assert patient.timeouts == 0
    assert sum(c.timeouts for c in impatient) > 0  # (the load did make them give up and reset)
    assert stats["frigate.received"] == stats["frigate.answered"]
    assert stats["received"] == stats["answered"]
    assert held == 0 and waiting == 0
    assert stats.get("frigate.max_waiting", 0) <= door.max_waiting
    assert 0 < stats["max_pending"] <= 1 * 2  # never more in the server than a batch per worker (the window)
    assert any(r[0, 1] > 0 for r in patient_rows)


def test_the_model_handshake_matches_by_name_or_by_the_bytes_frigate_sends(tmp_path):
    renamed = tmp_path / "my_detector.tflite"
    shutil.copy(bundled_model(MODEL), renamed)
    other = bundled_model("shapes_detector_ssd")
    tensor = frigate_tensor(ScenesGenerator(seed=6).scene(96, 96)[0])
    with ServerThread(MODEL, frigate_options()) as st:
        endpoint = st.server.bound["frigate"]
        by_name = FrigateZmqDetector(endpoint, str(bundled_model(MODEL)))
        after_name = dict(st.stats)
        by_bytes = FrigateZmqDetector(endpoint, str(renamed))
        again = FrigateZmqDetector(endpoint, str(renamed))  # known now: no second transfer
        refused = FrigateZmqDetector(endpoint, str(other))
        rows = by_bytes.detect_raw(tensor)
        zeros = refused.detect_raw(tensor)  # Frigate does not even send: its model is not ready
        stats = wait_idle(st)
        for c in (by_name, by_bytes, again, refused):
            c.close()
    assert by_name._model_ready and after_name["frigate.handshakes"] == 1
    assert by_bytes._model_ready and again._model_ready and "is the model streampi serves" in by_bytes.transfer_message
    assert not refused._model_ready and "does not load a model Frigate sends" in refused.transfer_message
    assert rows[0, 1] > 0 and not zeros.any() and refused.replies == []
    assert stats["frigate.handshakes"] == 1 + 2 + 1 + 2
    assert stats["frigate.received"] == stats["frigate.answered"] == 1


def test_a_running_detector_is_served_again_after_the_server_restarts(tmp_path):
    endpoint = f"ipc://{tmp_path}/zmq_detector"  # the same-machine topology (Frigate's default is an ipc path)
    tensor = frigate_tensor(ScenesGenerator(seed=8).scene(96, 96)[0])
    first = ServerThread(MODEL, frigate_options(frigate=endpoint)).start()
    client = FrigateZmqDetector(endpoint, str(bundled_model(MODEL)), request_timeout_ms=200)
    phases: list[tuple[str, bool]] = []
    phase = ["first"]
    stop = threading.Event()

    def loop() -> None:
        for _ in range(2000):  # bounded
            if stop.is_set():
                return
            phases.append((phase[0], bool(client.detect_raw(tensor)[0, 1] > 0)))
            time.sleep(0.002)

    worker = threading.Thread(target=loop)
    worker.start()
    try:
        end = time.monotonic() + 20
        while not any(ok for p, ok in phases if p == "first") and time.monotonic() < end:
            time.sleep(0.01)
        phase[0] = "down"
        first.stop()
        first_stats = frigate_stats(first)
        time.sleep(0.5)  # Frigate keeps asking meanwhile: timeouts, resets, zeros
        phase[0] = "second"
        second = ServerThread(MODEL, frigate_options(frigate=endpoint)).start()
        end = time.monotonic() + 20
        while not any(ok for p, ok in phases if p == "second") and time.monotonic() < end:
            time.sleep(0.01)
    finally:
        stop.set()
        worker.join(30)
    second.stop()
    second_stats = frigate_stats(second)
    client.close()
    assert any(ok for p, ok in phases if p == "first")
    assert any(ok for p, ok in phases if p == "second")  # served again, with no restart of the client
    assert client.timeouts > 0
    for s in (first_stats, second_stats):
        assert s["frigate.received"] == s["frigate.answered"] and s["received"] == s["answered"]


def frigate_load_labels(path: str, prefill: int = 91) -> dict[int, str]:
    """Frigate's load_labels (frigate/util/builtin.py)."""
    with open(path, encoding="utf-8") as f:
        labels = {index: "unknown" for index in range(prefill)}
        lines = f.readlines()
        if lines[0].split(" ", maxsplit=1)[0].isdigit():
            pairs = [line.split(" ", maxsplit=1) for line in lines]
            labels.update({int(index): label.strip() for index, label in pairs})
        else:
            labels.update({index: line.strip() for index, line in enumerate(lines)})
        return labels


def test_frigate_config_prints_the_yaml_and_writes_the_labelmap_of_the_model(tmp_path, capsys):
    labelmap = tmp_path / "labelmap.txt"
    assert main(["frigate-config", MODEL, "--labelmap", str(labelmap), "--endpoint", "tcp://10.0.0.2:5560",
                 "--detectors", "2", "--pixel-format", "bgr"]) == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["detectors"] == {f"streampi{i}": {"type": "zmq", "endpoint": "tcp://10.0.0.2:5560",
                                                    "request_timeout_ms": 200} for i in range(2)}
    model = config["model"]
    assert (model["width"], model["height"]) == (96, 96)  # the model's input: no resize on either side
    assert model["input_pixel_format"] == "bgr" and model["input_dtype"] == "int" and model["input_tensor"] == "nhwc"
    assert os.path.basename(model["path"]) == "shapes_detector.tflite"
    assert model["labelmap_path"].endswith("labelmap.txt")
    labels = frigate_load_labels(str(labelmap))
    assert [labels[i] for i in range(len(LABELS))] == list(LABELS)


def test_frigate_config_refuses_a_model_without_boxes(capsys, tmp_path):
    assert main(["frigate-config", "shapes_int8", "--labelmap", str(tmp_path / "l.txt")]) == 2
    assert "gives no boxes" in capsys.readouterr().err
    assert not (tmp_path / "l.txt").exists()


def test_frigate_options_need_the_queue_policy_a_detection_model_and_a_folder_that_exists(tmp_path):
    assert ServerOptions(frigate="tcp://127.0.0.1:5560").stream_policies == {"frigate": "queue"}
    with pytest.raises(ValueError, match="stream 'frigate' must have the queue policy"):
        ServerOptions(frigate="tcp://127.0.0.1:5560", stream_policies={"frigate": "latest"}).check()
    with pytest.raises(ValueError, match="frigate-deadline must be > 0"):
        ServerOptions(frigate="tcp://127.0.0.1:5560", frigate_deadline_ms=0).check()
    with pytest.raises(StreampiError, match="needs a detection model"):
        ServerThread("shapes_int8", frigate_options()).start()
    with pytest.raises(StreampiError, match="does not exist"):
        ServerThread(MODEL, frigate_options(frigate=f"ipc://{tmp_path}/missing/zmq_detector")).start()


def test_the_320_ssd_benchmark_model_loads_and_the_door_gives_its_decoded_detections():
    """ssd_mobilenet_v2_320_int8 (random weights, for benchmarks at Frigate's size): what the
    model gives for a frame, decoded here from its four outputs, is what the door answers."""
    from streampi import Model, load_config
    from streampi.decoders import make_decoder

    name = "ssd_mobilenet_v2_320_int8"
    path = bundled_model(name)
    model = Model(path)
    assert model.image_input() == (320, 320, 3) and model.input.dtype == np.uint8
    assert "TFLite_Detection_PostProcess" in model.ops()
    config = load_config(path)
    assert len(config.labels) == 80 and config.labels[0] == "person"
    assert make_decoder(model.outputs, config).kind == "ssd_postprocess"
    gen = ScenesGenerator(seed=41)
    frames = [gen.scene(320, 320)[0] for _ in range(4)]
    # the model by hand: uint8 pixels are its input as they are (scale 2/255, zero point 128
    # ≈ the sidecar's (x/255 - 0.5)/0.5), then the op's outputs read by their names' order
    expected = []
    for rgb in frames:
        outs = model.run(rgb[None])
        by_name = {s.name: o for s, o in zip(model.outputs, outs)}
        boxes, classes, scores, count = (by_name[f"PartitionedCall:{k}"] for k in range(4))
        keep = [k for k in range(int(count[0])) if scores[0, k] >= 0.3]
        keep.sort(key=lambda k: -scores[0, k])
        rows = np.zeros((20, 6), np.float32)
        for r, k in enumerate(keep[:20]):
            rows[r] = [classes[0, k], scores[0, k], *np.clip(boxes[0, k], 0, 1)]
        expected.append(rows)
    with ServerThread(name, frigate_options(workers=1)) as st:
        client = FrigateZmqDetector(st.server.bound["frigate"], str(path), request_timeout_ms=20000)
        got = [client.detect_raw(frigate_tensor(rgb)).copy() for rgb in frames]
        client.close()
        stats = wait_idle(st)
    assert stats["frigate.ok"] == 4
    assert sum(int((g[:, 1] > 0).sum()) for g in got) >= 2  # (it finds boxes: not a degenerate model)
    for g, e in zip(got, expected):
        assert np.all((g[:, 0] >= 0) & (g[:, 0] < 80)) and np.all((g[:, 2:] >= 0) & (g[:, 2:] <= 1))
        np.testing.assert_allclose(g, e, atol=2e-3)  # (boxes: pixels of 320 and back)


def test_with_accept_model_the_model_frigate_sends_is_checked_saved_and_served(tmp_path):
    accept = tmp_path / "from_frigate"
    accept.mkdir()
    cache = tmp_path / "model_cache"  # Frigate's side: its model.path
    cache.mkdir()
    sent = cache / "my_ssd.tflite"
    shutil.copy(bundled_model("shapes_detector_ssd"), sent)
    # the user's sidecar for it, put in DIR beforehand (its normalisation, labels, decoder)
    sidecar = json.loads(bundled_model("shapes_detector_ssd").with_suffix(".json").read_text())
    (accept / "my_ssd.json").write_text(json.dumps({**sidecar, "labels": list(LABELS)}))
    garbage = cache / "broken.tflite"
    garbage.write_bytes(b"\x00" * 4 + b"TFL3" + os.urandom(5000))
    classifier = cache / "classes.tflite"
    shutil.copy(bundled_model("shapes_int8"), classifier)
    gen = ScenesGenerator(seed=12)
    frames = [gen.scene(96, 96)[0] for _ in range(3)]
    with ServerThread(MODEL, frigate_options(frigate_accept_model=str(accept))) as st:
        endpoint = st.server.bound["frigate"]
        bad = FrigateZmqDetector(endpoint, str(garbage))
        wrong_kind = FrigateZmqDetector(endpoint, str(classifier))
        still = st.server.model_path
        clients: list[FrigateZmqDetector] = []
        threads = [threading.Thread(target=lambda: clients.append(FrigateZmqDetector(endpoint, str(sent))))
                   for _ in range(3)]  # Frigate's detectors start together, each sends the model
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        later = FrigateZmqDetector(endpoint, str(sent))  # by name now: no transfer
        rows = [clients[0].detect_raw(frigate_tensor(f)).copy() for f in frames]
        served_path, reloads = st.server.model_path, st.stats["reloads"]
        native = native_rows(st, frames)  # the same frames through Producer: the served model now
        stats = wait_idle(st)
        for c in [bad, wrong_kind, *clients, later]:
            c.close()
    assert not bad._model_ready and "not a model streampi can serve" in bad.transfer_message
    assert not wrong_kind._model_ready and "gives no boxes" in wrong_kind.transfer_message
    assert still == bundled_model(MODEL)  # the refused ones changed nothing
    assert sorted(p.name for p in accept.iterdir()) == ["my_ssd.json", "my_ssd.tflite"]  # nothing else kept
    assert len(clients) == 3 and all(c._model_ready for c in clients)
    assert all("serves it" in c.transfer_message or "is the model streampi serves" in c.transfer_message
               for c in clients)
    assert later._model_ready and not hasattr(later, "transfer_message")
    assert served_path == accept / "my_ssd.tflite" and served_path.read_bytes() == sent.read_bytes()
    assert reloads == 1
    assert all(r[0, 1] > 0 for r in rows)
    for got, want in zip(rows, native):
        np.testing.assert_allclose(got, want, atol=1e-6)
    assert stats["frigate.models_accepted"] == 1 and stats["frigate.models_refused"] == 2
    assert stats["frigate.received"] == stats["frigate.answered"] == 3


def test_accept_model_needs_a_folder_the_server_can_write_in(tmp_path):
    with pytest.raises(StreampiError, match="not a folder this server can write in"):
        ServerThread(MODEL, frigate_options(frigate_accept_model=str(tmp_path / "missing"))).start()
