"""Declare a setting once; derive its flag, its variable, its checks and its docs row.

A :class:`Setting` names a configuration field, its ``SIDECAR_*`` variable, its
flag, its :class:`Kind` (how text becomes a value, which values are allowed,
how a value is written back) and its help text. :mod:`sidecar.cli.config`
declares its settings as ``Config`` fields with :func:`setting`; the functions
here take any sequence of settings, so a test can add one and see it appear in
``--help``, in the environment and in the reference table.

>>> s = Setting("threads", 4, "SIDECAR_THREADS", "--threads", integer(1, 256), "threads", "Processes")
>>> read([s], {}, {"SIDECAR_THREADS": "6"})
{'threads': 6}
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import Field, dataclass, fields, replace
from datetime import timedelta
from typing import Any, Generic, TypeVar

from sidecar.domain.errors import ConfigError
from sidecar.domain.validation import parse_duration

T = TypeVar("T")


def _anything(_: object) -> str | None:
    return None


@dataclass(frozen=True)
class Kind(Generic[T]):
    """How a setting's text becomes a value and which values are allowed.

    ``parse`` raises :class:`ValueError` whose message is the rule the text broke;
    ``check`` returns the rule a parsed value breaks (``None``: allowed); ``rule``
    says what the kind asks, for the docs.
    """

    parse: Callable[[str], T]
    show: Callable[[T], str] = str
    check: Callable[[T], str | None] = _anything
    rule: str = ""
    metavar: str = "VALUE"
    #: A flag without a value (``store_true``); its variable takes the words in :data:`TRUE` / :data:`FALSE`.
    switch: bool = False
    #: Write the rule into the reference table (ranges; choices are in the help text already).
    document_rule: bool = False


@dataclass(frozen=True)
class Setting:
    """One setting of ``sidecar serve``: a ``Config`` field, its variable and its flag."""

    name: str
    default: Any
    #: ``None``: a flag only.
    env: str | None
    flag: str
    kind: Kind[Any]
    #: Meaning, in Markdown (the reference table); ``--help`` shows it as plain text.
    help: str
    group: str
    #: The default as the docs say it, when the value alone would not explain it.
    default_doc: str | None = None
    #: An empty variable is a value (an empty salt, no metrics endpoint), not "unset".
    keep_empty: bool = False

    @property
    def label(self) -> str:
        """How error messages name the setting: its variable, else its flag."""
        return self.env or self.flag

    def default_text(self) -> str:
        """The default in Markdown."""
        if self.default_doc is not None:
            return self.default_doc
        if self.default is None:
            return "none"
        if self.kind.switch:
            return "on" if self.default else "off"
        return f"`{self.kind.show(self.default)}`"

    def convert(self, raw: object) -> Any:
        """The value of a flag or variable; :class:`ConfigError` naming the setting and the rule."""
        if self.kind.switch and isinstance(raw, bool):
            return raw
        text = str(raw)
        try:
            value = self.kind.parse(text)
        except ValueError as exc:
            raise ConfigError(f"{self.label}: {exc}, got {text!r}") from None
        self.check(value, text)
        return value

    def check(self, value: Any, text: str | None = None) -> None:
        """Refuse a value outside the kind's rule (``text``: how it was written)."""
        broken = self.kind.check(value)
        if broken is not None:
            shown = self.kind.show(value) if text is None else text
            raise ConfigError(f"{self.label}: {broken}, got {shown!r}")


def setting(env: str | None, flag: str, kind: Kind[Any], help: str, group: str, *,
            default_doc: str | None = None, keep_empty: bool = False) -> dict[str, Setting]:
    """Metadata declaring a dataclass field a setting (collected by :func:`collect`), e.g.::

        threads: int = field(default=4, metadata=setting("SIDECAR_THREADS", "--threads", integer(1, 256),
                                                         "threads of grpc's pool", "Processes"))
    """
    return {"setting": Setting("", None, env, flag, kind, help, group, default_doc, keep_empty)}


