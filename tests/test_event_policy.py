"""Event authentication settings: every combination of the three lists, the
customer data flag and the token, with outcomes written out from the sentences
of ``seeds/event-authentication-settings.md``; the settings file; the RPC over
the wire with the default and a custom settings file."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from token_forge import HOUR, NOW, claims, foreign_key, rs256  # noqa: F401  (fixture)

from sidecar.domain import event_policy as events
from sidecar.domain import keys
from sidecar.domain.event_policy import EventPolicy, EventsConfigError, EventSettings
from sidecar.domain.verify import Verifier
from sidecar.service.observer import Observer
from sidecar.v1 import identity_pb2 as pb

EVENT = "x.event"
OTHER = "other.event"

# How a list relates to EVENT: "e" empty, "h" holds EVENT (and another one),
# "o" holds only another event (non-empty, EVENT not on it).
LIST_STATES = {"e": frozenset(), "h": frozenset({EVENT, OTHER}), "o": frozenset({OTHER})}


def settings(l1: str, l2: str, l3: str) -> EventSettings:
    return EventSettings(LIST_STATES[l1], LIST_STATES[l2], LIST_STATES[l3])


# (anonymous_without_jwt, data_without_jwt, data_with_jwt, changes_customer_data,
#  accepted without a valid JWT, rule). Every one of the 3*3*3*2 = 54 cases, once.
CASES: list[tuple[str, str, str, bool, bool, str]] = [
    # --- Group A: the event is on the third list ---------------------------------
    # "Events which change customer's data and require authentication ... The events
    # on the list will require JWT authentication."  The list names events, not
    # payloads, so it holds whether or not this event changes data.  SPEC §4: "Where
    # an event is on both of the last two lists, the JWT requirement wins".
    ("e", "e", "h", False, False, "jwt_list"), ("e", "e", "h", True, False, "jwt_list"),
    ("e", "h", "h", False, False, "jwt_list"), ("e", "h", "h", True, False, "jwt_list"),
    ("e", "o", "h", False, False, "jwt_list"), ("e", "o", "h", True, False, "jwt_list"),
    ("h", "e", "h", False, False, "jwt_list"), ("h", "e", "h", True, False, "jwt_list"),
    ("h", "h", "h", False, False, "jwt_list"), ("h", "h", "h", True, False, "jwt_list"),
    ("h", "o", "h", False, False, "jwt_list"), ("h", "o", "h", True, False, "jwt_list"),
    ("o", "e", "h", False, False, "jwt_list"), ("o", "e", "h", True, False, "jwt_list"),
    ("o", "h", "h", False, False, "jwt_list"), ("o", "h", "h", True, False, "jwt_list"),
    ("o", "o", "h", False, False, "jwt_list"), ("o", "o", "h", True, False, "jwt_list"),
    # --- Group B: the event changes customer data, not on the third list ----------
    # "Events which change customer data and don't require authentication ... The
    # events added on the list will be accepted without JWT authentication."
    ("e", "h", "e", True, True, "data_list"), ("e", "h", "o", True, True, "data_list"),
    ("h", "h", "e", True, True, "data_list"), ("h", "h", "o", True, True, "data_list"),
    ("o", "h", "e", True, True, "data_list"), ("o", "h", "o", True, True, "data_list"),
    # "If this list is empty, all events sent through JS SDK are accepted without JWT
    # authentication (only if the section below is empty as well)."
    ("e", "e", "e", True, True, "data_any"), ("h", "e", "e", True, True, "data_any"),
    ("o", "e", "e", True, True, "data_any"),
    ("e", "e", "o", True, False, "data_not_listed"), ("h", "e", "o", True, False, "data_not_listed"),
    ("o", "e", "o", True, False, "data_not_listed"),
    # Third list: "If this list is empty, all events sent through JS SDK won't require
    # JWT authentication."  (It lifts the second list's restriction too.)
    ("e", "o", "e", True, True, "jwt_list_empty"), ("h", "o", "e", True, True, "jwt_list_empty"),
    ("o", "o", "e", True, True, "jwt_list_empty"),
    # Second list's title, "Events that modify customer data which don't require JWT
    # authentication": with a non-empty third list, a data change not listed needs one.
    ("e", "o", "o", True, False, "data_not_listed"), ("h", "o", "o", True, False, "data_not_listed"),
    ("o", "o", "o", True, False, "data_not_listed"),
    # --- Group C: an anonymous event (no data change), not on the third list -------
    # "If the list is empty, it means that all events sent through JS SDK are accepted
    # for anonymous customers without JWT authentication."
    ("e", "e", "e", False, True, "anonymous_any"), ("e", "e", "o", False, True, "anonymous_any"),
    ("e", "h", "e", False, True, "anonymous_any"), ("e", "h", "o", False, True, "anonymous_any"),
    ("e", "o", "e", False, True, "anonymous_any"), ("e", "o", "o", False, True, "anonymous_any"),
    # "Events accepted for anonymous customers which don't require JWT authentication
    # ... The selected events will be visible on the activity list on the profile of
    # anonymous customers."
    ("h", "e", "e", False, True, "anonymous_list"), ("h", "e", "o", False, True, "anonymous_list"),
    ("h", "h", "e", False, True, "anonymous_list"), ("h", "h", "o", False, True, "anonymous_list"),
    ("h", "o", "e", False, True, "anonymous_list"), ("h", "o", "o", False, True, "anonymous_list"),
    # Second list: "The events added on the list will be accepted without JWT
    # authentication" - allowed to change data without a token, so allowed to be sent.
    ("o", "h", "e", False, True, "data_list"), ("o", "h", "o", False, True, "data_list"),
    # Not on a non-empty first list: anonymous customers cannot send it ("some (or
    # even all) events can only be sent by customers who confirmed their identity")...
    ("o", "e", "o", False, False, "anonymous_not_listed"), ("o", "o", "o", False, False, "anonymous_not_listed"),
    # ...unless the third list is empty: "If this list is empty, all events sent
    # through JS SDK won't require JWT authentication" (the issue: "empty third list =
    # no event requires a JWT").
    ("o", "e", "e", False, True, "jwt_list_empty"), ("o", "o", "e", False, True, "jwt_list_empty"),
]

# Token states.  "The customer's identity is verified by your own backend, which
# informs Synerise that the user is authenticated": a valid JWT is a confirmed
# identity.  The issue: "an invalid or expired JWT counts as no JWT".
# token state -> (accepted when it is needed, rule unchanged)
TOKENS = {"none": False, "valid": True, "expired": False, "foreign": False}


def test_cases_cover_every_combination_exactly_once() -> None:
    seen = [(c[0], c[1], c[2], c[3]) for c in CASES]
    assert len(seen) == len(set(seen)) == 54
    assert set(seen) == set(itertools.product("eho", "eho", "eho", (False, True)))
    assert {c[5] for c in CASES} == set(events.RULES)


@pytest.fixture(scope="module")
def token_set(signing_key: keys.SigningKey, foreign_key: keys.SigningKey) -> dict[str, str]:  # noqa: F811
    return {
        "none": "",
        "valid": rs256(signing_key, claims(exp=NOW + HOUR)),
        "expired": rs256(signing_key, claims(exp=NOW - 1)),
        "foreign": rs256(foreign_key, claims(exp=NOW + HOUR)),
    }


@pytest.mark.parametrize("token_state", TOKENS)
@pytest.mark.parametrize(("l1", "l2", "l3", "changes", "accepted_without", "rule"), CASES)
def test_decision_table(signing_key: keys.SigningKey, token_set: dict[str, str], token_state: str,
                        l1: str, l2: str, l3: str, changes: bool, accepted_without: bool, rule: str) -> None:
    policy = EventPolicy(settings(l1, l2, l3), Verifier(lambda: signing_key, clock=lambda: NOW).verify)
    decision, verdict = policy.evaluate(EVENT, changes, token_set[token_state])
    authenticated = TOKENS[token_state]
    assert decision.rule == rule
    assert decision.requires_jwt is (not accepted_without)
    assert decision.accepted is (accepted_without or authenticated)
    assert (verdict is None) is (token_state == "none")
    assert decision.reason


def test_documented_defaults() -> None:
    # "The standard configuration of this section includes the following events:
    # form.submit, client.login"; "form.submit (this event is added to this list by
    # default)"; the first list starts empty.
    assert events.DEFAULTS.as_dict() == {
        "anonymous_without_jwt": [], "data_without_jwt": ["client.login", "form.submit"],
        "data_with_jwt": ["form.submit"],
    }
    s = events.DEFAULTS
    d = events.decide(s, "form.submit", changes_customer_data=True, authenticated=False)
    assert (d.accepted, d.requires_jwt, d.rule) == (False, True, "jwt_list")
    assert "JWT requirement wins" in d.reason
    d = events.decide(s, "client.login", changes_customer_data=True, authenticated=False)
    assert (d.accepted, d.requires_jwt, d.rule) == (True, False, "data_list")
    d = events.decide(s, "page.visit", changes_customer_data=False, authenticated=False)
    assert (d.accepted, d.requires_jwt, d.rule) == (True, False, "anonymous_any")
    d = events.decide(s, "product.addToCart", changes_customer_data=True, authenticated=False)
    assert (d.accepted, d.requires_jwt, d.rule) == (False, True, "data_not_listed")
    assert events.load(None) == (events.DEFAULTS, [])


# --- the settings file -----------------------------------------------------------

def write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "events.toml"
    p.write_text(text)
    return str(p)


def test_file_lists_and_left_out_list_keeps_default(tmp_path: Path) -> None:
    s, warnings = events.load(write(tmp_path, 'anonymous_without_jwt = ["page.visit", "product.addToCart"]\n'
                                              'data_with_jwt = []\n'))
    assert s.anonymous_without_jwt == {"page.visit", "product.addToCart"}
    assert s.data_without_jwt == events.DEFAULTS.data_without_jwt
    assert s.data_with_jwt == frozenset()
    assert warnings == []


def test_event_on_both_data_lists_is_allowed_with_a_warning(tmp_path: Path) -> None:
    s, warnings = events.load(write(tmp_path, 'data_without_jwt = ["form.submit", "client.login"]\n'
                                              'data_with_jwt = ["form.submit"]\n'))
    assert warnings == ["'form.submit' is on both data_without_jwt and data_with_jwt: the JWT requirement wins"]
    assert events.decide(s, "form.submit", changes_customer_data=True, authenticated=False).rule == "jwt_list"


@pytest.mark.parametrize(("text", "problem"), [
    ('colour = ["a"]\n', "unknown key 'colour' (allowed: anonymous_without_jwt, data_without_jwt, data_with_jwt)"),
    ('data_with_jwt = "form.submit"\n', "data_with_jwt: must be a list of event names, got a string"),
    ("data_with_jwt = 3\n", "data_with_jwt: must be a list of event names, got an integer"),
    ('[data_with_jwt]\nx = 1\n', "data_with_jwt: must be a list of event names, got a table"),
    ("data_with_jwt = [1]\n", "data_with_jwt[0]: must be a string, got an integer"),
    ('data_with_jwt = [""]\n', "data_with_jwt[0]: must not be an empty string"),
    ('anonymous_without_jwt = ["page visit"]\n', "anonymous_without_jwt[0]: 'page visit' must be dot-separated"),
    ('anonymous_without_jwt = ["page..visit"]\n', "anonymous_without_jwt[0]: 'page..visit' must be dot-separated"),
    ('anonymous_without_jwt = ["*"]\n', "anonymous_without_jwt[0]: '*' must be dot-separated"),
    ('anonymous_without_jwt = [".visit"]\n', "anonymous_without_jwt[0]: '.visit' must be dot-separated"),
    (f'anonymous_without_jwt = ["{"a" * 129}"]\n', "must be at most 128 characters"),
    ("data_with_jwt = [\n", "not valid TOML"),
])
def test_file_problems(tmp_path: Path, text: str, problem: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(EventsConfigError) as err:
        events.load(path)
    assert str(err.value).startswith(f"events config {path}: ")
    assert problem in str(err.value)
    assert len(str(err.value).splitlines()) == 1


def test_every_problem_gets_its_own_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'x = 1\ny = 2\ndata_with_jwt = ["ok.event", "bad event", 7]\n')
    with pytest.raises(EventsConfigError) as err:
        events.load(path)
    lines = str(err.value).splitlines()
    assert len(lines) == 4 == len(err.value.problems)
    assert all(line.startswith(f"events config {path}: ") for line in lines)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(EventsConfigError, match="does not exist"):
        events.load(str(tmp_path / "nope.toml"))
    with pytest.raises(EventsConfigError, match="is a directory"):
        events.load(str(tmp_path))


@pytest.mark.parametrize("name", ["page.visit", "form.submit", "product.addToCart", "custom-event",
                                  "a.b.c_d", "transaction.charge"])
def test_action_pattern_accepts(name: str) -> None:
    assert events.check_action(name) == name


@pytest.mark.parametrize(("name", "message"), [
    ("", "action: is required"), ("form submit", "action: must be dot-separated"),
    ("form.", "action: must be dot-separated"), ("zażółć.event", "action: must be dot-separated"),
    ("a" * 129, "action: must be at most 128 characters"),
])
def test_action_pattern_refuses(name: str, message: str) -> None:
    from sidecar.domain.errors import InvalidArgument

    with pytest.raises(InvalidArgument) as err:
        events.check_action(name)
    assert str(err.value).startswith(message)


# --- over the wire -----------------------------------------------------------------

class Decisions(Observer):
    """Records what EvaluateEvent reports through the observer hook."""

    def __init__(self) -> None:
        self.decisions: list[tuple[str, str]] = []
        self.rejections: list[tuple[str, str]] = []

    def event_decision(self, decision: str, rule: str) -> None:
        self.decisions.append((decision, rule))

    def rejected(self, rpc: str, reason: str) -> None:
        self.rejections.append((rpc, reason))


def ask(stub: object, action: str, changes: bool, jwt: str = "") -> tuple[bool, bool, str]:
    r = stub.EvaluateEvent(pb.EvaluateEventRequest(action=action, changes_customer_data=changes, jwt=jwt),  # type: ignore[attr-defined]
                           timeout=5)
    assert r.reason
    return r.accepted, r.requires_jwt, r.rule


def test_evaluate_event_over_the_wire_with_defaults(start_server, token_set: dict[str, str]) -> None:
    obs = Decisions()
    s = start_server(observer=obs, clock=lambda: NOW)
    for transport in ("tcp", "unix"):
        stub = s.stub(transport)
        assert ask(stub, "form.submit", True) == (False, True, "jwt_list")
        assert ask(stub, "form.submit", True, token_set["valid"]) == (True, True, "jwt_list")
        assert ask(stub, "form.submit", True, token_set["expired"]) == (False, True, "jwt_list")
        assert ask(stub, "form.submit", True, token_set["foreign"]) == (False, True, "jwt_list")
        assert ask(stub, "client.login", True) == (True, False, "data_list")
        assert ask(stub, "page.visit", False) == (True, False, "anonymous_any")
        assert ask(stub, "product.addToCart", True) == (False, True, "data_not_listed")
    assert obs.decisions[:7] == [("rejected", "jwt_list"), ("accepted", "jwt_list"), ("rejected", "jwt_list"),
                                 ("rejected", "jwt_list"), ("accepted", "data_list"), ("accepted", "anonymous_any"),
                                 ("rejected", "data_not_listed")]
    assert len(obs.decisions) == 14


def test_evaluate_event_over_the_wire_with_a_settings_file(start_server, tmp_path: Path,
                                                          token_set: dict[str, str]) -> None:
    path = write(tmp_path, 'anonymous_without_jwt = ["page.visit"]\n'
                           'data_without_jwt = ["newsletter.signup"]\n'
                           'data_with_jwt = ["client.login", "form.submit"]\n')
    settings_, _ = events.load(path)
    s = start_server(events=settings_, clock=lambda: NOW)
    stub = s.stub("unix")
    assert ask(stub, "page.visit", False) == (True, False, "anonymous_list")
    assert ask(stub, "product.view", False) == (False, True, "anonymous_not_listed")
    assert ask(stub, "product.view", False, token_set["valid"]) == (True, True, "anonymous_not_listed")
    assert ask(stub, "newsletter.signup", True) == (True, False, "data_list")
    assert ask(stub, "client.login", True) == (False, True, "jwt_list")
    assert ask(stub, "client.login", False, token_set["valid"]) == (True, True, "jwt_list")
    assert ask(stub, "profile.update", True, token_set["expired"]) == (False, True, "data_not_listed")


@pytest.mark.parametrize(("action", "message"), [
    ("", "action: is required"), ("bad action", "action: must be dot-separated"),
])
def test_evaluate_event_bad_action_is_invalid_argument(start_server, action: str, message: str) -> None:
    obs = Decisions()
    s = start_server(observer=obs)
    with pytest.raises(grpc.RpcError) as err:
        s.stub().EvaluateEvent(pb.EvaluateEventRequest(action=action), timeout=5)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(message)
    assert obs.decisions == []
    assert obs.rejections == [("EvaluateEvent", "action_missing" if not action else "action_format")]


# --- sidecar serve with SIDECAR_EVENTS_CONFIG ---------------------------------------

def test_serve_reads_the_settings_file(spawn_sidecar, tmp_path: Path) -> None:
    path = write(tmp_path, 'anonymous_without_jwt = ["page.visit"]\ndata_with_jwt = []\n')
    proc = spawn_sidecar(env={"SIDECAR_EVENTS_CONFIG": path})
    with grpc.insecure_channel(proc.addr) as channel:
        from sidecar.v1 import identity_pb2_grpc as pb_grpc

        stub = pb_grpc.IdentityServiceStub(channel)
        assert ask(stub, "page.visit", False) == (True, False, "anonymous_list")
        # data_with_jwt = []: no event requires a JWT, not even one off the anonymous list.
        assert ask(stub, "cart.view", False) == (True, False, "jwt_list_empty")
        # data_with_jwt = []: form.submit needs no JWT; data_without_jwt kept its default.
        assert ask(stub, "form.submit", True) == (True, False, "data_list")
        assert ask(stub, "profile.update", True) == (True, False, "jwt_list_empty")


def test_serve_warns_about_an_event_on_both_data_lists(spawn_sidecar, tmp_path: Path) -> None:
    path = write(tmp_path, 'data_without_jwt = ["form.submit"]\ndata_with_jwt = ["form.submit"]\n')
    proc = spawn_sidecar(env={"SIDECAR_EVENTS_CONFIG": path})
    code, err = proc.stop()
    assert code == 0
    assert "'form.submit' is on both data_without_jwt and data_with_jwt: the JWT requirement wins" in err


def test_serve_fails_fast_on_a_bad_settings_file(tmp_path: Path) -> None:
    from conftest import ROOT, free_port, sidecar_cmd

    path = write(tmp_path, 'data_with_jwt = ["form submit"]\n')
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "SIDECAR_EVENTS_CONFIG": path,
           "SIDECAR_LISTEN": f"127.0.0.1:{free_port()}", "SIDECAR_METRICS_ADDR": ""}
    r = subprocess.run(sidecar_cmd("serve"), env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last == (f"sidecar: error: events config {path}: data_with_jwt[0]: 'form submit' must be "
                    "dot-separated segments of letters, digits, '_' and '-' (e.g. page.visit)")
    assert "Traceback" not in r.stderr


# --- sidecar events check FILE --------------------------------------------------------

def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    from conftest import ROOT, sidecar_cmd

    return subprocess.run(sidecar_cmd(*args), cwd=ROOT, capture_output=True, text=True, input=stdin, timeout=60, check=False,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})


def test_cli_events_check_prints_lists_and_table(tmp_path: Path) -> None:
    path = write(tmp_path, 'anonymous_without_jwt = ["page.visit"]\n')
    r = run_cli("events", "check", path, "--action", "newsletter.signup")
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out[:4] == [
        f"{path}: valid",
        'anonymous_without_jwt = ["page.visit"]',
        'data_without_jwt = ["client.login", "form.submit"]',
        'data_with_jwt = ["form.submit"]',
    ]
    rows = {tuple(line.split()[:4]) for line in out[6:]}
    assert ("page.visit", "no", "accepted", "(anonymous_list)") in rows
    assert ("product.addToCart", "no", "rejected", "(anonymous_not_listed)") in rows
    assert ("form.submit", "yes", "rejected", "(jwt_list)") in rows
    assert ("client.login", "yes", "accepted", "(data_list)") in rows
    assert ("newsletter.signup", "yes", "rejected", "(data_not_listed)") in rows
    assert all(line.split()[-1] == "accepted" for line in out[6:])
    assert "warning: 'form.submit' is on both data_without_jwt and data_with_jwt" in r.stderr


def test_cli_events_check_empty_lists_say_what_empty_means(tmp_path: Path) -> None:
    path = write(tmp_path, "anonymous_without_jwt = []\ndata_without_jwt = []\ndata_with_jwt = []\n")
    r = run_cli("events", "check", path)
    assert r.returncode == 0, r.stderr
    assert "data_with_jwt = []  # empty: no event requires a JWT" in r.stdout
    assert "anonymous_without_jwt = []  # empty: every event is accepted for anonymous customers" in r.stdout
    assert r.stderr == ""


def test_cli_events_check_bad_file_one_line_per_problem(tmp_path: Path) -> None:
    path = write(tmp_path, 'extra = 1\ndata_with_jwt = "form.submit"\n')
    r = run_cli("events", "check", path)
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr.splitlines() == [
        (f"sidecar: error: events config {path}: unknown key 'extra' (allowed: anonymous_without_jwt, "
         "data_without_jwt, data_with_jwt)"),
        f"events config {path}: data_with_jwt: must be a list of event names, got a string",
    ]


def test_cli_events_check_missing_file(tmp_path: Path) -> None:
    r = run_cli("events", "check", str(tmp_path / "none.toml"))
    assert r.returncode == 2
    assert r.stderr.strip() == f"sidecar: error: events config {tmp_path / 'none.toml'}: does not exist"


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "sidecar"
    if not script.exists():
        pytest.skip("no console script next to this interpreter (not installed with pip -e)")
    r = subprocess.run([str(script), "events", "check", "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0 and "FILE" in r.stdout



@pytest.mark.parametrize("changes", [False, True])
@pytest.mark.parametrize("l2", list(LIST_STATES))
@pytest.mark.parametrize("l1", list(LIST_STATES))
def test_empty_jwt_list_means_no_event_requires_a_jwt(l1: str, l2: str, changes: bool) -> None:
    """The issue: "empty third list = no event requires a JWT" - for every action and both kinds of event."""
    s = settings(l1, l2, "e")
    for action in (EVENT, OTHER, "page.visit"):
        d = events.decide(s, action, changes_customer_data=changes, authenticated=False)
        assert (d.accepted, d.requires_jwt) == (True, False), (action, d)
