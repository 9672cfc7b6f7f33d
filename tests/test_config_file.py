"""``streampi serve --config FILE`` and ``--print-config``: keys derived from the parser, flags over
the file, every mistake named (file, key, expected type), and a printed configuration that reads back."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from streampi.cli import build_parser, config_file
from streampi.cli.config_file import ConfigFileError, tomllib  # tomli before Python 3.11
from streampi.errors import StreampiError

CLI = [sys.executable, "-m", "streampi"]


def parse(argv: list[str]):
    return config_file.parse_args(build_parser(), argv)


def write(tmp_path: Path, text: str, name: str = "streampi.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_every_serve_option_is_a_key():
    """Derived from the parser: each long flag of serve (and the positional model) has a key."""
    sub = config_file.subparser(build_parser(), "serve")
    flags = {s[2:] for a in sub._actions for s in a.option_strings if s.startswith("--")}
    keys = set(config_file.options(sub))
    assert keys == (flags - {"help", "config", "print-config"}) | {"model"}
    kinds = {k: o.kind for k, o in config_file.options(sub).items()}
    assert kinds["workers"] == "integer" and kinds["max-delay-ms"] == "number" and kinds["no-pin"] == "boolean"
    assert kinds["bind"] == "string" and kinds["mean"] == "text" and kinds["labels"] == "string"
    assert config_file.options(sub)["policy"].repeated and not config_file.options(sub)["bind"].repeated


def test_a_new_flag_is_a_new_key_without_other_changes(tmp_path):
    parser = build_parser()
    sub = config_file.subparser(parser, "serve")
    sub.add_argument("--frobnicate-ms", type=float, default=1.5)
    path = write(tmp_path, "frobnicate-ms = 7\n")
    args = config_file.parse_args(parser, ["serve", "--config", str(path)])
    assert args.frobnicate_ms == 7.0


def test_file_values_reach_the_namespace_with_the_flags_types(tmp_path):
    path = write(tmp_path, """
        model = "shapes_uint8"
        workers = 3
        max_batch = 6          # underscores work too
        max-delay-ms = 2       # an integer where a number is expected is fine
        no-pin = true
        mean = [0.485, 0.456, 0.406]
        std = "0.5"
        labels = "/srv/labels.txt"
        policy = ["queue", "cam1=latest"]
        delegate = ["libfoo.so:threads=2,cache=on"]
        isolation = "thread"
    """)
    args = parse(["serve", "--config", str(path)])
    assert args.model == "shapes_uint8" and args.workers == 3 and args.max_batch == 6
    assert args.max_delay_ms == 2.0 and isinstance(args.max_delay_ms, float)
    assert args.no_pin is True and args.isolation == "thread"
    assert args.mean == (0.485, 0.456, 0.406) and args.std == (0.5,)
    assert args.labels == Path("/srv/labels.txt")
    assert args.policy == ["queue", "cam1=latest"]
    assert args.delegate == [("libfoo.so", {"threads": "2", "cache": "on"})]
    # what the file does not set keeps the parser's default
    assert args.threads == 1 and args.queue_size == 32 and args.bind == "tcp://127.0.0.1:5555"


def test_flags_override_the_file(tmp_path):
    path = write(tmp_path, 'workers = 3\nthreads = 2\nmodel = "shapes_uint8"\npolicy = ["queue", "a=latest"]\n'
                           'delegate = ["libfoo.so"]\n')
    args = parse(["serve", "shapes_int8", "--config", str(path), "--workers", "1", "--policy", "latest"])
    assert args.workers == 1 and args.model == "shapes_int8"
    assert args.threads == 2  # not on the command line: the file's
    # a repeatable option given on the command line replaces the file's list (it does not append to it)
    assert args.policy == ["latest"]
    assert args.delegate == [("libfoo.so", {})]
    # a flag given with the parser's default value still beats the file
    args = parse(["serve", "--config", str(path), "--threads", "1"])
    assert args.threads == 1 and args.workers == 3


def test_without_a_config_file_nothing_changes():
    plain = build_parser().parse_args(["serve", "--workers", "2", "--policy", "queue"])
    ours = parse(["serve", "--workers", "2", "--policy", "queue"])
    assert {k: v for k, v in vars(ours).items() if not k.startswith("_") and k != "func"} == \
           {k: v for k, v in vars(plain).items() if k != "func"}
    # other commands are untouched
    assert parse(["subscribe", "--count", "3"]).count == 3


def test_unknown_key_names_the_key_the_file_and_a_close_match(tmp_path):
    path = write(tmp_path, "workers = 2\nmax-bacth = 4\n")
    with pytest.raises(ConfigFileError) as err:
        parse(["serve", "--config", str(path)])
    msg = str(err.value)
    assert str(path) in msg and "'max-bacth'" in msg and "did you mean 'max-batch'" in msg
    path = write(tmp_path, "[scheduling]\nworkers = 2\n")
    with pytest.raises(ConfigFileError, match=r"unknown table 'scheduling'"):
        parse(["serve", "--config", str(path)])
    path = write(tmp_path, "zzzz = 1\n")
    with pytest.raises(ConfigFileError) as err:
        parse(["serve", "--config", str(path)])
    assert "'zzzz'" in str(err.value) and "did you mean" not in str(err.value)


@pytest.mark.parametrize("text, key, expected", [
    ('workers = "4"', "workers", "expected an integer, got a string '4'"),
    ("workers = 4.0", "workers", "expected an integer, got a number 4.0"),
    ("workers = true", "workers", "expected an integer, got a boolean True"),
    ('max-delay-ms = "2"', "max-delay-ms", "expected a number, got a string"),
    ("no-pin = 1", "no-pin", "expected a boolean (true or false), got an integer 1"),
    ("bind = 5555", "bind", "expected a string, got an integer 5555"),
    ('policy = "queue"', "policy", "expected an array whose items are each a string, got a string"),
    ("policy = [1]", "policy", "expected a string, got an integer 1"),
    ("mean = [true]", "mean", "expected a string as on the command line"),
    ("mean = {r = 1}", "mean", "got a table"),
])
def test_wrong_types_name_key_file_and_expected_type(tmp_path, text, key, expected):
    path = write(tmp_path, text + "\n")
    with pytest.raises(ConfigFileError) as err:
        parse(["serve", "--config", str(path)])
    assert str(err.value).startswith(f"{path}: {key}: ") and expected in str(err.value)


@pytest.mark.parametrize("text, message", [
    ("workers = -1", "workers: must be >= 0, got -1"),
    ('isolation = "fork"', "isolation: 'fork' is not one of 'process', 'thread'"),
    ('mean = "0.5,0.5"', "mean: give one value or one per channel (3)"),
    ('delegate = ["libfoo.so:novalue"]', "delegate: delegate options are key=value"),
    ("invoke-timeout = -1", "invoke-timeout: must be > 0"),
])
def test_values_the_flag_would_refuse_are_refused(tmp_path, text, message):
    path = write(tmp_path, text + "\n")
    with pytest.raises(ConfigFileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(["serve", "--config", str(path)])


def test_missing_file_not_toml_and_other_bad_files(tmp_path):
    with pytest.raises(ConfigFileError, match=r"configuration file .*nope.toml does not exist"):
        parse(["serve", "--config", str(tmp_path / "nope.toml")])
    path = write(tmp_path, "workers = \n")
    with pytest.raises(ConfigFileError, match=r"is not TOML: .*line 1"):
        parse(["serve", "--config", str(path)])
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'bind = "caf\xe9"\n')
    with pytest.raises(ConfigFileError, match="is not TOML: not UTF-8"):
        parse(["serve", "--config", str(path)])
    with pytest.raises(ConfigFileError, match="is a directory"):
        parse(["serve", "--config", str(tmp_path)])
    path = write(tmp_path, 'workers = 2\nmax_batch = 3\nmax-batch = 4\n')
    with pytest.raises(ConfigFileError, match="max-batch: given twice"):
        parse(["serve", "--config", str(path)])
    path = write(tmp_path, 'config = "other.toml"\n')
    with pytest.raises(ConfigFileError, match="only the command line"):
        parse(["serve", "--config", str(path)])
    assert issubclass(ConfigFileError, StreampiError)  # the CLI reports it as an error, exit code 2


def test_print_config_round_trips_every_kind_of_value(tmp_path):
    first = write(tmp_path, """
        workers = 2
        mean = [0.485, 0.456, 0.406]
        labels = "/srv/labels.txt"
        policy = ["queue", "cam1=latest"]
        delegate = ["libfoo.so:threads=2", "libbar.so"]
        control = "none"
        stop-timeout = 2.5
        channels = "bgr"
        top-k = 3
        metrics-port = 0
        log-json = true
    """)
    args = parse(["serve", "shapes_uint8", "--config", str(first), "--threads", "2", "--no-pin",
                  "--bind", 'tcp://127.0.0.1:*'])
    text = config_file.dumps(args)
    data = tomllib.loads(text)  # valid TOML
    assert data["threads"] == 2 and data["workers"] == 2 and data["model"] == "shapes_uint8"
    assert data["no-pin"] is True and data["bind"] == "tcp://127.0.0.1:*"
    assert "workers" not in text.split("# -- scheduling --")[0]  # grouped as in --help
    second = write(tmp_path, text, "printed.toml")
    again = parse(["serve", "--config", str(second)])
    for key, opt in config_file.options(config_file.subparser(build_parser(), "serve")).items():
        assert getattr(again, opt.dest) == getattr(args, opt.dest), key
    assert config_file.dumps(again) == text


def test_print_config_leaves_unset_options_out_as_comments():
    text = config_file.dumps(parse(["serve"]))
    data = tomllib.loads(text)
    assert "workers" not in data and "mean" not in data and "# workers = ...  (not set)" in text
    assert data["model"] == "shapes_int8" and data["max-batch"] == 4 and data["policy"] == []


def test_cli_print_config_and_errors_as_a_user_sees_them(tmp_path):
    path = write(tmp_path, "workers = 3\nmax-batch = 2\n")
    r = subprocess.run([*CLI, "serve", "--config", str(path), "--max-batch", "5", "--print-config"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    data = tomllib.loads(r.stdout)
    assert data["workers"] == 3 and data["max-batch"] == 5
    bad = write(tmp_path, "workers = 3\nmax-bacth = 2\n", "bad.toml")
    r = subprocess.run([*CLI, "serve", "--config", str(bad)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stdout == ""
    assert f"streampi: error: {bad}: unknown key 'max-bacth'; did you mean 'max-batch'?" in r.stderr
    assert "Traceback" not in r.stderr


def test_the_server_runs_with_what_the_file_says(tmp_path):
    """A real server started from a file alone: its workers, endpoints and policy are the file's."""
    path = write(tmp_path, """
        model = "shapes_int8"
        workers = 2
        bind = "tcp://127.0.0.1:*"
        publish = "tcp://127.0.0.1:*"
        control = "none"
        isolation = "thread"
        ready-json = true
        log-json = true
    """)
    proc = subprocess.Popen([*CLI, "serve", "--config", str(path), "--workers", "1"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        info = json.loads(proc.stdout.readline())
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert info["ready"] and info["isolation"] == "thread" and len(info["workers"]) == 1  # the flag beat the file
    assert info["bind"].startswith("tcp://127.0.0.1:") and "control" not in info
    # log-json from the file: every line is a JSON object but LiteRT's own (native code, outside `logging`)
    events = [json.loads(line) for line in err.splitlines() if not line.startswith("INFO: Created TensorFlow Lite")]
    assert any(e["logger"] == "streampi.server" and e["message"].startswith("serving shapes_int8") for e in events)
    assert events[-1]["logger"] == "streampi.cli" and events[-1]["message"] == "stopped; received 0, answered 0 (ok 0)"


def test_the_example_configuration_reads():
    example = Path(__file__).resolve().parents[1] / "contrib" / "streampi.toml"
    args = parse(["serve", "--config", str(example)])
    assert args.model == "mobilenet_v2_int8" and args.workers == 4 and args.bind == "tcp://*:5555"
    assert args.control == "tcp://127.0.0.1:5557" and args.policy == ["latest"]


def test_a_size_is_written_as_on_the_command_line_or_in_bytes(tmp_path):
    """``max-frame-memory = "128M"`` reads as the flag would, an integer of bytes too, and
    --print-config writes back what was given."""
    assert parse(["serve", "--config", str(write(tmp_path, 'max-frame-memory = "128M"\n'))]).max_frame_memory \
        == 128 * 2**20
    assert parse(["serve", "--config", str(write(tmp_path, "max-frame-memory = 1048576\n"))]).max_frame_memory \
        == 2**20
    args = parse(["serve", "--config", str(write(tmp_path, 'max-frame-memory = "1.5G"\n'))])
    assert 'max-frame-memory = "1.5G"' in config_file.dumps(args)
    with pytest.raises(ConfigFileError, match=r"max-frame-memory: .*expected a size like 2G or 512M"):
        parse(["serve", "--config", str(write(tmp_path, 'max-frame-memory = "lots"\n'))])
    with pytest.raises(ConfigFileError, match="max-frame-memory: expected a size"):
        parse(["serve", "--config", str(write(tmp_path, "max-frame-memory = true\n"))])