def collect(cls: type) -> tuple[Setting, ...]:
    """The settings declared with :func:`setting` on the fields of dataclass ``cls``, in field order,
    with the fields' names and defaults."""
    found: tuple[Field[Any], ...] = fields(cls)
    return tuple(replace(f.metadata["setting"], name=f.name, default=f.default) for f in found if "setting" in f.metadata)


# --- reading ---------------------------------------------------------------------------------------


def read(settings: Sequence[Setting], flags: Mapping[str, object | None], environ: Mapping[str, str]) -> dict[str, Any]:
    """The values given, by field name: a flag (``None``: not given) wins over its variable;
    an empty value means "unset" unless the setting keeps empty values."""
    values: dict[str, Any] = {}
    for s in settings:
        raw = flags.get(s.name)
        if raw is None and s.env is not None:
            raw = environ.get(s.env)
        if raw is None or (raw == "" and not s.keep_empty):
            continue
        values[s.name] = s.convert(raw)
    return values


def check_all(settings: Sequence[Setting], obj: object) -> None:
    """The one loop that checks every field of ``obj`` against its setting's rule."""
    for s in settings:
        s.check(getattr(obj, s.name))


# --- kinds -----------------------------------------------------------------------------------------

#: Words that turn a switch on, or off, in its variable.
TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


def _switch(text: str) -> bool:
    word = text.strip().lower()
    if word in TRUE or word in FALSE:
        return word in TRUE
    raise ValueError(f"must be one of {', '.join(TRUE + FALSE)}")


SWITCH: Kind[bool] = Kind(_switch, show=lambda v: "on" if v else "off", switch=True)


def text(*, strip: bool = False, metavar: str = "TEXT") -> Kind[str]:
    """Any text (trimmed with ``strip``)."""
    return Kind(str.strip if strip else str, metavar=metavar)


PATH = text(metavar="FILE")


def _join(values: tuple[str, ...]) -> str:
    return ",".join(values)


