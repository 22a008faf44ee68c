"""Synerise's event authentication settings and the decision they imply.

Synerise keeps three lists of JS SDK event actions
(``seeds/event-authentication-settings.md``):

``anonymous_without_jwt``
    "Events accepted for anonymous customers which don't require JWT
    authentication". Empty: every event is accepted for anonymous customers.
``data_without_jwt``
    "Events that modify customer data which don't require JWT authentication".
    Default ``form.submit``, ``client.login``. Empty: every event may change
    data without a JWT, "only if the section below is empty as well".
``data_with_jwt``
    "Events that modify data and require JWT authentication". Default
    ``form.submit``. Empty: no event requires a JWT.

How a request is decided (:func:`decide`); a valid JWT makes the customer
authenticated, an invalid or expired one counts as none:

1. the action is on ``data_with_jwt``: a JWT is required, whatever else holds
   (on both data lists the JWT requirement wins) -> rule ``jwt_list``;
2. otherwise an authenticated customer is accepted, by the rule that would have
   decided without a token (see below) - the token never hurts;
3. an event that changes customer data, without a JWT:
   on ``data_without_jwt`` -> accepted (``data_list``); else, when
   ``data_with_jwt`` is empty -> accepted (``data_any`` if ``data_without_jwt``
   is empty too, else ``jwt_list_empty``); else -> needs a JWT
   (``data_not_listed``);
4. an event that does not change customer data ("anonymous": it only lands on
   the activity list of an anonymous profile), without a JWT:
   ``anonymous_without_jwt`` empty -> accepted (``anonymous_any``); on it ->
   accepted (``anonymous_list``); on ``data_without_jwt`` -> accepted
   (``data_list``: allowed to change data without a token, so allowed to be
   sent without one); else -> needs a JWT (``anonymous_not_listed``).

Event names (:data:`ACTION_PATTERN`): one or more dot-separated segments of
ASCII letters, digits, ``_`` and ``-`` (``page.visit``, ``form.submit``,
``product.addToCart``, ``custom-event``), at most 128 characters.

>>> s = EventSettings()
>>> decide(s, "form.submit", changes_customer_data=True, authenticated=False).rule
'jwt_list'
>>> decide(s, "page.visit", changes_customer_data=False, authenticated=False).accepted
True
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidecar.domain.errors import ConfigError, InvalidArgument
from sidecar.domain.verify import Verdict

#: A Synerise event action: dot-separated segments of letters, digits, ``_``, ``-``.
ACTION_PATTERN = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
MAX_ACTION_LENGTH = 128

#: The three list names, as keys of the settings file.
ANONYMOUS = "anonymous_without_jwt"
DATA_WITHOUT_JWT = "data_without_jwt"
DATA_WITH_JWT = "data_with_jwt"
LISTS = (ANONYMOUS, DATA_WITHOUT_JWT, DATA_WITH_JWT)

#: Every ``rule`` a decision can name; a metrics label set, so it is fixed.
RULES = (
    "jwt_list",  # on data_with_jwt: a JWT is required (wins over data_without_jwt)
    "data_list",  # on data_without_jwt: accepted without a JWT
    "data_any",  # both data lists empty: any event may change data without a JWT
    "jwt_list_empty",  # data_with_jwt empty: no event requires a JWT
    "data_not_listed",  # changes data, on no data list while data_with_jwt is not empty
    "anonymous_any",  # anonymous_without_jwt empty: every anonymous event accepted
    "anonymous_list",  # on anonymous_without_jwt
    "anonymous_not_listed",  # anonymous event outside a non-empty anonymous_without_jwt, data_with_jwt not empty
)

#: Actions ``sidecar events check`` shows in its decision table besides the listed ones.
COMMON_ACTIONS = ("page.visit", "product.addToCart", "form.submit", "client.login", "client.register")


def check_action(value: str, field: str = "action") -> str:
    """Check an event action against :data:`ACTION_PATTERN`; returns it unchanged."""
    if not value:
        raise InvalidArgument(field, "is required", "action_missing")
    if len(value) > MAX_ACTION_LENGTH:
        raise InvalidArgument(field, f"must be at most {MAX_ACTION_LENGTH} characters", "action_format")
    if not ACTION_PATTERN.fullmatch(value):
        raise InvalidArgument(
            field, "must be dot-separated segments of letters, digits, '_' and '-' (e.g. page.visit)", "action_format"
        )
    return value


@dataclass(frozen=True)
class EventSettings:
    """The three lists; the defaults are Synerise's standard configuration."""

    #: Events accepted for anonymous customers without a JWT; empty: all.
    anonymous_without_jwt: frozenset[str] = frozenset()
    #: Events allowed to change customer data without a JWT; empty: all, if ``data_with_jwt`` is empty too.
    data_without_jwt: frozenset[str] = frozenset({"form.submit", "client.login"})
    #: Events that change customer data only with a JWT; empty: none.
    data_with_jwt: frozenset[str] = frozenset({"form.submit"})

    def as_dict(self) -> dict[str, list[str]]:
        """The lists, sorted, keyed by their settings-file names."""
        return {name: sorted(getattr(self, name)) for name in LISTS}


