import argparse
import math
import uuid
from dataclasses import replace
from datetime import timedelta

import pytest

from sidecar.cli import settings
from sidecar.cli.config import DEV_SALT, ENV, SETTINGS, Config, from_sources
from sidecar.domain.errors import ConfigError

NOFLAGS: dict[str, object] = {}


def test_defaults_are_dev_mode():
    c = from_sources(NOFLAGS, {})
    assert c.dev_mode and c.salt == DEV_SALT and c.default_ttl == timedelta(hours=24)
    assert c.listen == ("127.0.0.1:50051",) and c.metrics_addr == "127.0.0.1:9464"
    assert c.uuid_namespace == uuid.NAMESPACE_URL and c.workers == 1 and c.threads == 4


def test_environment_read_and_flags_win():
    env = {"SIDECAR_KEY_FILE": "/k.pem", "SIDECAR_UUID_SALT": "s", "SIDECAR_DEFAULT_TTL": "6d",
           "SIDECAR_LISTEN": "unix:///run/s.sock, 127.0.0.1:1", "SIDECAR_UUID_NAMESPACE": "dns",
           "SIDECAR_METRICS_ADDR": "", "SIDECAR_GRACE": "3s", "SIDECAR_WORKERS": "2",
           "SIDECAR_THREADS": "6"}
    c = from_sources({"default_ttl": "30m", "uuid_salt": ""}, env)
    assert c.key_file == "/k.pem" and not c.dev_mode
    assert c.uuid_salt == "" and c.salt == ""  # an empty salt set on purpose is allowed
    assert c.default_ttl == timedelta(minutes=30)
    assert c.listen == ("unix:///run/s.sock", "127.0.0.1:1")
    assert c.uuid_namespace == uuid.NAMESPACE_DNS and c.metrics_addr == "" and c.grace == timedelta(seconds=3)
    assert c.workers == 2 and c.threads == 6 and c.call_path == "fast"
    assert from_sources({}, {"SIDECAR_CALL_PATH": " Stock "}).call_path == "stock"
    assert from_sources({"call_path": "fast"}, {"SIDECAR_CALL_PATH": "stock"}).call_path == "fast"
    assert c.sched_policy == "batch"
    assert from_sources({}, {"SIDECAR_SCHED_POLICY": " Normal "}).sched_policy == "normal"
    assert from_sources({"sched_policy": "batch"}, {"SIDECAR_SCHED_POLICY": "normal"}).sched_policy == "batch"


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        ({}, {"SIDECAR_DEFAULT_TTL": "7d"}, "SIDECAR_DEFAULT_TTL: must be more than 0 and less than 7 days"),
        ({}, {"SIDECAR_DEFAULT_TTL": "0"}, "SIDECAR_DEFAULT_TTL: must be more than 0"),
        ({}, {"SIDECAR_DEFAULT_TTL": "1w"}, "SIDECAR_DEFAULT_TTL: duration must be"),
        ({}, {"SIDECAR_UUID_NAMESPACE": "nope"}, "SIDECAR_UUID_NAMESPACE: namespace must be"),
        ({}, {"SIDECAR_KEY_FILE": "/k.pem"}, "SIDECAR_UUID_SALT: must be set"),
        ({"production": True}, {}, "production mode: no key configured"),
        ({}, {"SIDECAR_LISTEN": "localhost"}, "SIDECAR_LISTEN: 'localhost' is not host:port"),
        ({}, {"SIDECAR_LISTEN": "unix:/x.sock"}, "SIDECAR_LISTEN: write Unix sockets as unix:///"),
        ({}, {"SIDECAR_LISTEN": " , "}, "SIDECAR_LISTEN: at least one"),
        ({}, {"SIDECAR_METRICS_ADDR": "9464"}, "SIDECAR_METRICS_ADDR: '9464' is not host:port"),
        ({}, {"SIDECAR_WORKERS": "two"}, "SIDECAR_WORKERS: must be a positive integer"),
        ({}, {"SIDECAR_WORKERS": "0"}, "SIDECAR_WORKERS: must be at least 1"),
        ({}, {"SIDECAR_THREADS": "0"}, "SIDECAR_THREADS: must be at least 1"),
        ({}, {"SIDECAR_THREADS": "many"}, "SIDECAR_THREADS: must be a positive integer"),
        ({}, {"SIDECAR_CALL_PATH": "turbo"}, "SIDECAR_CALL_PATH: must be one of fast, stock, got 'turbo'"),
        ({}, {"SIDECAR_SCHED_POLICY": "fifo"}, "SIDECAR_SCHED_POLICY: must be one of batch, normal, got 'fifo'"),
        # numbers are finite and bounded; durations that overflow are refused, not a traceback
        ({"rate_limit": "nan"}, {}, "SIDECAR_RATE_LIMIT: must be a finite number, got 'nan'"),
        ({"rate_limit": "inf"}, {}, "SIDECAR_RATE_LIMIT: must be a finite number, got 'inf'"),
        ({}, {"SIDECAR_RATE_LIMIT": "1e999"}, "SIDECAR_RATE_LIMIT: must be a finite number"),
        ({}, {"SIDECAR_RATE_LIMIT": "-1"}, "SIDECAR_RATE_LIMIT: must be at most 1000000, got '-1'"),
        ({}, {"SIDECAR_RATE_LIMIT": "fast"}, "SIDECAR_RATE_LIMIT: must be a number, got 'fast'"),
        ({}, {"SIDECAR_RATE_BURST": "-1"}, "SIDECAR_RATE_BURST: must be a whole number, got '-1'"),
        ({"max_message_bytes": "1099511627776"}, {},
         "SIDECAR_MAX_MESSAGE_BYTES: must be at least 1024 and at most 67108864 (64 MiB), got '1099511627776'"),
        ({}, {"SIDECAR_MAX_MESSAGE_BYTES": "512"}, "SIDECAR_MAX_MESSAGE_BYTES: must be at least 1024"),
        ({}, {"SIDECAR_MAX_CONCURRENT_CALLS": "9" * 5000}, "SIDECAR_MAX_CONCURRENT_CALLS: must be at least 1 and at most"),
        ({}, {"SIDECAR_THREADS": "100000"}, "SIDECAR_THREADS: must be at least 1 and at most 256"),
        ({}, {"SIDECAR_TOKEN_CACHE_SIZE": "99999999999"}, "SIDECAR_TOKEN_CACHE_SIZE: must be at most 10000000"),
        ({}, {"SIDECAR_TOKEN_CACHE_MIN_REMAINING": "nan"}, "SIDECAR_TOKEN_CACHE_MIN_REMAINING: must be a finite number"),
        ({"grace": "99999999999999999999d"}, {}, "SIDECAR_GRACE: must be at most 1h, got '99999999999999999999d'"),
        ({}, {"SIDECAR_GRACE": "2h"}, "SIDECAR_GRACE: must be at most 1h, got '2h'"),
        ({}, {"SIDECAR_KEY_POLL_INTERVAL": "0"}, "SIDECAR_KEY_POLL_INTERVAL: must be more than 0 and at most 1h"),
        ({}, {"SIDECAR_KEY_POLL_INTERVAL": "99999999999999999999d"}, "SIDECAR_KEY_POLL_INTERVAL: must be more than 0"),
        ({}, {"SIDECAR_DEFAULT_TTL": "99999999999999999999d"}, "SIDECAR_DEFAULT_TTL: must be more than 0 and less"),
        ({}, {"SIDECAR_VERIFY_PREVIOUS_KEY_GRACE": "8d"}, "SIDECAR_VERIFY_PREVIOUS_KEY_GRACE: must be between 0 and 7"),
        ({"log_level": "bogus"}, {}, "SIDECAR_LOG_LEVEL: must be one of DEBUG, INFO, WARNING, ERROR, got 'bogus'"),
        ({}, {"SIDECAR_AUDIT_FORMAT": "xml"}, "SIDECAR_AUDIT_FORMAT: must be json or text, got 'xml'"),
        ({}, {"SIDECAR_SOCKET_MODE": "rw"}, "SIDECAR_SOCKET_MODE: must be an octal file mode such as 660, got 'rw'"),
        ({}, {"SIDECAR_SOCKET_MODE": "7777"}, "SIDECAR_SOCKET_MODE: must be an octal file mode such as 660, got '7777'"),
        ({}, {"SIDECAR_INSECURE_TCP": "maybe"}, "SIDECAR_INSECURE_TCP: must be one of 1, true, yes, on, 0, false, no, off"),
        # the Connect listener: SIDECAR_LISTEN's syntax and rules
        ({}, {"SIDECAR_HTTP_LISTEN": "unix:/tmp/x.sock"}, "SIDECAR_HTTP_LISTEN: write Unix sockets as unix:///absolute"),
        ({}, {"SIDECAR_HTTP_LISTEN": "127.0.0.1"}, "SIDECAR_HTTP_LISTEN: '127.0.0.1' is not host:port"),
        ({}, {"SIDECAR_HTTP_LISTEN": "0.0.0.0:50052"}, "SIDECAR_HTTP_LISTEN: 0.0.0.0:50052 is not a loopback address"),
        ({}, {"SIDECAR_HTTP_LISTEN": "127.0.0.1:50052", "SIDECAR_TLS_CERT": "c", "SIDECAR_TLS_KEY": "k",
              "SIDECAR_TLS_CLIENT_CA": "ca", "SIDECAR_ALLOWED_CLIENTS": "a"},
         "SIDECAR_ALLOWED_CLIENTS: the Connect listener cannot see client certificate names"),
    ],
)
def test_refusals_are_one_line_naming_the_setting(flags, env, message):
    with pytest.raises(ConfigError) as exc:
        from_sources(flags, env)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_available_cpus_follows_the_container_cpu_limit(tmp_path) -> None:
    import os

    from sidecar.cli.config import available_cpus

    cores = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("max 100000\n")
    assert available_cpus(cpu_max) == cores
    cpu_max.write_text("50000 100000\n")  # half a CPU: still one thread
    assert available_cpus(cpu_max) == 1
    cpu_max.write_text(f"{150000 * cores} 100000\n")  # a limit above the cores changes nothing
    assert available_cpus(cpu_max) == cores
    assert available_cpus(tmp_path / "missing") == cores
    cpu_max.write_text("garbage\n")
    assert available_cpus(cpu_max) == cores


