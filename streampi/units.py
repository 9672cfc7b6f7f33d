"""Sizes and delegate specs as people write them (``256M``, ``libfoo.so:threads=2``).

Pure Python: the CLI's flags, the configuration file and the server's options all read
these, and none of them may pull in the kernels or an interpreter to do so.
"""

from __future__ import annotations

_UNITS = {"K": 2**10, "M": 2**20, "G": 2**30}


def parse_size_text(text: str) -> int:
    """'2G', '512M', '1.5G', '4096' → bytes; ValueError says what was expected."""
    t = text.strip().upper().rstrip("IB").rstrip("B")
    try:
        if t and t[-1] in _UNITS:
            return int(float(t[:-1]) * _UNITS[t[-1]])
        return int(float(t))
    except ValueError:
        raise ValueError(f"expected a size like 2G or 512M, got {text!r}") from None


def parse_delegate_spec(text: str) -> tuple[str, dict[str, str]]:
    """'libfoo.so:key=value,key2=value2' → ('libfoo.so', {'key': 'value', ...})."""
    path, _, opts = text.partition(":")
    options = {}
    for item in filter(None, opts.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"delegate options are key=value, got {item!r}")
        options[key] = value
    return path, options


def format_bytes(n: int | None) -> str:
    """``1.5 MiB`` / ``230.0 KiB`` for a report; ``?`` when unknown."""
    if n is None:
        return "?"
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB"
