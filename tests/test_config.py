import uuid
from datetime import timedelta

import pytest

from sidecar.cli.config import DEV_SALT, from_sources
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
