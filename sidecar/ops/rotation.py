"""Key rotation: reload the signing key on SIGHUP and when the key file changes.

The watcher polls ``os.stat`` of the key file's *resolved* path, so it sees an
in-place overwrite, a ``mv`` of a new file over the old one, and the way
Kubernetes updates a Secret volume (the ``..data`` symlink is swapped to a new
timestamped directory; the path the sidecar was given never changes). SIGHUP
asks for a reload at once.

A new key is parsed completely before it replaces the old one through
:meth:`KeyHolder.swap`, so calls in flight keep the key they started with and
calls arriving during the swap get either key, never an error. A bad new key
(unreadable, not RSA, too short, wrong passphrase, readable by group/others)
is refused: the old key stays active, one log line says why, and
``observer.key_reload("failure")`` counts it. A file that stays bad is
reported once, not on every poll.

>>> # rot = KeyRotator(holder, observer, "/run/secrets/key/private.pem")
>>> # rot.start(); ...; rot.request_reload()  # SIGHUP; rot.stop()
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

from sidecar.domain.errors import SidecarError
from sidecar.domain.keys import KeyHolder, SigningKey
from sidecar.ops import keyfile
from sidecar.service.observer import Observer

log = logging.getLogger("sidecar.rotation")

#: Wait this long after seeing a change before reading, so a file being
#: written in place is read whole (the change must be stable across it).
SETTLE_SECONDS = 0.05


@dataclass(frozen=True)
class FileState:
    """What identifies one version of a file: its resolved path and inode stat."""

    resolved: str
    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, path: str) -> FileState | None:
        """The state of ``path`` after following every symlink; ``None`` if it cannot be stat'ed."""
        try:
            resolved = os.path.realpath(path)
            st = os.stat(resolved)
        except OSError:
            return None
        return cls(resolved, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def newer_than(self, unix_seconds: float) -> bool:
        """Whether the file was written or replaced after ``unix_seconds``."""
        return max(self.mtime_ns, self.ctime_ns) > unix_seconds * 1e9


class KeyRotator:
    """Watch the key file and swap the active key when it changes or on request."""

    def __init__(
        self,
        holder: KeyHolder,
        observer: Observer,
        key_file: str,
        passphrase_file: str | None = None,
        *,
        poll_interval: float = 1.0,
        allow_insecure_permissions: bool = False,
    ) -> None:
        self.holder = holder
        self.observer = observer
        self.key_file = key_file
        self.passphrase_file = passphrase_file
        self.poll_interval = poll_interval
        self.allow_insecure_permissions = allow_insecure_permissions
        self._seen = self._state()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._forced = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _state(self) -> tuple[FileState | None, FileState | None]:
        return FileState.of(self.key_file), FileState.of(self.passphrase_file) if self.passphrase_file else None

    def reload(self, trigger: str) -> bool:
        """Load the key file now and make it active; ``False`` (old key kept) if it is bad."""
        with self._lock:
            self._seen = self._state()
            old = self.holder.current if self.holder.loaded else None
            try:
                new = keyfile.load_key(self.key_file, self.passphrase_file,
                                       allow_insecure=self.allow_insecure_permissions)
            except SidecarError as exc:
                self._refused(trigger, old, str(exc))
                return False
            except Exception as exc:  # noqa: BLE001 - never let a reload take the server down
                self._refused(trigger, old, f"unexpected {type(exc).__name__}")
                return False
            self.holder.swap(new)
            self.observer.key_reload("success")
            self.observer.key_activated(new)
            log.info("key reloaded (%s): %s -> %s (%d bits)", trigger, old.key_id if old else "-", new.key_id, new.bits)
            return True

    def _refused(self, trigger: str, old: SigningKey | None, why: str) -> None:
        self.observer.key_reload("failure")
        log.error("key reload (%s) refused, keeping key %s: %s", trigger, old.key_id if old else "-", why)

    def poll(self) -> bool:
        """Reload if the key (or passphrase) file changed since it was last read; whether it reloaded."""
        state = self._state()
        if state == self._seen:
            return False
        self._stop.wait(SETTLE_SECONDS)
        if self._state() != state:
            return False  # still being written: look again on the next poll
        return self.reload("file change")

    def request_reload(self) -> None:
        """Ask the watcher thread for a reload now (safe to call from a signal handler)."""
        self._forced = True
        self._wake.set()

    def start(self, initial: SigningKey | None = None) -> None:
        """Start the watcher thread.

        ``initial`` is the key loaded before this process started watching
        (e.g. parsed by the pre-fork master): if the file changed since then,
        it is reloaded at once, so a restarted worker never serves a stale key.
        """
        key_state = self._seen[0]
        if initial is not None and key_state is not None and key_state.newer_than(initial.loaded_at):
            self.reload("start")
        self._thread = threading.Thread(target=self._run, name="key-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll_interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                if self._forced:
                    self._forced = False
                    self.reload("SIGHUP")
                else:
                    self.poll()
            except Exception:
                log.exception("key watcher error")