#: Synerise's documented defaults (absent settings file).
DEFAULTS = EventSettings()


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether an event would be accepted as sent, and why."""

    accepted: bool
    #: The event needs a valid JWT to be accepted.
    requires_jwt: bool
    #: One of :data:`RULES`.
    rule: str
    #: A human explanation.
    reason: str

    @property
    def label(self) -> str:
        """``accepted`` or ``rejected``: the ``decision`` metrics label."""
        return "accepted" if self.accepted else "rejected"


def _without_jwt(s: EventSettings, action: str, changes_customer_data: bool) -> tuple[bool, str, str]:
    """(accepted, rule, reason) for a customer without a valid JWT."""
    if action in s.data_with_jwt:
        both = " (it is on data_without_jwt too; the JWT requirement wins)" if action in s.data_without_jwt else ""
        return False, "jwt_list", f"{action} is on data_with_jwt: it requires a valid JWT{both}"
    if changes_customer_data:
        if action in s.data_without_jwt:
            return True, "data_list", f"{action} is on data_without_jwt: it may change customer data without a JWT"
        if not s.data_with_jwt:
            if not s.data_without_jwt:
                return True, "data_any", "both data lists are empty: every event may change customer data without a JWT"
            return True, "jwt_list_empty", "data_with_jwt is empty: no event requires a JWT"
        return False, "data_not_listed", (
            f"{action} changes customer data and is not on data_without_jwt"
            + (" (empty, but data_with_jwt is not)" if not s.data_without_jwt else "")
            + ": it requires a valid JWT"
        )
    if not s.anonymous_without_jwt:
        return True, "anonymous_any", "anonymous_without_jwt is empty: every event is accepted for anonymous customers"
    if action in s.anonymous_without_jwt:
        return True, "anonymous_list", f"{action} is on anonymous_without_jwt: accepted for anonymous customers"
    if action in s.data_without_jwt:
        return True, "data_list", f"{action} is on data_without_jwt: it is accepted without a JWT"
    if not s.data_with_jwt:
        # "If this list is empty, all events sent through JS SDK won't require JWT
        # authentication": the issue makes it absolute, so it also opens the gate of
        # a non-empty anonymous_without_jwt.
        return True, "jwt_list_empty", "data_with_jwt is empty: no event requires a JWT"
    return False, "anonymous_not_listed", (
        f"{action} is not on anonymous_without_jwt: anonymous customers cannot send it; it requires a valid JWT"
    )


def decide(s: EventSettings, action: str, *, changes_customer_data: bool, authenticated: bool) -> Decision:
    """Decide one event; ``authenticated`` means a valid JWT came with it (see the module docstring)."""
    accepted, rule, reason = _without_jwt(s, action, changes_customer_data)
    if accepted:
        return Decision(True, False, rule, reason)
    if authenticated:
        return Decision(True, True, rule, f"{reason}; a valid JWT was presented")
    return Decision(False, True, rule, reason)


class EventPolicy:
    """Settings plus a token check: what ``EvaluateEvent`` runs.

    ``verify`` checks a token (:meth:`sidecar.verify.Verifier.verify`); an
    invalid or expired token counts as no token.
    """

    def __init__(self, settings: EventSettings, verify: Callable[[str], Verdict]) -> None:
        self.settings = settings
        self._verify = verify

    def evaluate(self, action: str, changes_customer_data: bool, token: str) -> tuple[Decision, Verdict | None]:
        """Validate ``action``, check ``token`` if given, decide. Returns the decision and the token verdict."""
        check_action(action)
        verdict = self._verify(token) if token else None
        authenticated = verdict is not None and verdict.valid
        decision = decide(self.settings, action, changes_customer_data=changes_customer_data,
                          authenticated=authenticated)
        if verdict is not None and not verdict.valid and decision.requires_jwt:
            decision = Decision(decision.accepted, decision.requires_jwt, decision.rule,
                                f"{decision.reason} (the JWT given is invalid: {verdict.reason})")
        return decision, verdict


class EventsConfigError(ConfigError):
    """The settings file is unusable; one line per problem."""

    reason = "events_config"

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__("\n".join(f"events config {source}: {p}" for p in problems))
        self.source = source
        self.problems = problems


def parse(data: Mapping[str, Any], source: str = "<settings>") -> tuple[EventSettings, list[str]]:
    """Validate parsed TOML; returns the settings and warnings, or raises :class:`EventsConfigError`.

    A list the file leaves out keeps its default; write ``[]`` for an empty list.
    """
    problems: list[str] = []
    lists: dict[str, frozenset[str]] = {}
    for key in data:
        if key not in LISTS:
            problems.append(f"unknown key {key!r} (allowed: {', '.join(LISTS)})")
    for name in LISTS:
        if name not in data:
            lists[name] = getattr(DEFAULTS, name)
            continue
        value = data[name]
        if not isinstance(value, list):
            problems.append(f"{name}: must be a list of event names, got {_toml_type(value)}")
            continue
        names: set[str] = set()
        for i, item in enumerate(value):
            if not isinstance(item, str):
                problems.append(f"{name}[{i}]: must be a string, got {_toml_type(item)}")
                continue
            if not item:
                problems.append(f"{name}[{i}]: must not be an empty string")
                continue
            try:
                check_action(item, f"{name}[{i}]")
            except InvalidArgument as exc:
                problems.append(f"{exc.field}: {item!r} {exc.rule}")
                continue
            names.add(item)
        lists[name] = frozenset(names)
    if problems:
        raise EventsConfigError(source, problems)
    settings = EventSettings(**lists)
    return settings, warnings(settings)


def warnings(s: EventSettings) -> list[str]:
    """Legal but noteworthy settings: events on both a no-JWT list and the JWT list."""
    found = []
    for action in sorted(s.data_with_jwt & s.data_without_jwt):
        found.append(f"{action!r} is on both {DATA_WITHOUT_JWT} and {DATA_WITH_JWT}: the JWT requirement wins")
    for action in sorted(s.data_with_jwt & s.anonymous_without_jwt):
        found.append(f"{action!r} is on both {ANONYMOUS} and {DATA_WITH_JWT}: the JWT requirement wins")
    return found


def load(path: str | None) -> tuple[EventSettings, list[str]]:
    """Read the settings file at ``path`` (``None``: the documented defaults, no warnings)."""
    if path is None:
        return DEFAULTS, []
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise EventsConfigError(path, ["does not exist"]) from None
    except IsADirectoryError:
        raise EventsConfigError(path, ["is a directory"]) from None
    except OSError as exc:
        raise EventsConfigError(path, [f"cannot read it ({exc.strerror})"]) from None
    except UnicodeDecodeError:
        raise EventsConfigError(path, ["is not UTF-8 text"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise EventsConfigError(path, [f"not valid TOML: {exc}"]) from None
    return parse(data, path)


def _toml_type(value: object) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean", dict: "a table",
            list: "a list"}.get(type(value), type(value).__name__)


def table(s: EventSettings, actions: Iterable[str] = ()) -> list[tuple[str, bool, Decision, Decision]]:
    """Decision rows for the common actions, ``actions`` and every listed one:
    (action, changes_customer_data, without a JWT, with a valid JWT)."""
    names = dict.fromkeys([*COMMON_ACTIONS, *actions, *sorted(s.anonymous_without_jwt | s.data_without_jwt
                                                               | s.data_with_jwt)])
    return [(a, changes, decide(s, a, changes_customer_data=changes, authenticated=False),
             decide(s, a, changes_customer_data=changes, authenticated=True))
            for a in names for changes in (False, True)]


__all__ = [
    "ACTION_PATTERN", "DEFAULTS", "LISTS", "RULES", "Decision", "EventPolicy", "EventSettings",
    "EventsConfigError", "check_action", "decide", "load", "parse", "table", "warnings",
]
