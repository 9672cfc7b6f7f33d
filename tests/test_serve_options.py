"""`streampi serve`'s options are written once: the fields of ServerOptions carry their flags,
help, groups and bounds, and the flags, the configuration file's keys and the checks all come
from there."""

from __future__ import annotations

import dataclasses

import pytest

from streampi.cli import build_parser
from streampi.cli.config_file import options as config_keys
from streampi.cli.config_file import parse_args, subparser
from streampi.cli.serve import options_from_arguments
from streampi.protocol import Limits
from streampi.serving.options import ServerOptions


def serve_options(*argv: str) -> ServerOptions:
    return options_from_arguments(parse_args(build_parser(), ["serve", *argv]))


def test_no_flag_is_the_options_defaults():
    assert serve_options() == ServerOptions()


def test_every_option_with_help_is_a_flag_and_a_key():
    keys = set(config_keys(subparser(build_parser(), "serve")))
    for f in dataclasses.fields(ServerOptions):
        if f.name == "limits":
            assert {lf.name.replace("_", "-") for lf in dataclasses.fields(Limits)} <= keys
        elif "help" in f.metadata:
            assert f.metadata.get("flag", "--" + f.name.replace("_", "-"))[2:] in keys, f.name
        else:  # set another way: the policy flag sets stream_policies; send_hwm is for benchmarks
            assert f.name in ("stream_policies", "send_hwm")


def test_each_flag_reaches_its_field():
    got = serve_options("--bind", "ipc:///tmp/v1", "--credit-bind", "none", "--no-shared-memory", "--publish",
                        "ipc:///tmp/out", "--recv-hwm", "8", "--control", "NONE", "--metrics-port", "0",
                        "--metrics-bind", "0.0.0.0", "--workers", "3", "--threads", "2", "--light-threads", "0",
                        "--max-batch", "8", "--max-delay-ms", "2.5", "--policy", "queue", "--policy", "door=latest",
                        "--queue-size", "5", "--credit", "7", "--max-streams", "9", "--max-frame-memory", "1.5G",
                        "--no-pin", "--backend", "tflite_runtime", "--delegate", "libx.so:a=1", "--isolation",
                        "thread", "--invoke-timeout", "3", "--stop-timeout", "1.5", "--curve-secret", "s.key_secret",
                        "--curve-clients", "keys/", "--max-parts", "1", "--max-pixels", "1000",
                        "--frigate", "ipc:///tmp/f", "--frigate-deadline", "150", "--frigate-pixel-format", "yuv",
                        "--frigate-input-dtype", "float", "--frigate-accept-model", "from_frigate/",
                        "--http", "0.0.0.0:8080", "--http-api-key", "k", "--http-api-key-file", "key.txt",
                        "--http-max-upload", "2M", "--http-max-requests", "3", "--http-max-connections", "9",
                        "--http-timeout", "2.5", "--view-fps", "2", "--view-width", "480", "--events", "--events-min-hits", "3", "--events-max-missed", "7",
                        "--events-max-missed-s", "2.5", "--events-min-score", "person=0.6", "--events-zones",
                        "zones.toml", "--events-snapshot-count", "9", "--events-snapshot-bytes", "4M",
                        "--mqtt", "mqtt://ha@broker", "--mqtt-password-file", "pw.txt",
                        "--mqtt-ca", "ca.pem", "--mqtt-prefix", "pi1", "--mqtt-discovery-prefix", "none",
                        "--mqtt-labels", "person,car", "--mqtt-node-id", "garage", "--mqtt-stats-interval", "5",
                        "--node-bind", "tcp://0.0.0.0:5570", "--node-send", "frame")
    want = ServerOptions(bind="ipc:///tmp/v1", credit_bind=None, shared_memory=False, publish="ipc:///tmp/out",
                         recv_hwm=8, control=None, metrics_port=0, metrics_bind="0.0.0.0", workers=3, threads=2,
                         light_threads=0, max_batch=8, max_delay_ms=2.5, policy="queue",
                         stream_policies={"door": "latest"}, queue_size=5, credit=7, max_streams=9,
                         max_frame_memory=int(1.5 * 2**30), pin=False, backend="tflite_runtime",
                         delegates=[("libx.so", {"a": "1"})], isolation="thread", invoke_timeout=3.0,
                         stop_timeout=1.5, curve_secret="s.key_secret", curve_clients="keys/",
                         limits=Limits(max_parts=1, max_pixels=1000), frigate="ipc:///tmp/f",
                         frigate_deadline_ms=150.0, frigate_pixel_format="yuv", frigate_input_dtype="float",
                         frigate_accept_model="from_frigate/", http="0.0.0.0:8080", http_api_key="k", http_api_key_file="key.txt",
                         http_max_upload=2 * 2**20, http_max_requests=3, http_max_connections=9, http_timeout=2.5,
                         view_fps=2.0, view_width=480, events=True, events_min_hits=3, events_max_missed=7, events_max_missed_s=2.5,
                         events_min_score="person=0.6", events_zones="zones.toml", events_snapshot_count=9,
                         events_snapshot_bytes=4 * 2**20,
                         mqtt="mqtt://ha@broker", mqtt_password_file="pw.txt", mqtt_ca="ca.pem", mqtt_prefix="pi1",
                         mqtt_discovery_prefix=None, mqtt_labels="person,car", mqtt_node_id="garage",
                         mqtt_stats_interval=5.0, node_bind="tcp://0.0.0.0:5570", node_send="frame")
    assert got == want
    # and every field a flag sets was changed by this line: a flag wired to nothing would show here
    defaults = ServerOptions()
    unchanged = [f.name for f in dataclasses.fields(ServerOptions)
                 if "help" in f.metadata and getattr(got, f.name) == getattr(defaults, f.name)]
    assert unchanged == []


@pytest.mark.parametrize(("argv", "message"), [
    (["--threads", "0"], "--threads: must be >= 1, got 0"),
    (["--light-threads", "-1"], "--light-threads: must be >= 0, got -1"),
    (["--invoke-timeout", "0"], "--invoke-timeout: must be > 0, got 0"),
    (["--metrics-port", "70000"], "--metrics-port: must be <= 65535, got 70000"),
    (["--max-delay-ms", "soon"], "--max-delay-ms: expected a number, got 'soon'"),
    (["--isolation", "vm"], "--isolation: invalid choice: 'vm'"),
])
def test_a_flag_out_of_its_bounds_is_refused_naming_it(argv, message, capsys):
    with pytest.raises(SystemExit):
        serve_options(*argv)
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(("change", "message"), [
    (dict(threads=0), "threads must be >= 1, got 0"),
    (dict(light_threads=-1), "light-threads must be >= 0, got -1"),
    (dict(invoke_timeout=0.0), "invoke-timeout must be > 0, got 0.0"),
    (dict(metrics_port=70000), "metrics-port must be <= 65535, got 70000"),
    (dict(isolation="vm"), "isolation must be one of process, thread, got 'vm'"),
    (dict(pin=True, shared_memory=False, stream_policies={"door": "fifo"}), "policy of stream 'door' must be one of"),
])
def test_the_python_api_checks_the_same_bounds(change, message):
    with pytest.raises(ValueError, match=message):
        ServerOptions(**change).check()