def _split(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def comma_list(metavar: str = "ADDR[,ADDR...]") -> Kind[tuple[str, ...]]:
    """Comma-separated items, trimmed; empty items dropped."""
    return Kind(_split, show=_join, metavar=metavar)


def choice(*values: str, case: Callable[[str], str] = str.lower, rule: str | None = None) -> Kind[str]:
    """One of ``values``, compared after ``case`` (``str.lower`` or ``str.upper``)."""
    rule = rule or f"must be one of {', '.join(values)}"
    return Kind(lambda t: case(t.strip()), check=lambda v: None if v in values else rule,
                rule=rule, metavar="{" + ",".join(values) + "}")


def _bounds(lo: str, hi: str, lo_open: bool, hi_open: bool, zero: str) -> str:
    upper = f"less than {hi}" if hi_open else f"at most {hi}"
    if lo == zero and not lo_open:
        return f"must be {upper}"
    return f"must be {'more than' if lo_open else 'at least'} {lo} and {upper}"


def integer(lo: int, hi: int, *, syntax: str = "must be a whole number", rule: str | None = None,
            auto: Callable[[], int] | None = None) -> Kind[int]:
    """A whole number in ``[lo, hi]``; with ``auto``, the word ``auto`` asks that function."""
    rule = rule or _bounds(str(lo), str(hi), False, False, "0")

    def parse(text: str) -> int:
        word = text.strip()
        if auto is not None and word == "auto":
            return auto()
        if not re.fullmatch(r"[0-9]+", word):
            raise ValueError(syntax)
        try:
            return int(word)
        except ValueError:  # more digits than int() takes: far out of range
            raise ValueError(rule) from None

    return Kind(parse, check=lambda v: None if lo <= v <= hi else rule, rule=rule, metavar="N", document_rule=True)


def number(lo: float, hi: float, *, lo_open: bool = False, rule: str | None = None) -> Kind[float]:
    """A finite decimal number in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``); never inf or nan."""

    def parse(text: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            raise ValueError("must be a number") from None
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    rule = rule or _bounds(_show_number(lo), _show_number(hi), lo_open, False, "0")

    def check(v: float) -> str | None:
        if not math.isfinite(v):
            return "must be a finite number"
        return None if (lo < v if lo_open else lo <= v) and v <= hi else rule

    return Kind(parse, show=_show_number, check=check, rule=rule, metavar="NUMBER", document_rule=True)


def _show_number(value: float) -> str:
    return str(int(value)) if math.isfinite(value) and value == int(value) else repr(value)


def show_duration(value: timedelta) -> str:
    """A duration the way :func:`~sidecar.domain.validation.parse_duration` reads it back (``24h``)."""
    seconds = int(value.total_seconds())
    if seconds and seconds == value.total_seconds():
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if seconds % size == 0 and seconds >= (2 * size if unit == "d" else size):
                return f"{seconds // size}{unit}"
        return f"{seconds}s"
    return "0" if not value else str(value.total_seconds())


_DURATION_SYNTAX = "duration must be seconds or a number with s/m/h/d (e.g. 30m, 24h, 6d)"


def duration(lo: timedelta, hi: timedelta, *, lo_open: bool = False, hi_open: bool = False,
             rule: str | None = None) -> Kind[timedelta]:
    """A duration (``90``, ``30m``, ``24h``, ``6d``) within the bounds."""
    rule = rule or _bounds(show_duration(lo), show_duration(hi), lo_open, hi_open, "0")

    def parse(text: str) -> timedelta:
        try:
            return parse_duration(text)
        except ValueError:
            raise ValueError(_DURATION_SYNTAX) from None
        except OverflowError:  # more days than timedelta holds: far out of range
            raise ValueError(rule) from None

    def check(v: timedelta) -> str | None:
        return None if (lo < v if lo_open else lo <= v) and (v < hi if hi_open else v <= hi) else rule

    return Kind(parse, show=show_duration, check=check, rule=rule, metavar="DURATION", document_rule=True)


def _octal(text: str) -> int:
    try:
        return int(text.strip().removeprefix("0o"), 8)
    except ValueError:
        raise ValueError(_MODE_RULE) from None


_MODE_RULE = "must be an octal file mode such as 660"
FILE_MODE: Kind[int] = Kind(_octal, show=lambda v: f"{v:04o}", check=lambda v: None if 0 <= v <= 0o777 else _MODE_RULE,
                            rule=_MODE_RULE, metavar="MODE")


# --- what is derived -------------------------------------------------------------------------------


def plain(markdown: str) -> str:
    """Markdown help as ``--help`` text: links become their words, code loses its backticks."""
    return re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", markdown).replace("`", "")


def meaning(s: Setting) -> str:
    """The help text, with the allowed range when the kind documents it."""
    if s.kind.document_rule and s.kind.rule:
        return f"{s.help}; {s.kind.rule.removeprefix('must be ')}"
    return s.help


def add_arguments(parser: argparse.ArgumentParser, settings: Sequence[Setting]) -> None:
    """One flag per setting, its value left as text (``None``: not given) for :func:`read`."""
    for s in settings:
        where = f" [{s.env}]" if s.env else ""
        help_text = f"{plain(meaning(s))}; default {plain(s.default_text())}{where}".replace("%", "%%")
        if s.kind.switch:
            parser.add_argument(s.flag, dest=s.name, action="store_true", default=None, help=help_text)
        else:
            parser.add_argument(s.flag, dest=s.name, metavar=s.kind.metavar, help=help_text)


def groups(settings: Sequence[Setting]) -> dict[str, list[Setting]]:
    """The settings by group, groups in the order they first appear."""
    by_group: dict[str, list[Setting]] = {}
    for s in settings:
        by_group.setdefault(s.group, []).append(s)
    return by_group


def _cell(markdown: str) -> str:
    return markdown.replace("|", "\\|")


def doc_table(settings: Sequence[Setting]) -> str:
    """The reference tables of docs/configuration.md: one per group, one row per setting."""
    parts: list[str] = []
    for group, members in groups(settings).items():
        parts += [f"### {group}", "", "| variable | flag | default | meaning |", "|---|---|---|---|"]
        for s in members:
            var = f"`{s.env}`" if s.env else "—"
            parts.append(f"| {var} | `{s.flag}` | {_cell(s.default_text())} | {_cell(meaning(s))} |")
        parts.append("")
    return "\n".join(parts)
