"""The container image and the pod manifest, built and run for real with podman.

The image is built by ``scripts/container/build-image.sh`` on the local
debootstrap base (no registry is reachable here), run as its non-root user with
a read-only root filesystem and a generated key mounted read-only, and called
from the host over loopback TCP and over the Unix socket in a mounted
directory. Then ``deploy/kubernetes/podman/pod.yaml`` is played with
``podman kube play``: its app container gets a token through the shared socket.
Tokens are checked with joserfc against the public key ``sidecar keygen`` wrote.

The container shares the host's network namespace only for the TCP test (the
sidecar binds 127.0.0.1 there); the pod has no network but loopback. podman
missing or broken is a failure, never a skip: ``make test`` installs it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml
from joserfc import jwt
from joserfc.errors import BadSignatureError
from joserfc.jwk import RSAKey

from sidecar import __version__
from sidecar.transport.client import health_status
from sidecar.v1 import identity_pb2 as pb
from sidecar.v1 import identity_pb2_grpc as pb_grpc
from tests.conftest import ROOT, SALT, free_port

pytestmark = pytest.mark.slow

SCRIPTS = ROOT / "scripts" / "container"
DEPLOY = ROOT / "deploy" / "kubernetes"
POD_MANIFEST = DEPLOY / "podman" / "pod.yaml"
UID = 10001
COOKIE_UUID = "0f8fad5b-d9cb-469f-a165-70867728950e"
EMAIL = "customer@synerise.com"
TAG = f"localhost/sidecar:test-{os.getpid()}"
#: The whole module must finish well inside CI's budget; every podman call is bounded.
BUILD_TIMEOUT = 900


def podman_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    env["CONTAINERS_CONF"] = str(SCRIPTS / "containers.conf")
    return env


def podman(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run podman with the project's containers.conf; fail loudly on error."""
    p = subprocess.run(["podman", *args], check=False, env=podman_env(), capture_output=True, text=True,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} -> {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def verify(token: str, public_pem: bytes) -> dict[str, object]:
    """Check a JWT with joserfc: signature, Synerise's exact header and payload, expiry."""
    key = RSAKey.import_key(public_pem)
    decoded = jwt.decode(token, key, algorithms=["RS256"])
    assert decoded.header == {"alg": "RS256", "typ": "JWT"}
    assert set(decoded.claims) == {"exp", "uuid", "email"}
    jwt.JWTClaimsRegistry(exp={"essential": True}).validate(decoded.claims)
    return dict(decoded.claims)


@pytest.fixture(scope="module")
def podman_ready() -> Iterator[None]:
    """podman works here; afterwards no container, pod or network of ours is left."""
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed: `make system` installs scripts/apt.d/container.txt")
    if os.geteuid() != 0:
        pytest.fail("the container tests run podman as root (CI and developer machines are root)")
    podman("info", "--format", "{{.Host.OCIRuntime.Name}}", timeout=60)
    networks = set(podman("network", "ls", "-q").stdout.split())
    volumes = set(podman("volume", "ls", "-q").stdout.split())
    pause_existed = podman("image", "exists", "localhost/podman-pause:4.3.1-0", check=False).returncode == 0
    yield
    leftover = set(podman("volume", "ls", "-q").stdout.split()) - volumes
    for v in leftover:
        podman("volume", "rm", "-f", v, check=False)
    if not pause_existed:
        pause = [i for i in podman("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
                 if i.startswith("localhost/podman-pause:")]
        for image in pause:
            podman("rmi", "-f", image, check=False)
    assert set(podman("network", "ls", "-q").stdout.split()) == networks, "a test left a podman network"


@pytest.fixture(scope="module")
def image(podman_ready: None) -> Iterator[str]:
    """The sidecar image, built with podman on the local base; removed afterwards."""
    try:
        p = subprocess.run(["bash", str(SCRIPTS / "build-image.sh"), TAG], check=False, env=podman_env(),
                           capture_output=True, text=True, timeout=BUILD_TIMEOUT)
        assert p.returncode == 0, f"image build failed:\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}"
        yield TAG
    finally:
        podman("rmi", "-f", TAG, check=False, timeout=120)


def keygen(d: Path) -> Path:
    """``sidecar keygen`` into ``d``, readable by the image's user as a Secret with fsGroup makes it (0440)."""
    d.mkdir(exist_ok=True)
    subprocess.run([sys.executable, "-m", "sidecar", "keygen", "--out", str(d)], check=True, capture_output=True,
                   timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    for f in [d, *d.iterdir()]:
        os.chown(f, 0, UID)
    os.chmod(d, 0o750)
    os.chmod(d / "private.pem", 0o440)
    os.chmod(d / "private.der", 0o400)
    return d


@pytest.fixture(scope="module")
def keydir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="sc-key-", dir="/tmp"))
    yield keygen(d / "key")
    shutil.rmtree(d, ignore_errors=True)


def wait_container_serving(name: str, addr: str, timeout: float = 60) -> None:
    """Until the sidecar in container ``name`` answers SERVING at ``addr``; fails early if it exits."""
    deadline = time.monotonic() + timeout
    while health_status(addr, timeout=0.5) != "SERVING":
        state = json.loads(podman("inspect", name).stdout)[0]["State"]
        if state["Status"] != "running" or time.monotonic() > deadline:
            raise AssertionError(f"{name} {state['Status']}: {podman('logs', name, check=False).stderr[-2000:]}")
        time.sleep(0.2)


def test_image_is_non_root_with_healthcheck_stopsignal_and_no_toolchain(image: str) -> None:
    info = json.loads(podman("image", "inspect", image).stdout)[0]
    assert info["Config"]["User"] == f"{UID}:{UID}"
    assert info["Config"]["StopSignal"] == "SIGTERM"
    assert info["Healthcheck"]["Test"][:3] == ["CMD", "sidecar", "health"]
    p = podman("run", "--rm", "--network", "none", "--entrypoint", "sh", image, "-c",
               "id -u; for t in gcc cc c++ make pip pip3; do command -v $t; done; "
               "test -e /run/secrets/pip_cert && echo LEAKED-CERT; sidecar --version")
    # Only the uid and the version: no compiler, no pip, no CA bundle left from the build secret.
    assert p.stdout.split() == [str(UID), "sidecar", __version__]


def test_refuses_to_start_without_the_mounted_key(image: str) -> None:
    p = podman("run", "--rm", "--network", "none", "--read-only", "-e", f"SIDECAR_UUID_SALT={SALT}", image,
               check=False)
    assert p.returncode == 2
    assert "/etc/sidecar/key/private.pem" in p.stderr


def test_runs_read_only_non_root_over_tcp_and_unix_socket_and_stops_on_sigterm(image: str) -> None:
    sockdir = Path(tempfile.mkdtemp(prefix="sc-run-", dir="/tmp"))
    keydir_run = keygen(sockdir / "key")
    sockdir = sockdir / "run"
    sockdir.mkdir()
    os.chown(sockdir, UID, UID)
    port = free_port()
    name = f"sidecar-test-{os.getpid()}"
    public_pem = (keydir_run / "public.pem").read_bytes()
    try:
        podman("run", "--detach", "--name", name, "--network", "host",
               "--read-only", "--read-only-tmpfs=false", "--cap-drop", "all",
               "--security-opt", "no-new-privileges",
               "--volume", f"{keydir_run}:/etc/sidecar/key:ro", "--volume", f"{sockdir}:/run/sidecar",
               "--env", f"SIDECAR_UUID_SALT={SALT}",
               "--env", f"SIDECAR_LISTEN=unix:///run/sidecar/sidecar.sock,127.0.0.1:{port}",
               "--env", "SIDECAR_METRICS_ADDR=", image)
        wait_container_serving(name, f"127.0.0.1:{port}")
        sock = sockdir / "sidecar.sock"
        st = sock.stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (UID, UID, 0o660)

        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.IdentityServiceStub(ch)
            key_id = stub.GetPublicKey(pb.GetPublicKeyRequest(), timeout=10).key_id
            issued = stub.IssueToken(pb.IssueTokenRequest(email=EMAIL, uuid=COOKIE_UUID), timeout=10)
        assert key_id == RSAKey.import_key(public_pem).thumbprint() == issued.token.key_id
        assert verify(issued.token.jwt, public_pem)["uuid"] == COOKIE_UUID

        with grpc.insecure_channel(f"unix://{sock}") as ch:
            r = pb_grpc.IdentityServiceStub(ch).ResolveIdentity(
                pb.ResolveIdentityRequest(email=EMAIL, cookie_uuid=COOKIE_UUID), timeout=10)
        assert r.outcome == pb.OUTCOME_NEW_IDENTITY and r.set_identity
        assert verify(r.token.jwt, public_pem) == {"exp": r.token.expires_at.seconds, "uuid": COOKIE_UUID,
                                                   "email": EMAIL}

        assert podman("exec", name, "id", "-u").stdout.strip() == str(UID)
        wr = podman("exec", name, "sh", "-c", "touch /opt/venv/x", check=False)
        assert wr.returncode != 0 and "Read-only file system" in wr.stderr
        assert podman("healthcheck", "run", name, check=False).returncode == 0

        # Rotation as the README does it: the key file is replaced under the
        # read-only mount (a Secret update), then SIGHUP to PID 1 reloads it.
        new = keygen(sockdir.parent / "newkey")
        for f in ("private.pem", "public.pem"):
            os.replace(new / f, keydir_run / f)
        podman("exec", name, "sh", "-c", "kill -HUP 1")
        new_public = (keydir_run / "public.pem").read_bytes()
        new_id = RSAKey.import_key(new_public).thumbprint()
        deadline = time.monotonic() + 20
        with grpc.insecure_channel(f"unix://{sock}") as ch:
            stub = pb_grpc.IdentityServiceStub(ch)
            while stub.GetPublicKey(pb.GetPublicKeyRequest(), timeout=10).key_id != new_id:
                assert time.monotonic() < deadline, "SIGHUP did not load the new key"
                time.sleep(0.2)
            rotated = stub.IssueToken(pb.IssueTokenRequest(email=EMAIL, uuid=COOKIE_UUID), timeout=10).token
        assert rotated.key_id == new_id != key_id
        verify(rotated.jwt, new_public)
        with pytest.raises(BadSignatureError):
            verify(rotated.jwt, public_pem)

        t0 = time.monotonic()
        podman("stop", "--time", "10", name, timeout=30)
        took = time.monotonic() - t0
        state = json.loads(podman("inspect", name).stdout)[0]["State"]
        logs = podman("logs", name).stderr
        assert took < 2.0, f"podman stop took {took:.2f}s"
        assert state["ExitCode"] == 0, logs  # drained on SIGTERM, not killed (137)
        assert "SIGTERM: draining" in logs
        assert "PRIVATE KEY" not in logs
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)
        shutil.rmtree(sockdir.parent, ignore_errors=True)


