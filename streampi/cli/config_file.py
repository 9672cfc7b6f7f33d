"""``streampi serve --config FILE``: every option of ``serve`` in a TOML file.

The keys are derived from the ``serve`` argument parser itself, so that a new flag is a new
key with nothing else to change: the key is the flag without its dashes (``max-batch``;
``max_batch`` is accepted too), the positional ``model`` is ``model``. Values are typed:

- a flag that takes no value (``--no-pin``) is a boolean;
- an option whose value is an integer or a number is a TOML integer or number;
- every other option is a string, exactly as on the command line (``delegate =
  "libfoo.so:threads=2"``); a comma-separated one may also be an array
  (``mean = [0.485, 0.456, 0.406]``);
- a repeatable option (``--policy``, ``--delegate``) is an array of those.

The file is read first and the flags given on the command line override it (a repeatable
option given on the command line replaces the file's list). Every value goes through the
same conversion and checks as its flag, and every mistake is an error that names the file and
the key: an unknown key (with the closest known one), a wrong type (with the expected one), a
value the flag would refuse. ``--print-config`` prints the effective configuration as TOML that
reads back through ``--config`` to the same configuration.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from ..errors import StreampiError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# options that say where the configuration comes from, or ask for help: never in a file
COMMAND_LINE_ONLY = ("help", "config", "print-config")

_BOOLEAN_ACTIONS = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse.BooleanOptionalAction)
_KIND_TEXT = {
    "boolean": "a boolean (true or false)",
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "size": 'a size: a string such as "256M" or "2G", or an integer number of bytes',
    "text": "a string as on the command line, or an array of numbers or strings (joined with commas)",
}


class ConfigFileError(StreampiError):
    """The configuration file cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class Option:
    """One key of the configuration file, derived from one argparse action."""

    key: str  # the long flag without dashes, or a positional's name
    action: argparse.Action
    kind: str  # boolean | integer | number | size | string | text
    repeated: bool  # an array of values (an append action, or nargs '*', '+' or N)
    group: str | None  # the help group's title, for comments in --print-config
    default: Any  # the parser's own default, before a file changed it

    @property
    def dest(self) -> str:
        return self.action.dest

    def expected(self) -> str:
        kind = _KIND_TEXT[self.kind]
        if self.action.choices is not None:
            kind += ", one of " + ", ".join(repr(c) for c in self.action.choices)
        return f"an array whose items are each {kind}" if self.repeated else kind


def _return_kind(convert: Any) -> str:
    """What TOML type a flag's ``type=`` function takes: from its return annotation."""
    if convert is None or convert is str:
        return "string"
    if getattr(convert, "config_kind", None):  # a type that says which TOML value it takes (sizes)
        return convert.config_kind
    if convert is int:
        return "integer"
    if convert is float:
        return "number"
    if isinstance(convert, type):  # Path and other classes built from the text
        return "string"
    try:
        returns = typing.get_type_hints(convert).get("return")
    except Exception:  # annotations that do not resolve: take the text as the command line would
        returns = None
    return {int: "integer", float: "number"}.get(returns, "text")


def subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    """The parser of one sub-command (``serve``) of the ``streampi`` parser."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return action.choices[command]
    raise KeyError(f"no sub-command {command!r}")


def options(parser: argparse.ArgumentParser) -> dict[str, Option]:
    """The keys a configuration file may hold for ``parser`` (a sub-command's parser)."""
    groups = {id(a): g.title for g in parser._action_groups for a in g._group_actions}
    found: dict[str, Option] = {}
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            continue
        longs = [s for s in action.option_strings if s.startswith("--")]
        key = longs[0][2:] if longs else action.dest.replace("_", "-")
        if key in COMMAND_LINE_ONLY:
            continue
        repeated = isinstance(action, argparse._AppendAction) or action.nargs in ("*", "+") \
            or isinstance(action.nargs, int)
        if isinstance(action, _BOOLEAN_ACTIONS):
            kind, repeated = "boolean", False
        elif isinstance(action, argparse._CountAction):
            kind = "integer"
        elif isinstance(action, (argparse._StoreAction, argparse._AppendAction)):
            if isinstance(action, argparse._AppendAction) and action.nargs not in (None, "?"):
                raise TypeError(f"--{key}: a repeatable option with several values each has no config file form")
            kind = _return_kind(action.type)
        else:
            raise TypeError(f"--{key}: {type(action).__name__} has no config file form")
        group = groups.get(id(action))
        found[key] = Option(key, action, kind, repeated, None if group in ("options", "positional arguments",
                                                                            "optional arguments") else group,
                            action.default)
    return found


def _fail(path: Path, key: str, message: str) -> ConfigFileError:
    return ConfigFileError(f"{path}: {key}: {message}")


def _one_value(opt: Option, value: Any, path: Path) -> tuple[Any, str | None]:
    """One TOML value → (the value the flag would give, its command-line text)."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if opt.kind == "integer" and isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    elif opt.kind == "number" and is_number:
        text = repr(value)
    elif opt.kind == "size" and (isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))):
        text = str(value)
    elif opt.kind in ("string", "text") and isinstance(value, str):
        text = value
    elif opt.kind == "text" and isinstance(value, list) and value and all(
            isinstance(v, (int, float, str)) and not isinstance(v, bool) for v in value):
        text = ",".join(repr(v) if isinstance(v, float) else str(v) for v in value)
    else:
        raise _fail(path, opt.key, f"expected {_KIND_TEXT[opt.kind]}, got {_toml_type(value)} {value!r}")
    try:
        converted = opt.action.type(text) if opt.action.type is not None else text
    except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
        raise _fail(path, opt.key, f"{exc} (expected {opt.expected()})") from None
    if opt.action.choices is not None and converted not in opt.action.choices:
        raise _fail(path, opt.key, f"{value!r} is not one of " + ", ".join(repr(c) for c in opt.action.choices))
    return converted, text


def _toml_type(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
            dict: "a table"}.get(type(value), f"a {type(value).__name__}")


def convert(opt: Option, value: Any, path: Path) -> tuple[Any, Any]:
    """A file's value for ``opt`` → (the value of ``args.<dest>``, its command-line text(s))."""
    if opt.kind == "boolean":
        if not isinstance(value, bool):
            raise _fail(path, opt.key, f"expected {_KIND_TEXT['boolean']}, got {_toml_type(value)} {value!r}")
        if isinstance(opt.action, argparse.BooleanOptionalAction):
            return value, None
        return (opt.action.const if value else opt.default), None
    if opt.repeated:
        if not isinstance(value, list):
            raise _fail(path, opt.key, f"expected {opt.expected()}, got {_toml_type(value)} {value!r}")
        pairs = [_one_value(opt, v, path) for v in value]
        return [p[0] for p in pairs], [p[1] for p in pairs]
    return _one_value(opt, value, path)


def read(path: Path | str, known: dict[str, Option]) -> dict[str, tuple[Any, Any]]:
    """Read and check a configuration file: ``{key: (value, command-line text)}``."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigFileError(f"configuration file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigFileError(f"configuration file {path} is a directory") from None
    except OSError as exc:
        raise ConfigFileError(f"cannot read configuration file {path}: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigFileError(f"{path} is not TOML: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"{path} is not TOML: {exc}") from None
    values: dict[str, tuple[Any, Any]] = {}
    spelled: dict[str, str] = {}
    for given, value in data.items():
        key = given.replace("_", "-")
        if key in COMMAND_LINE_ONLY:
            raise ConfigFileError(f"{path}: {given}: only the command line can give --{key}")
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            what = "table" if isinstance(value, dict) else "key"
            raise ConfigFileError(f"{path}: unknown {what} {given!r}{hint} (the keys are the options of "
                                  f"`streampi serve --help`, without their dashes)")
        if key in spelled:
            raise ConfigFileError(f"{path}: {given}: given twice (also as {spelled[key]!r})")
        spelled[key] = given
        values[key] = convert(known[key], value, path)
    return values


# -- parsing the command line with a file under it --------------------------------------------
_STATE = "_streampi_config"  # on the Namespace: (options, command-line texts) for --print-config


class _Recorder:
    """Wraps a flag's ``type=`` to remember the text it converted (the command-line form of a
    value that has no TOML form of its own, e.g. a delegate's ``PATH:key=value``)."""

    def __init__(self) -> None:
        self.texts: dict[str, list[str]] = {}

    def wrap(self, opt: Option) -> None:
        convert_text = opt.action.type
        if convert_text is None or getattr(convert_text, "_recorded", False):
            return

        @functools.wraps(convert_text)
        def recorded(text: str) -> Any:
            value = convert_text(text)
            self.texts.setdefault(opt.dest, []).append(text)
            return value

        recorded._recorded = True  # type: ignore[attr-defined]
        opt.action.type = recorded


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None = None,
               command: str = "serve") -> argparse.Namespace:
    """``parser.parse_args(argv)``, with the file of ``COMMAND --config FILE`` under the flags."""
    argv = list(sys.argv[1:] if argv is None else argv)
    sub = subparser(parser, command)
    known = options(sub)
    recorder = _Recorder()
    for opt in known.values():
        recorder.wrap(opt)
    args = parser.parse_args(argv)
    if getattr(args, "command", None) != command:
        return args
    from_file: dict[str, tuple[Any, Any]] = {}
    config = getattr(args, "config", None)
    if config is not None:
        from_file = read(config, known)
        defaults = {known[k].dest: (None if known[k].repeated else v) for k, (v, _) in from_file.items()}
        sub.set_defaults(**defaults)
        recorder.texts.clear()
        args = parser.parse_args(argv)
    texts: dict[str, Any] = {}
    for key, (value, text) in from_file.items():
        opt = known[key]
        if opt.repeated and getattr(args, opt.dest) is None:  # not on the command line: the file's list
            setattr(args, opt.dest, value)
        if opt.dest not in recorder.texts:
            texts[opt.dest] = text
    for dest, given in recorder.texts.items():
        opt = next(o for o in known.values() if o.dest == dest)
        texts[dest] = given if opt.repeated else given[-1]
    for opt in known.values():  # a repeatable option in neither place: its own default
        if opt.repeated and getattr(args, opt.dest) is None and opt.default is not None:
            setattr(args, opt.dest, list(opt.default))
    setattr(args, _STATE, (known, texts))
    return args