def test_log_level_is_a_setting_like_the_others():
    assert from_sources({}, {}).log_level == "INFO"
    assert from_sources({}, {"SIDECAR_LOG_LEVEL": " warning "}).log_level == "WARNING"
    assert from_sources({"log_level": "debug"}, {"SIDECAR_LOG_LEVEL": "ERROR"}).log_level == "DEBUG"
    assert ENV["log_level"] == "SIDECAR_LOG_LEVEL"


@pytest.mark.parametrize(("env", "field", "value"), [
    ({"SIDECAR_UUID_SALT": ""}, "uuid_salt", ""),  # an empty salt set on purpose
    ({"SIDECAR_METRICS_ADDR": ""}, "metrics_addr", ""),  # no metrics endpoint
    ({"SIDECAR_HEALTH_LISTEN": ""}, "health_listen", ()),
    ({"SIDECAR_KEY_FILE": ""}, "key_file", None),  # elsewhere empty means unset
    ({"SIDECAR_GRACE": ""}, "grace", timedelta(seconds=10)),
    ({"SIDECAR_RATE_LIMIT": ""}, "rate_limit", 0.0),
    ({"SIDECAR_INSECURE_TCP": ""}, "insecure_tcp", False),
    ({"SIDECAR_INSECURE_TCP": "On"}, "insecure_tcp", True),
    ({"SIDECAR_INSECURE_TCP": "no"}, "insecure_tcp", False),
    ({"SIDECAR_WORKERS": " 3 "}, "workers", 3),
    ({"SIDECAR_SOCKET_MODE": "0o600"}, "socket_mode", 0o600),
    ({"SIDECAR_RATE_LIMIT": "2.5"}, "rate_limit", 2.5),
])
def test_empty_and_written_values(env, field, value):
    assert getattr(from_sources({}, env), field) == value