def play_and_get_token(text: str, keydir: Path, tmp_path: Path) -> dict[str, object]:
    """``podman kube play`` the manifest ``text``; its app container must print a token got over the socket."""
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(text)
    pod_name = next(d for d in yaml.safe_load_all(text) if d["kind"] == "Pod")["metadata"]["name"]
    try:
        # A pod of this name left by an interrupted earlier run would make play fail.
        podman("pod", "rm", "--force", "--ignore", pod_name, check=False, timeout=60)
        podman("kube", "play", "--network", "none", str(manifest), timeout=120)
        app = f"{pod_name}-app"
        deadline = time.monotonic() + 90
        while (status := json.loads(podman("inspect", app).stdout)[0]["State"]["Status"]) != "exited":
            assert time.monotonic() < deadline, f"app container still {status}"
            time.sleep(0.5)
        logs = {c: podman("logs", f"{pod_name}-{c}") for c in ("app", "sidecar")}
        out = logs["app"].stdout.strip().splitlines()
        assert json.loads(podman("inspect", app).stdout)[0]["State"]["ExitCode"] == 0, \
            (out, logs["app"].stderr[-2000:], logs["sidecar"].stderr[-2000:])
        result: dict[str, object] = json.loads(out[-1])
        assert result["uuid"] == COOKIE_UUID and result["outcome"] == "OUTCOME_NEW_IDENTITY"
        claims = verify(str(result["jwt"]), (keydir / "public.pem").read_bytes())
        assert (claims["uuid"], claims["email"]) == (COOKIE_UUID, EMAIL)
        # The liveness probe became the sidecar container's health check.
        assert podman("healthcheck", "run", f"{pod_name}-sidecar", check=False).returncode == 0
        user = podman("exec", f"{pod_name}-sidecar", "id", "-u").stdout.strip()
        assert user == str(UID)
        return result
    finally:
        podman("kube", "down", str(manifest), check=False, timeout=60)
        assert podman("pod", "exists", pod_name, check=False).returncode != 0