# -- printing the effective configuration -------------------------------------------------------
def _toml_value(opt: Option, value: Any, text: Any) -> Any:
    """The TOML form of ``args.<dest>``; ``None`` when it is not set (TOML has no null)."""
    if opt.kind == "boolean":
        if isinstance(opt.action, argparse.BooleanOptionalAction):
            return None if value is None else bool(value)
        return value == opt.action.const
    if value is None:
        return None
    if opt.repeated:
        texts = text if isinstance(text, list) and len(text) == len(value) else [None] * len(value)
        return [_scalar(opt, v, t) for v, t in zip(value, texts)]
    return _scalar(opt, value, text)


def _scalar(opt: Option, value: Any, text: str | None) -> Any:
    if opt.kind in ("text", "size") and text is not None:
        return text  # what the flag was given: converts back to the same value
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (tuple, list)) and all(isinstance(v, (int, float, str)) for v in value):
        return list(value)
    raise ConfigFileError(f"--{opt.key}: cannot write {value!r} as TOML")


def dumps(args: argparse.Namespace) -> str:
    """The effective configuration of a parsed ``serve`` command line, as TOML (``--print-config``)."""
    known, texts = getattr(args, _STATE)
    lines = ["# streampi serve: effective configuration (streampi serve --config FILE)"]
    group: str | None = ""
    for opt in known.values():
        if opt.group != group:
            lines += ["", f"# -- {opt.group or 'general'} --"]
            group = opt.group
        value = _toml_value(opt, getattr(args, opt.dest), texts.get(opt.dest))
        notes = []
        if opt.action.help and opt.action.help != argparse.SUPPRESS:
            notes.append(" ".join(opt.action.help.replace("%%", "%").split()))
        if opt.action.choices is not None:
            notes.append("one of: " + ", ".join(str(c) for c in opt.action.choices))
        if notes:
            lines.append("# " + "; ".join(notes))
        if value is None:
            lines.append(f"# {opt.key} = ...  (not set)")
        else:
            lines.append(tomli_w.dumps({opt.key: value}).rstrip("\n"))
    return "\n".join(lines) + "\n"