def test_production_is_a_flag_only():
    assert "production" not in ENV
    assert not from_sources({}, {"SIDECAR_PRODUCTION": "1"}).production
    assert from_sources({"production": True}, {"SIDECAR_KEY_FILE": "/k", "SIDECAR_UUID_SALT": "s"}).production


def test_the_rules_hold_for_a_config_built_in_code():
    """One loop checks every field against its setting, however the Config was made."""
    with pytest.raises(ConfigError, match=r"^SIDECAR_RATE_LIMIT: must be a finite number, got 'nan'$"):
        Config(rate_limit=math.nan)
    with pytest.raises(ConfigError, match=r"^SIDECAR_GRACE: must be at most 1h, got '2h'$"):
        Config(grace=timedelta(hours=2))
    with pytest.raises(ConfigError, match=r"^SIDECAR_CALL_PATH: must be one of fast, stock, got 'turbo'$"):
        Config(call_path="turbo")
    with pytest.raises(ConfigError, match=r"^SIDECAR_MAX_MESSAGE_BYTES: must be at least 1024"):
        replace(Config(), max_message_bytes=2**31)


def test_every_default_reads_back_and_keeps_its_rule():
    """What the docs and --help print as a default is what the variable would take."""
    for s in SETTINGS:
        s.check(s.default)
        if s.default is not None and not s.kind.switch:
            assert s.kind.parse(s.kind.show(s.default)) == s.default, s.name
    assert [s.name for s in SETTINGS] == [name for name in Config.__dataclass_fields__]