def test_pod_manifest_app_container_gets_a_token_through_the_shared_socket(image: str, keydir: Path,
                                                                            tmp_path: Path) -> None:
    text = POD_MANIFEST.read_text()
    # The manifest as documented, pointed at this run's image and key directory.
    assert text.count("image: localhost/sidecar:dev") == 2 and text.count("path: /var/lib/sidecar/key") == 1
    text = text.replace("image: localhost/sidecar:dev", f"image: {image}")
    text = text.replace("path: /var/lib/sidecar/key", f"path: {keydir}")
    play_and_get_token(text, keydir, tmp_path)


#: The app of the played example: a client that finds the sidecar where the component told it to.
EXAMPLE_APP = """\
import json, os, grpc
from sidecar.v1 import identity_pb2 as pb, identity_pb2_grpc as pb_grpc
channel = grpc.insecure_channel(os.environ["SIDECAR_ADDR"])
grpc.channel_ready_future(channel).result(timeout=60)
r = pb_grpc.IdentityServiceStub(channel).ResolveIdentity(pb.ResolveIdentityRequest(
    email="customer@synerise.com", cookie_uuid="0f8fad5b-d9cb-469f-a165-70867728950e"), timeout=10)
print(json.dumps({"uuid": r.uuid, "outcome": pb.Outcome.Name(r.outcome), "jwt": r.token.jwt}), flush=True)
"""


