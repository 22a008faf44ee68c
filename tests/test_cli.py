"""The ``sidecar`` command as a real process: start-up refusals, keygen,
public-key, health, SIGTERM drain, development mode, pre-fork workers."""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from sidecar.v1 import identity_pb2 as pb
from sidecar.v1 import identity_pb2_grpc as pb_grpc
from tests.conftest import ROOT, free_port, sidecar_cmd, wait_serving

COOKIE = "0f8fad5b-d9cb-469f-a165-70867728950e"


def run(*args, env=None, timeout=60):
    full = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    full.update({"PYTHONPATH": str(ROOT), "SIDECAR_METRICS_ADDR": ""})
    full.update(env or {})
    return subprocess.run(sidecar_cmd(*args), env=full, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def refusal(result):
    """Exit 2, one line on stderr, no traceback."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("sidecar: error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture
def key_env(openssl_keys):
    return {"SIDECAR_KEY_FILE": str(openssl_keys / "private.pem"), "SIDECAR_UUID_SALT": "someString"}


@pytest.mark.parametrize(
    ("key", "passfile", "extra", "message"),
    [
        ("missing.pem", None, {}, "does not exist"),
        (".", None, {}, "is a directory"),
        ("garbage.pem", None, {}, "not a private key"),
        ("random.bin", None, {}, "not a private key"),
        ("ec.pem", None, {}, "is not an RSA key"),
        ("rsa1024.pem", None, {}, "1024 bits; at least 2048"),
        ("encrypted.pem", None, {}, "encrypted; set SIDECAR_KEY_PASSPHRASE_FILE"),
        ("encrypted.pem", "wrong-pass.txt", {}, "wrong passphrase"),
        ("pkcs1.pem", None, {"SIDECAR_DEFAULT_TTL": "7d"}, "SIDECAR_DEFAULT_TTL: must be more than 0 and less than 7"),
        ("pkcs1.pem", None, {"SIDECAR_UUID_NAMESPACE": "urn"}, "SIDECAR_UUID_NAMESPACE: namespace must be"),
        ("pkcs1.pem", None, {"SIDECAR_UUID_SALT": None}, "SIDECAR_UUID_SALT: must be set"),
    ],
)
def test_startup_refusals(odd_keys, key, passfile, extra, message):
    env = {"SIDECAR_KEY_FILE": str(odd_keys / key), "SIDECAR_UUID_SALT": "s",
           "SIDECAR_LISTEN": f"127.0.0.1:{free_port()}"}
    if passfile:
        env["SIDECAR_KEY_PASSPHRASE_FILE"] = str(odd_keys / passfile)
    env.update(extra)
    env = {k: v for k, v in env.items() if v is not None}
    line = refusal(run("serve", env=env))
    assert message in line
    assert "PRIVATE KEY" not in line


@pytest.mark.parametrize(("args", "env", "message"), [
    (("--rate-limit", "nan"), {}, "SIDECAR_RATE_LIMIT: must be a finite number, got 'nan'"),
    (("--rate-limit", "inf"), {}, "SIDECAR_RATE_LIMIT: must be a finite number, got 'inf'"),
    (("--max-message-bytes", "1099511627776"), {}, "SIDECAR_MAX_MESSAGE_BYTES: must be at least 1024 and at most"),
    (("--grace", "99999999999999999999d"), {}, "SIDECAR_GRACE: must be at most 1h"),
    ((), {"SIDECAR_GRACE": "99999999999999999999d"}, "SIDECAR_GRACE: must be at most 1h"),
    (("--log-level", "bogus"), {}, "SIDECAR_LOG_LEVEL: must be one of DEBUG, INFO, WARNING, ERROR, got 'bogus'"),
    ((), {"SIDECAR_LOG_LEVEL": "loud"}, "SIDECAR_LOG_LEVEL: must be one of DEBUG, INFO, WARNING, ERROR, got 'loud'"),
    (("--audit-format", "xml"), {}, "SIDECAR_AUDIT_FORMAT: must be json or text, got 'xml'"),
])
def test_a_bad_value_is_one_line_naming_the_setting(args, env, message):
    assert message in refusal(run("serve", *args, env=env))


@pytest.mark.parametrize(("args", "env"), [((), {"SIDECAR_LOG_LEVEL": "warning"}), (("--log-level", "WARNING"), {})])
def test_the_log_level_setting_is_applied(spawn_sidecar, args, env):
    """At WARNING the development-mode banner is written, the INFO start-up lines are not."""
    p = spawn_sidecar(*args, env=env)
    code, err = p.stop()
    assert code == 0, err
    assert "DEVELOPMENT MODE" in err and "serving on" not in err, err


def test_production_without_key_refuses():
    assert "production mode: no key configured" in refusal(run("serve", "--production"))


def test_listen_address_in_use_refuses(key_env):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        line = refusal(run("serve", env={**key_env, "SIDECAR_LISTEN": f"127.0.0.1:{port}"}))
    assert f"cannot listen on 127.0.0.1:{port}" in line


@pytest.mark.parametrize("key", ["private.pem", "private.der"])
def test_serves_with_each_key_form_and_drains_on_sigterm(spawn_sidecar, openssl_keys, key):
    p = spawn_sidecar(env={"SIDECAR_KEY_FILE": str(openssl_keys / key), "SIDECAR_UUID_SALT": "someString"})
    with grpc.insecure_channel(p.addr) as ch:
        r = pb_grpc.IdentityServiceStub(ch).IssueToken(pb.IssueTokenRequest(email="a@b.c", uuid=COOKIE), timeout=10)
    public = RSAKey.import_key((openssl_keys / "public.pem").read_text())
    assert jwt.decode(r.token.jwt, public, algorithms=["RS256"]).claims["uuid"] == COOKIE
    code, err = p.stop(signal.SIGTERM)
    assert code == 0, err
    assert "DEVELOPMENT MODE" not in err


def test_a_fatal_signal_leaves_every_threads_stack_and_nothing_of_the_key(spawn_sidecar, openssl_keys):
    """An abort (grpc core's assertions end in SIGABRT) is diagnosable from the log: faulthandler writes
    each thread's Python stack to stderr; no key material is in it."""
    p = spawn_sidecar(env={"SIDECAR_KEY_FILE": str(openssl_keys / "private.pem"), "SIDECAR_UUID_SALT": "s"})
    code, err = p.stop(signal.SIGABRT)
    assert code == -signal.SIGABRT, err
    assert "Fatal Python error: Aborted" in err
    assert "transport/runtime.py" in err and "transport/fastpath.py" in err  # the main thread, a fast-path one
    assert "PRIVATE KEY" not in err and (openssl_keys / "private.pem").read_text().splitlines()[1] not in err


def test_serve_embedded_without_a_stderr_file_still_refuses_by_name() -> None:
    """``main(["serve"])`` called where ``sys.stderr`` is no file (another program's buffer): turning on
    faulthandler is skipped, and a bad key file is still one error line, exit 2."""
    code = ("import io, sys; sys.stderr = io.StringIO(); from sidecar.cli.main import main; "
            "code = main(['serve', '--key-file', '/nonexistent/key.pem', '--uuid-salt', 's']); "
            "sys.__stdout__.write(f'{code}|{sys.stderr.getvalue()}')")
    env = {"PYTHONPATH": str(ROOT), "SIDECAR_METRICS_ADDR": "", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.stdout == "2|sidecar: error: key file /nonexistent/key.pem: does not exist\n", done


def test_passphrase_key_serves(spawn_sidecar, odd_keys):
    p = spawn_sidecar(env={"SIDECAR_KEY_FILE": str(odd_keys / "encrypted.pem"), "SIDECAR_UUID_SALT": "",
                           "SIDECAR_KEY_PASSPHRASE_FILE": str(odd_keys / "pass.txt")})
    assert p.stop()[0] == 0


def test_dev_mode_is_loud_and_works(spawn_sidecar, short_tmp):
    sock = f"unix://{short_tmp / 'dev.sock'}"
    p = spawn_sidecar(addr=sock)
    with grpc.insecure_channel(sock) as ch:
        r = pb_grpc.IdentityServiceStub(ch).ResolveIdentity(pb.ResolveIdentityRequest(email="a@b.c"), timeout=10)
    assert r.outcome == pb.OUTCOME_NEW_IDENTITY
    assert oct(os.stat(short_tmp / "dev.sock").st_mode & 0o777) == "0o660"
    code, err = p.stop()
    assert code == 0 and "DEVELOPMENT MODE" in err and "THROW-AWAY" in err
    assert not (short_tmp / "dev.sock").exists()


def test_health_command(spawn_sidecar, key_env):
    p = spawn_sidecar(env=key_env)
    ok = run("health", "--addr", p.addr)
    assert ok.returncode == 0 and "SERVING" in ok.stdout
    p.stop()
    down = run("health", "--addr", p.addr, "--timeout", "1")
    assert down.returncode == 1 and "UNAVAILABLE" in down.stdout


def test_keygen_and_public_key(tmp_path, spawn_sidecar):
    out = tmp_path / "k"
    r = run("keygen", "--out", str(out))
    assert r.returncode == 0 and r.stdout.split() == [str(out / n) for n in ("private.pem", "private.der", "public.pem")]
    assert oct(os.stat(out / "private.pem").st_mode & 0o777) == "0o600"
    pem = (out / "public.pem").read_text()
    code = run("public-key", "--key-file", str(out / "private.pem")).stdout.strip()
    assert code == "".join(pem.splitlines())
    assert run("public-key", "--key-file", str(out / "public.pem"), "--bare").stdout.strip() == \
        "".join(pem.splitlines()[1:-1])
    assert run("public-key", "--key-file", str(out / "private.der"), "--format", "pem").stdout == pem
    p = spawn_sidecar(env={"SIDECAR_KEY_FILE": str(out / "private.der"), "SIDECAR_UUID_SALT": "x"})
    assert run("public-key", "--addr", p.addr).stdout.strip() == code
    again = run("keygen", "--out", str(out))
    assert again.returncode == 2 and "already exists" in again.stderr


def test_keygen_refuses_short_keys(tmp_path):
    assert "--bits: must be at least 2048" in refusal(run("keygen", "--out", str(tmp_path), "--bits", "1024"))


def test_prefork_workers_serve_tcp_and_unix_and_drain(spawn_sidecar, key_env, short_tmp, openssl_keys):
    port = free_port()
    sock = short_tmp / "w.sock"
    p = spawn_sidecar("--workers", "2", "--grace", "3s", env=key_env, addr=f"127.0.0.1:{port},unix://{sock}")
    wait_serving(f"unix://{sock}", p.proc, log=p.stderr)
    pids = set()
    for _ in range(8):  # SO_REUSEPORT spreads connections: fresh channels reach both workers
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
            r = pb_grpc.IdentityServiceStub(ch).IssueToken(pb.IssueTokenRequest(email="a@b.c", uuid=COOKIE), timeout=10)
            pids.add(r.token.key_id)
    assert pids == {RSAKey.import_key((openssl_keys / "public.pem").read_text()).thumbprint()}
    children = subprocess.run(["pgrep", "-P", str(p.proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(children) == 2
    code, err = p.stop()
    assert code == 0, err
    assert err.count("drained") == 2, err


def test_prefork_refuses_port_held_by_a_stale_server(key_env):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        line = refusal(run("serve", "--workers", "2", env={**key_env, "SIDECAR_LISTEN": f"127.0.0.1:{port}"}))
    assert "cannot listen" in line


def test_serve_refuses_an_unknown_call_path_with_one_line():
    line = refusal(run("serve", env={"SIDECAR_CALL_PATH": "turbo"}))
    assert "SIDECAR_CALL_PATH: must be one of fast, stock, got 'turbo'" in line


#: Threads grpc core starts in every serving process (their kernel names): its timer, its event
#: engine's pool and the pool's lifeguard. The pool grows and shrinks with load, so the test
#: asks for each role, never for a count.
GRPC_THREADS = {"grpc_global_tim", "event_engine", "lifeguard"}


def _threads(pid: int) -> dict[int, tuple[str, int]]:
    """Kernel name and scheduling policy of each thread of ``pid`` (threads that end meanwhile are skipped)."""
    threads = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            threads[int(tid)] = (name, os.sched_getscheduler(int(tid)))
        except (FileNotFoundError, ProcessLookupError):
            pass
    return threads


def _serving_threads(pid: int, workers: int, timeout: float = 30) -> dict[int, dict[int, tuple[str, int]]]:
    """The threads of ``pid`` and of its workers, by process, once every serving process (the
    workers, or ``pid`` alone) runs grpc core's threads and a thread of its own beside the main one."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        children = [int(c) for c in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True,
                                                   text=True).stdout.split()]
        procs = {p: _threads(p) for p in (pid, *children)}
        serving = children if workers > 1 else [pid]
        ready = len(children) == (workers if workers > 1 else 0) and all(
            GRPC_THREADS <= {name for name, _ in procs[p].values()}
            and sum(name not in GRPC_THREADS for name, _ in procs[p].values()) >= 2 for p in serving)
        if ready:
            return procs
        if time.monotonic() > deadline:
            raise AssertionError(f"not every serving process has its threads after {timeout}s: {procs}")
        time.sleep(0.05)


@pytest.mark.parametrize(("flags", "env", "policy"), [
    ((), {}, os.SCHED_BATCH),  # the default
    (("--workers", "2"), {}, os.SCHED_BATCH),  # inherited by the pre-forked workers and all their threads
    (("--sched-policy", "normal"), {}, os.SCHED_OTHER),
    ((), {"SIDECAR_SCHED_POLICY": "normal"}, os.SCHED_OTHER),
])
def test_every_serving_thread_has_the_configured_scheduling_policy(spawn_sidecar, key_env, flags, env, policy):
    p = spawn_sidecar(*flags, env={**key_env, **env})
    with grpc.insecure_channel(p.addr) as ch:  # a served call: grpc's I/O threads are running
        pb_grpc.IdentityServiceStub(ch).IssueToken(pb.IssueTokenRequest(email="a@b.c", uuid=COOKIE), timeout=10)
    procs = _serving_threads(p.proc.pid, 2 if "--workers" in flags else 1)
    policies = {tid: policy_ for threads in procs.values() for tid, (_, policy_) in threads.items()}
    assert set(policies.values()) == {policy}, procs


def test_serve_refuses_an_unknown_scheduling_policy_with_one_line():
    line = refusal(run("serve", env={"SIDECAR_SCHED_POLICY": "fifo"}))
    assert "SIDECAR_SCHED_POLICY: must be one of batch, normal, got 'fifo'" in line


def _time_wait_port() -> int:
    """A loopback port with a connection in TIME_WAIT on its server side, as a drained sidecar leaves."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            server, _ = listener.accept()
            server.close()  # the server side closes first: it is the one left in TIME_WAIT
            client.recv(1)
    states = Path("/proc/net/tcp").read_text().splitlines()[1:]
    assert any(f":{port:04X} " in line.split()[1] + " " and line.split()[3] == "06" for line in states)
    return port


@pytest.mark.parametrize("workers", ["1", "2"])
def test_restart_on_a_port_with_connections_in_time_wait(spawn_sidecar, key_env, workers):
    """Regression: the start-up port check bound without SO_REUSEADDR, so a sidecar restarted
    right after a drain (same pod, same port) was refused "Address already in use"."""
    port = _time_wait_port()
    p = spawn_sidecar("--workers", workers, env=key_env, addr=f"127.0.0.1:{port}")
    with grpc.insecure_channel(p.addr) as ch:
        assert pb_grpc.IdentityServiceStub(ch).IssueToken(pb.IssueTokenRequest(email="a@b.c", uuid=COOKIE),
                                                          timeout=10).token.jwt


def test_demo_runs():
    r = subprocess.run([sys.executable, "-m", "sidecar", "demo"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={**{k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")},
                            "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    for text in ("OUTCOME_NEW_IDENTITY", "OUTCOME_SAME_IDENTITY", "OUTCOME_SWITCHED_IDENTITY", "INVALID_ARGUMENT",
                 "drained and exited with 0"):
        assert text in r.stdout


def test_prefork_sigterm_during_worker_startup_still_drains_cleanly(spawn_sidecar, key_env):
    """Regression: a worker that got SIGTERM before installing its handler died with -15."""
    p = spawn_sidecar("--workers", "2", "--grace", "2s", env=key_env, wait=False)
    p.wait_for_stderr("workers [")  # the master has forked its workers; they are still starting
    p.proc.send_signal(signal.SIGTERM)
    p.proc.wait(timeout=30)
    code, err = p.proc.returncode, p.stderr()
    assert code == 0, err
    assert "exited with -15" not in err and err.count("exited with 0") == 2, err


def _running(pid: str) -> bool:
    from pathlib import Path

    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_prefork_workers_die_with_a_killed_master(spawn_sidecar, key_env):
    """Regression: SIGKILL on the master left its workers serving as orphans."""
    import time

    p = spawn_sidecar("--workers", "2", env=key_env)
    children = subprocess.run(["pgrep", "-P", str(p.proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(children) == 2
    os.kill(p.proc.pid, signal.SIGKILL)
    p.proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    alive = children
    while alive and time.monotonic() < deadline:
        alive = [c for c in children if _running(c)]
        time.sleep(0.05)
    assert alive == [], f"workers {alive} outlived their master"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_health_listen_port_answers_probes(spawn_sidecar, key_env, workers):
    health_addr = f"127.0.0.1:{free_port()}"
    p = spawn_sidecar("--workers", workers, "--health-listen", health_addr, env=key_env)
    ok = run("health", "--addr", health_addr)
    assert ok.returncode == 0 and "SERVING" in ok.stdout
    with grpc.insecure_channel(health_addr) as ch, pytest.raises(grpc.RpcError) as exc:
        pb_grpc.IdentityServiceStub(ch).GetPublicKey(pb.GetPublicKeyRequest(), timeout=10)
    assert exc.value.code() == grpc.StatusCode.UNIMPLEMENTED
    code, err = p.stop()
    assert code == 0, err


def test_health_listen_refuses_bad_address(key_env):
    assert "SIDECAR_HEALTH_LISTEN: '8086' is not host:port" in refusal(
        run("serve", env={**key_env, "SIDECAR_HEALTH_LISTEN": "8086"}))