def test_a_setting_declared_once_appears_everywhere():
    """The flag, the variable, the check and the docs row all come from the one declaration."""
    extra = settings.Setting("widgets", 3, "SIDECAR_WIDGETS", "--widgets", settings.integer(1, 9),
                             "widgets per `gadget`", "Test only")
    table = (*SETTINGS, extra)
    parser = argparse.ArgumentParser()
    settings.add_arguments(parser, table)
    help_text = parser.format_help()
    assert "--widgets N" in help_text and "widgets per gadget; at least 1 and at most 9; default 3 [SIDECAR_WIDGETS]" in \
        " ".join(help_text.split())
    flags = vars(parser.parse_args(["--widgets", "5"]))
    assert settings.read(table, flags, {"SIDECAR_WIDGETS": "7"})["widgets"] == 5
    assert settings.read(table, vars(parser.parse_args([])), {"SIDECAR_WIDGETS": "7"})["widgets"] == 7
    assert "widgets" not in settings.read(table, {}, {})
    with pytest.raises(ConfigError, match=r"^SIDECAR_WIDGETS: must be at least 1 and at most 9, got '10'$"):
        settings.read(table, {}, {"SIDECAR_WIDGETS": "10"})
    doc = settings.doc_table(table)
    assert "### Test only" in doc
    assert "| `SIDECAR_WIDGETS` | `--widgets` | `3` | widgets per `gadget`; at least 1 and at most 9 |" in doc


def test_the_connect_listener_is_off_unless_set_or_in_development_mode():
    assert from_sources({}, {}).http_addresses == ("127.0.0.1:50052",)
    assert from_sources({}, {"SIDECAR_HTTP_LISTEN": ""}).http_addresses == ()
    assert from_sources({"http_listen": "unix:///tmp/x.sock, 127.0.0.1:0"}, {}).http_addresses == (
        "unix:///tmp/x.sock", "127.0.0.1:0")
    production = {"SIDECAR_KEY_FILE": "k.pem", "SIDECAR_UUID_SALT": "s"}
    assert from_sources({}, production).http_addresses == ()
    assert from_sources({}, {**production, "SIDECAR_HTTP_LISTEN": "0.0.0.0:1", "SIDECAR_INSECURE_TCP": "1"}
                        ).http_addresses == ("0.0.0.0:1",)


@pytest.mark.parametrize(("env", "message"), [
    ({"SIDECAR_REQUEST_READ_TIMEOUT": "0"}, "SIDECAR_REQUEST_READ_TIMEOUT: must be more than 0 and at most 60s, got '0'"),
    ({"SIDECAR_REQUEST_READ_TIMEOUT": "2m"}, "SIDECAR_REQUEST_READ_TIMEOUT: must be more than 0 and at most 60s, got '2m'"),
    ({"SIDECAR_MAX_PENDING_CALLS": "0"}, "SIDECAR_MAX_PENDING_CALLS: must be at least 1 and at most 100000, got '0'"),
    ({"SIDECAR_MAX_PENDING_PER_CONNECTION": "0"},
     "SIDECAR_MAX_PENDING_PER_CONNECTION: must be at least 1 and at most 100000, got '0'"),
    ({"SIDECAR_MAX_STREAMS_PER_CONNECTION": "0"},
     "SIDECAR_MAX_STREAMS_PER_CONNECTION: must be at least 1 and at most 100000, got '0'"),
    ({"SIDECAR_MAX_CONNECTIONS": "many"}, "SIDECAR_MAX_CONNECTIONS: must be a whole number, got 'many'"),
    ({"SIDECAR_CONNECTION_IDLE_TIMEOUT": "99d"}, "SIDECAR_CONNECTION_IDLE_TIMEOUT: must be at most 24h, got '99d'"),
    ({"SIDECAR_SELF_CHECK_TIMEOUT": "2h"}, "SIDECAR_SELF_CHECK_TIMEOUT: must be at most 1m, got '2h'"),
    ({"SIDECAR_HEALTH_MAX_WATCHERS": "0"}, "SIDECAR_HEALTH_MAX_WATCHERS: must be at least 1 and at most 1024, got '0'"),
    ({"SIDECAR_TOKEN_CACHE_BYTES": "lots"}, "SIDECAR_TOKEN_CACHE_BYTES: must be a whole number, got 'lots'"),
    ({"SIDECAR_HTTP_LISTEN": "nohost"}, "SIDECAR_HTTP_LISTEN: 'nohost' is not host:port"),
    ({"SIDECAR_NEXT_KEY_ACTIVATES_AT": "2026-12-03T10:00:00Z"},
     "SIDECAR_NEXT_KEY_FILE and SIDECAR_NEXT_KEY_ACTIVATES_AT: set both or neither"),
])
def test_the_settings_of_this_round_refuse_bad_values_by_name_and_rule(env, message):
    """Issues 15, 18 and 19's settings: a bad value is one ConfigError naming the variable and its rule."""
    with pytest.raises(ConfigError) as err:
        from_sources({}, env)
    assert str(err.value) == message