def podman_pod_from_rendered_example(image: str, keydir: Path) -> str:
    """The rendered example (component included) as a Pod podman 4.3 can play, changing only what it lacks:
    the native sidecar becomes an ordinary first container (no restartPolicy), its gRPC probes an exec
    liveness probe, the projected Secret volume a hostPath, the salt a literal, and the declared ports go
    (podman would publish them); both images are this run's."""
    docs = kustomize(DEPLOY / "example")
    by_kind = _by_kind(docs)
    cm, deploy = by_kind["ConfigMap"], by_kind["Deployment"]
    spec = deploy["spec"]["template"]["spec"]
    (sidecar,) = spec.pop("initContainers")
    assert sidecar.pop("restartPolicy") == "Always"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert "grpc" in sidecar.pop(probe)
    sidecar["livenessProbe"] = {"exec": {"command": ["sidecar", "health", "--addr", "127.0.0.1:50051",
                                                     "--timeout", "3"]}, "periodSeconds": 30}
    sidecar["image"], sidecar["imagePullPolicy"] = image, "Never"
    assert sidecar.pop("ports")  # podman publishes declared ports, which a pod without a network cannot
    sidecar["env"] = [{"name": "SIDECAR_UUID_SALT", "value": SALT} if e["name"] == "SIDECAR_UUID_SALT" else e
                      for e in sidecar["env"]]
    app = spec["containers"][0]
    app.update(image=image, imagePullPolicy="Never", command=["python3", "-c"], args=[EXAMPLE_APP])
    spec["containers"].insert(0, sidecar)
    for v in spec["volumes"]:
        if v["name"] == "sidecar-key":
            assert v.pop("projected")["sources"]
            v["hostPath"] = {"path": str(keydir), "type": "Directory"}
        if v["name"] == "sidecar-socket":
            v["emptyDir"] = {}
    spec["restartPolicy"] = "Never"
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "sidecar-example", "labels": deploy["spec"]["template"]["metadata"]["labels"]},
           "spec": spec}
    return yaml.safe_dump_all([cm, pod])


def test_rendered_example_app_gets_a_token_through_the_shared_socket(image: str, keydir: Path,
                                                                      tmp_path: Path) -> None:
    """The component's wiring works: the app container finds the socket by SIDECAR_ADDR alone, the sidecar
    its settings in the generated ConfigMap and its key where SIDECAR_KEY_FILE points, with the absent
    next key and instant of the scheduled rotation."""
    play_and_get_token(podman_pod_from_rendered_example(image, keydir), keydir, tmp_path)


