"""Settings of both halves, each declared once, and the one loader: the argument, else
the environment variable, else the default.

A setting is a field of its half's dataclass (``flageval._config.Settings``,
``flageval.ofrep._config.OFREPConfig``) made with :func:`setting`: the field gives its
name, type and default; the metadata its variable, bounds and one line of doc. Each half
adds its own rules on top (the killswitch, where counts go, the required endpoint);
what both share is here:

* an argument that cannot be used raises ValueError naming the setting, however large
  the number (never OverflowError);
* an environment value that cannot be used is never raised: :func:`load` returns it as
  a :class:`Problem`, and the half logs it once (:func:`report_once`) and uses the
  default, or stops where no default is safe;
* a bad value is quoted by its first ``_common.QUOTE_CHARS`` (64) characters at most.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple

from ._common import check_number, describe_bounds, quote, shown

#: The longest wait a duration may ask for. Past ~1e10 s threading's waits overflow.
DAY_S = 86_400.0

#: flageval's own booleans: a spelling outside these is an error (default kept).
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


@dataclasses.dataclass(frozen=True, slots=True)
class Spec:
    """What a setting's field type does not say."""

    doc: str  # one line; the docs' meaning cell starts with it
    env: str | None = None  # the variable the loader reads
    minimum: float = 0.0  # numbers: the floor, excluded unless inclusive
    inclusive: bool = False
    maximum: float | None = None
    zero: bool = False  # numbers: 0 is allowed too (it turns the thing off)
    rule: Callable[[str], str | None] | None = None  # text: why it is unusable, or None
    parse: Callable[[str], Any] | None = None  # other types: the variable's text to a value
    check: Callable[[Any, str], Any] | None = None  # other types: an argument to a value
    secret: bool = False  # a bad value is never quoted
    more_env: tuple[str, ...] = ()  # variables the half reads itself
    default_text: str | None = None  # the docs' default, where it is not a constant
    default_from: Callable[[Mapping[str, str]], Any] | None = None  # computed default