def kustomize(directory: Path) -> list[dict]:  # type: ignore[type-arg]
    """``kubectl kustomize directory``, parsed (kubectl from scripts/apt.d/deploy.txt)."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl not found: `make system` installs scripts/apt.d/deploy.txt"
    p = subprocess.run([kubectl, "kustomize", str(directory)], check=False, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    return [d for d in yaml.safe_load_all(p.stdout) if d]


def _readable_by_image(path: Path, mode: int) -> None:
    os.chown(path, 0, UID)
    os.chmod(path, mode)


def test_two_containers_switch_keys_at_t(image: str, tmp_path: Path) -> None:
    """Two sidecar containers (read-only, non-root, their key directory mounted read-only as
    a Secret is) get the next key and T at different moments; both switch at T."""
    from sidecar.domain import keys as keys_mod

    root = Path(tempfile.mkdtemp(prefix="sc-cut-", dir="/tmp"))
    old_dir, new_dir = keygen(root / "old"), keygen(root / "new")
    old_id = RSAKey.import_key((old_dir / "public.pem").read_bytes()).thumbprint()
    new_public = (new_dir / "public.pem").read_bytes()
    new_id = RSAKey.import_key(new_public).thumbprint()
    names, ports, dirs = [f"sidecar-cut-{os.getpid()}-{i}" for i in (0, 1)], [free_port(), free_port()], []
    try:
        for name, port in zip(names, ports, strict=True):
            d = root / name
            d.mkdir()
            _readable_by_image(d, 0o750)
            shutil.copy(old_dir / "private.pem", d / "private.pem")
            _readable_by_image(d / "private.pem", 0o440)
            dirs.append(d)
            podman("run", "--detach", "--name", name, "--network", "host", "--read-only", "--cap-drop", "all",
                   "--security-opt", "no-new-privileges", "--volume", f"{d}:/etc/sidecar/key:ro",
                   "--env", f"SIDECAR_UUID_SALT={SALT}", "--env", f"SIDECAR_LISTEN=127.0.0.1:{port}",
                   "--env", "SIDECAR_METRICS_ADDR=", "--env", "SIDECAR_KEY_POLL_INTERVAL=1s",
                   "--env", "SIDECAR_NEXT_KEY_FILE=/etc/sidecar/key/next.pem",
                   "--env", "SIDECAR_NEXT_KEY_ACTIVATES_AT=@/etc/sidecar/key/next-activates-at", image)
        for name, port in zip(names, ports, strict=True):
            wait_container_serving(name, f"127.0.0.1:{port}")
        t = int(time.time()) + 6
        results: list[list[tuple[float, float, str, int, str]]] = [[], []]
        failed: list[str] = []

        def load(i: int) -> None:
            with grpc.insecure_channel(f"127.0.0.1:{ports[i]}") as ch:
                stub = pb_grpc.IdentityServiceStub(ch)
                while time.time() < t + 1:
                    sent = time.time()
                    try:
                        tok = stub.IssueToken(pb.IssueTokenRequest(email=EMAIL, uuid=COOKIE_UUID), timeout=10).token
                    except grpc.RpcError as exc:
                        failed.append(f"{exc.code().name}: {exc.details()}")
                        continue
                    results[i].append((sent, time.time(), tok.key_id, tok.expires_at.seconds, tok.jwt))

        import threading

        threads = [threading.Thread(target=load, args=(i,), daemon=True) for i in (0, 1)]
        for th in threads:
            th.start()
        for d, at in zip(dirs, (time.time(), t - 3), strict=True):  # now, and 3 s before T
            time.sleep(max(0.0, at - time.time()))
            (d / "next-activates-at.tmp").write_text(keys_mod.format_instant(t) + "\n")
            _readable_by_image(d / "next-activates-at.tmp", 0o440)
            shutil.copy(new_dir / "private.pem", d / "next.pem.tmp")
            _readable_by_image(d / "next.pem.tmp", 0o440)
            os.replace(d / "next.pem.tmp", d / "next.pem")
            os.replace(d / "next-activates-at.tmp", d / "next-activates-at")
        for th in threads:
            th.join(timeout=30)
        assert failed == []
        switches = []
        for calls in results:
            olds = [c for c in calls if c[2] == old_id]
            news = [c for c in calls if c[2] == new_id]
            assert olds and news and len(olds) + len(news) == len(calls)
            last_old_sent = max(c[0] for c in olds)
            first_new_received = min(c[1] for c in news)
            # No old-key token asked for at or after T, no new-key token back before T (the timing
            # of the first new-key answer depends on the machine's load: printed, not asserted).
            assert last_old_sent < t <= first_new_received
            assert max(c[3] for c in olds if c[0] > t - 1.5) <= t  # once T is known, no token outlives it
            verify(news[-1][4], new_public)
            with pytest.raises(BadSignatureError):
                verify(news[-1][4], (old_dir / "public.pem").read_bytes())
            switches.append(first_new_received)
        print(f"\ncontainers: first new-key token T+{(switches[0] - t) * 1000:.0f} ms and "
              f"T+{(switches[1] - t) * 1000:.0f} ms (callers' clock)")
        for name in names:
            logs = podman("logs", name).stderr
            assert "key cut over at" in logs and "PRIVATE KEY" not in logs, logs[-2000:]
    finally:
        for name in names:
            podman("rm", "--force", "--time", "0", name, check=False)
        shutil.rmtree(root, ignore_errors=True)


def _by_kind(docs: list[dict]) -> dict[str, dict]:  # type: ignore[type-arg]
    out = {}
    for d in docs:
        assert d["kind"] not in out, f"two {d['kind']}s"
        out[d["kind"]] = d
    return out


#: A user's Deployment of another shape than the example: its first container has another
#: name and neither env nor volumeMounts; a second container must be left alone.
USER_DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: shop-web}
spec:
  selector: {matchLabels: {app: shop-web}}
  template:
    metadata: {labels: {app: shop-web}}
    spec:
      containers:
        - {name: web, image: registry.example.com/shop-web:3}
        - name: worker
          image: registry.example.com/shop-worker:3
          env: [{name: MODE, value: worker}]
"""


def docs_kustomization() -> str:
    """The kustomization docs/deploy.md shows for adding the sidecar."""
    text = (ROOT / "docs" / "deploy.md").read_text()
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if "components:" in b]
    return block


def test_the_documented_kustomization_adds_the_sidecar_to_any_deployment(tmp_path: Path) -> None:
    block = docs_kustomization()
    assert len(block.strip().splitlines()) <= 10
    (tmp_path / "deployment.yaml").write_text(USER_DEPLOYMENT)
    (tmp_path / "kustomization.yaml").write_text(
        block.replace("../path/to/deploy/kubernetes/component", os.path.relpath(DEPLOY / "component", tmp_path)))
    docs = _by_kind(kustomize(tmp_path))
    assert set(docs) == {"Deployment", "ConfigMap"}  # the build-time ConfigMap is dropped
    spec = docs["Deployment"]["spec"]["template"]["spec"]
    (sidecar,) = spec["initContainers"]
    assert sidecar["image"] == "registry.example.com/identity-sidecar:0.1.0"  # the documented `images:` applies
    web, worker = spec["containers"]
    assert web["env"] == [{"name": "SIDECAR_ADDR", "value": "unix:///run/sidecar/sidecar.sock"}]
    assert web["volumeMounts"] == [{"name": "sidecar-socket", "mountPath": "/run/sidecar", "readOnly": True}]
    assert worker == yaml.safe_load(USER_DEPLOYMENT)["spec"]["template"]["spec"]["containers"][1]
    assert docs["ConfigMap"]["metadata"]["name"] == sidecar["envFrom"][0]["configMapRef"]["name"]