def setting(default: Any = dataclasses.MISSING, doc: str = "", **spec: Any) -> Any:
    """A dataclass field that is a setting; ``factory`` instead of a mutable default."""
    factory = spec.pop("factory", dataclasses.MISSING)
    return dataclasses.field(
        default=default, default_factory=factory, metadata={"setting": Spec(doc, **spec)}
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Declared:
    """One setting as declared: its field and its :class:`Spec`."""

    name: str
    kind: type  # bool, int, float, str; object where spec.parse and spec.check say
    optional: bool  # None is a value (the field's type allows it)
    choices: tuple[str, ...]
    spec: Spec
    field: dataclasses.Field[Any]

    @property
    def variables(self) -> tuple[str, ...]:
        return ((self.spec.env,) if self.spec.env else ()) + self.spec.more_env

    @property
    def default(self) -> Any:
        """The constant default (dataclasses.MISSING for a required setting)."""
        f = self.field
        return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default

    def bounds(self) -> str:
        """What a number must be (``> 0``, ``>= 0.001 and <= 86400``); "" otherwise."""
        if self.kind not in (int, float):
            return ""
        s = self.spec
        return describe_bounds(s.minimum, s.inclusive, s.maximum, zero=s.zero)

    def expected(self) -> str:
        if self.kind is bool:
            return "must be one of true, false, 1, 0, yes, no, on, off"
        if self.choices:
            return f"must be one of {', '.join(self.choices)}"
        return f"must be {'an integer' if self.kind is int else 'a number'} {self.bounds()}"

    def check(self, value: Any) -> Any:
        """An argument's value, checked: ValueError naming the setting."""
        s = self.spec
        if value is None and self.optional:
            return None
        if s.check is not None:
            return s.check(value, self.name)
        if self.kind in (int, float):
            return check_number(
                value,
                self.name,
                minimum=s.minimum,
                inclusive=s.inclusive,
                integer=self.kind is int,
                maximum=s.maximum,
                zero=s.zero,
            )
        if self.kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{self.name} must be a bool, got {shown(value)}")
            return value
        if not isinstance(value, str):  # no value shown: it may be a secret
            raise ValueError(f"{self.name} must be a string, got a {type(value).__name__}")
        if self.choices and value not in self.choices:
            raise ValueError(f"{self.name} {self.expected()}; got {shown(value)}")
        problem = s.rule(value) if s.rule is not None else None
        if problem is not None:
            raise ValueError(f"{self.name} {problem}, got {shown(value)}")
        return value

    def parse(self, raw: str) -> Any:
        """A variable's text, read: ValueError saying what was expected (no name)."""
        if self.spec.parse is not None:
            return self.spec.parse(raw)
        text = raw.strip()
        if self.kind is bool:
            if text.lower() in _TRUE | _FALSE:
                return text.lower() in _TRUE
            raise ValueError(self.expected())
        if self.kind in (int, float):
            try:  # int() refuses over 4,300 digits: a ValueError too
                return self.check(int(text) if self.kind is int else float(text))
            except ValueError:
                raise ValueError(self.expected()) from None
        if self.choices and text not in self.choices:
            raise ValueError(self.expected())
        problem = self.spec.rule(text) if self.spec.rule is not None else None
        if problem is not None:
            raise ValueError(problem)
        return text


_declared: dict[type, tuple[Declared, ...]] = {}


def declared(cls: type) -> tuple[Declared, ...]:
    """The settings ``cls`` declares, in field order."""
    found = _declared.get(cls)
    if found is None:
        hints = typing.get_type_hints(cls)
        found = tuple(
            _declare(f, hints[f.name]) for f in dataclasses.fields(cls) if "setting" in f.metadata
        )
        _declared[cls] = found  # the same tuple whichever thread builds it
    return found


def _declare(f: dataclasses.Field[Any], hint: Any) -> Declared:
    spec: Spec = f.metadata["setting"]
    args = typing.get_args(hint)
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args
    if optional:
        (hint,) = [a for a in args if a is not type(None)]
    choices: tuple[str, ...] = ()
    kind: type
    if typing.get_origin(hint) is Literal:
        kind, choices = str, typing.get_args(hint)
    elif hint in (bool, int, float, str):
        kind = hint
    else:
        kind = object
        if spec.parse is None and spec.check is None:
            raise TypeError(f"setting {f.name} of type {hint} needs its own parse and check")
    return Declared(f.name, kind, optional, choices, spec, f)


class Problem(NamedTuple):
    """An environment value that cannot be used: the half says it and decides."""

    name: str
    var: str
    raw: str
    reason: str
    secret: bool

    def __str__(self) -> str:
        got = "" if self.secret else f", got {quote(self.raw)}"
        return f"{self.var} {self.reason}{got}"


class Loaded(NamedTuple):
    values: dict[str, Any]  # every setting that has a value
    origin: dict[str, str]  # setting: the variable its value came from
    problems: list[Problem]


def check_arguments(cls: type, given: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments given (None: not given), each checked: TypeError for a name ``cls``
    does not declare, ValueError naming the first unusable one."""
    settings = {d.name: d for d in declared(cls)}
    unknown = sorted(set(given) - set(settings))
    if unknown:
        raise TypeError(f"unknown setting(s) of {cls.__name__}: {', '.join(unknown)}")
    return {n: settings[n].check(v) for n, v in given.items() if v is not None}


def load(cls: type, given: Mapping[str, Any], env: Mapping[str, str]) -> Loaded:
    """Each setting of ``cls``: its argument, checked (ValueError naming it), else its
    variable's value when set, not blank and usable, else its default. An unusable
    variable is a Problem, never raised. A required setting with neither is left out."""
    values = check_arguments(cls, given)
    origin: dict[str, str] = {}
    problems: list[Problem] = []
    for d in declared(cls):
        if d.name in values:
            continue
        var = d.spec.env
        raw = env.get(var) if var else None
        if var and raw is not None and raw.strip():
            try:
                values[d.name] = d.parse(raw)
                origin[d.name] = var
                continue
            except ValueError as exc:
                problems.append(Problem(d.name, var, raw, str(exc), d.spec.secret))
        if d.spec.default_from is not None:
            values[d.name] = d.spec.default_from(env)
        elif d.default is not dataclasses.MISSING:
            values[d.name] = d.default
    return Loaded(values, origin, problems)


_reported: set[tuple[str, str, int, int]] = set()
_reported_lock = threading.Lock()


def report_once(
    logger: logging.Logger, var: str, raw: str, message: str, level: int = logging.ERROR
) -> None:
    """Log ``message`` about ``var`` once per process and value (a pipeline or provider
    built per request must not log per request); at most 1,024 such messages."""
    key = (logger.name, var, len(raw), hash(raw))
    with _reported_lock:
        if key in _reported or len(_reported) >= 1024:
            return
        _reported.add(key)
    logger.log(level, "%s", message)