def test_rendered_example_agrees_with_itself_the_image_and_the_podmonitor() -> None:
    """What kubernetes-validate cannot see: the pieces point at each other and at the image's layout."""
    docs = _by_kind(kustomize(DEPLOY / "example"))
    deploy, cm = docs["Deployment"], docs["ConfigMap"]
    mon = yaml.safe_load((DEPLOY / "monitoring" / "podmonitor.yaml").read_text())
    pod = deploy["spec"]["template"]
    spec = pod["spec"]
    (sidecar,) = spec["initContainers"]
    assert sidecar["name"] == "sidecar" and sidecar["restartPolicy"] == "Always"  # native sidecar
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"ARG SIDECAR_UID={sidecar['securityContext']['runAsUser']}" in dockerfile
    assert spec["securityContext"]["fsGroup"] == sidecar["securityContext"]["runAsGroup"] == UID
    # Pod Security Standard "restricted" for the sidecar; the example app keeps its own hardening.
    sc = sidecar["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"]["drop"] == ["ALL"] and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in spec["containers"]:
        assert c["securityContext"]["readOnlyRootFilesystem"] and c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    # Key: a projected Secret volume, 0400, read-only, where SIDECAR_KEY_FILE and the image expect it;
    # the next key and its instant optional (a Secret without them still mounts).
    vols = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["name"]: m for m in sidecar["volumeMounts"]}
    key_vol = vols["sidecar-key"]["projected"]
    assert key_vol["defaultMode"] == 0o400
    required, optional = key_vol["sources"]
    assert required["secret"]["items"] == [{"key": "private.pem", "path": "private.pem"}]
    assert "optional" not in required["secret"] and optional["secret"]["optional"] is True
    assert {i["key"]: i["path"] for i in optional["secret"]["items"]} == {"next.pem": "next.pem",
                                                                          "next-activates-at": "next-activates-at"}
    env = {e["name"]: e for e in sidecar["env"]}
    key_dir = mounts["sidecar-key"]["mountPath"]
    assert mounts["sidecar-key"]["readOnly"]
    assert env["SIDECAR_KEY_FILE"]["value"] == f"{key_dir}/private.pem"
    assert env["SIDECAR_NEXT_KEY_FILE"]["value"] == f"{key_dir}/next.pem"
    assert env["SIDECAR_NEXT_KEY_ACTIVATES_AT"]["value"] == f"@{key_dir}/next-activates-at"
    assert f"SIDECAR_KEY_FILE={env['SIDECAR_KEY_FILE']['value']}" in dockerfile
    secret = required["secret"]["name"]
    assert optional["secret"]["name"] == env["SIDECAR_UUID_SALT"]["valueFrom"]["secretKeyRef"]["name"] == secret
    # Socket: in the shared emptyDir; the app's first container mounts it read-only and is told the address.
    assert sidecar["envFrom"][0]["configMapRef"]["name"] == cm["metadata"]["name"]
    listen = cm["data"]["SIDECAR_LISTEN"].split(",")
    sock_dir = mounts["sidecar-socket"]["mountPath"]
    assert "emptyDir" in vols["sidecar-socket"] and listen[0] == f"unix://{sock_dir}/sidecar.sock"
    app = spec["containers"][0]
    assert {m["mountPath"]: m.get("readOnly") for m in app["volumeMounts"] if m["name"] == "sidecar-socket"} == \
        {sock_dir: True}
    assert {"name": "SIDECAR_ADDR", "value": listen[0]} in app["env"]
    # The signing API's TCP listener is loopback only; every probe is a native gRPC
    # probe on the health-only listener, which is declared as a container port.
    tcp = [a for a in listen if not a.startswith("unix://")]
    assert len(tcp) == 1 and tcp[0].startswith("127.0.0.1:")
    health_port = int(cm["data"]["SIDECAR_HEALTH_LISTEN"].rsplit(":", 1)[1])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert sidecar[probe]["grpc"] == {"port": health_port}
    # Metrics: listened on, declared by number, and what the PodMonitor selects (labels and port number).
    metrics_port = int(cm["data"]["SIDECAR_METRICS_ADDR"].rsplit(":", 1)[1])
    ports = {p["containerPort"] for p in sidecar["ports"]}
    assert ports == {metrics_port, health_port}
    (endpoint,) = mon["spec"]["podMetricsEndpoints"]
    assert endpoint["portNumber"] == metrics_port and "port" not in endpoint and "jobLabel" not in mon["spec"]
    assert mon["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert mon["metadata"]["name"] == "identity-sidecar"  # the rules' job matcher: <namespace>/identity-sidecar
    for c in [sidecar, *spec["containers"]]:
        assert {"requests", "limits"} <= c["resources"].keys()


def test_policies_select_the_example_pods() -> None:
    docs = _by_kind(kustomize(DEPLOY / "policy"))
    pod = _by_kind(kustomize(DEPLOY / "example"))["Deployment"]["spec"]["template"]
    netpol, pdb = docs["NetworkPolicy"], docs["PodDisruptionBudget"]
    labels = pod["metadata"]["labels"].items()
    assert netpol["spec"]["podSelector"]["matchLabels"].items() <= labels
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels
    assert pdb["spec"]["maxUnavailable"] == 1
    (sidecar,) = pod["spec"]["initContainers"]
    allowed = {p["port"] for rule in netpol["spec"]["ingress"] for p in rule["ports"]}
    sidecar_ports = {p["containerPort"] for p in sidecar["ports"]}
    assert allowed & sidecar_ports == {9464}  # metrics only; the health port only from the node
