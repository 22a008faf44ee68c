"""Key rotation: reload the signing key on SIGHUP and when the key file changes,
and switch to a scheduled next key at its instant.

The watcher polls ``os.stat`` of each file's *resolved* path, so it sees an
in-place overwrite, a ``mv`` of a new file over the old one, and the way
Kubernetes updates a Secret volume (the ``..data`` symlink is swapped to a new
timestamped directory; the path the sidecar was given never changes). SIGHUP
asks for a reload at once.

A new key is parsed completely before it replaces the old one through
:meth:`KeyHolder.swap`, so calls in flight keep the key they started with and
calls arriving during the swap get either key, never an error. A bad new key
(unreadable, not RSA, too short, wrong passphrase, readable by group/others)
is refused: the old key stays active, one log line says why, and
``observer.key_reload("failure")`` counts it. A failed reload is tried again
on every poll until it succeeds (a failure to read can be passing, e.g. out
of file descriptors); a file that stays bad the same way is reported once
(and again on SIGHUP), not on every poll. A key file holding the key that is
already active is a no-op: no swap, no purge, no log line.

The next key (``SIDECAR_NEXT_KEY_FILE``) and its instant T
(``SIDECAR_NEXT_KEY_ACTIVATES_AT``: an RFC 3339 instant, or ``@file`` holding
one) are watched the same way (SPEC §8). Both are checked in full before they
count; a bad one is refused (one log line, ``observer.next_key_refused``) and
changes nothing. Missing files are normal (the Secret has not been updated
yet). Once both are good the key is scheduled on the :class:`KeyHolder`,
which switches at T by this process's clock; this thread also wakes at T so
metrics and ``GetPublicKey`` follow even when no call comes. A key that
arrives after T is made active at once and reported late
(``observer.key_late``), except at start-up, where it is simply the key in
force.

>>> # rot = KeyRotator(holder, observer, "/run/secrets/key/private.pem")
>>> # rot.start(); ...; rot.request_reload()  # SIGHUP; rot.stop()
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from sidecar.domain.errors import SidecarError
from sidecar.domain.keys import KeyHolder, Scheduled, SigningKey, format_instant, parse_instant
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


#: The largest instant file read (an RFC 3339 instant is ~25 bytes).
MAX_INSTANT_BYTES = 256

_State = tuple["FileState | None", ...]


class _Refusals:
    """Which refusal was last reported per setting, so a file that stays bad is reported once."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[object, str]] = {}

    def first(self, what: str, state: object, why: str) -> bool:
        """Whether this refusal is new (to be logged and counted)."""
        if self._last.get(what) == (state, why):
            return False
        self._last[what] = (state, why)
        return True

    def clear(self, what: str) -> None:
        self._last.pop(what, None)


class KeyRotator:
    """Watch the key files and swap the active key when they change, on request, or at T."""

    def __init__(
        self,
        holder: KeyHolder,
        observer: Observer,
        key_file: str,
        passphrase_file: str | None = None,
        *,
        next_key_file: str | None = None,
        next_activates_at: str | None = None,
        poll_interval: float = 1.0,
        allow_insecure_permissions: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.holder = holder
        self.observer = observer
        self.key_file = key_file
        self.passphrase_file = passphrase_file
        self.next_key_file = next_key_file
        self.next_activates_at = next_activates_at
        self.poll_interval = poll_interval
        self.allow_insecure_permissions = allow_insecure_permissions
        self.clock = clock
        #: State of the files at the last *successful* read: anything else is read again.
        self._seen = self._state()
        self._next_seen: _State | None = None  # never read yet
        #: The next key and instant last read whole (``None``: nothing scheduled by the files).
        self._wanted: Scheduled | None = None
        self._refusals = _Refusals()
        self._starting = False
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._forced = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        holder.on_cutover(self._cut_over)

    @property
    def schedules(self) -> bool:
        """Whether next-key settings are configured."""
        return self.next_key_file is not None and self.next_activates_at is not None

    def _state(self) -> _State:
        return FileState.of(self.key_file), FileState.of(self.passphrase_file) if self.passphrase_file else None

    def _instant_file(self) -> str | None:
        spec = self.next_activates_at
        return spec[1:] if spec is not None and spec.startswith("@") else None

    def _next_state(self) -> _State:
        instant_file = self._instant_file()
        return (FileState.of(self.next_key_file) if self.next_key_file else None,
                FileState.of(self.passphrase_file) if self.passphrase_file else None,
                FileState.of(instant_file) if instant_file else None)

    # --- the active key --------------------------------------------------------------------------

    def reload(self, trigger: str) -> bool:
        """Load the key file now and make it active; ``False`` if it is bad (old key kept) or unchanged."""
        with self._lock:
            state = self._state()
            old = self.holder.current if self.holder.loaded else None
            try:
                new = keyfile.load_key(self.key_file, self.passphrase_file,
                                       allow_insecure=self.allow_insecure_permissions)
            except SidecarError as exc:
                self._refused(trigger, state, old, str(exc))
                return False
            except Exception as exc:  # noqa: BLE001 - never let a reload take the server down
                self._refused(trigger, state, old, f"unexpected {type(exc).__name__}")
                return False
            self._seen = state
            self._refusals.clear("key_file")
            if old is not None and new.key_id == old.key_id:
                log.debug("key file %s holds the active key %s: nothing to do", self.key_file, old.key_id)
                return False
            wanted = self._wanted
            if (old is not None and wanted is not None and wanted.key.key_id == old.key_id
                    and self.clock() >= wanted.activates_at):
                log.warning("key file %s holds key %s, but the next key %s is active since %s and "
                            "SIDECAR_NEXT_KEY_FILE still names it: keeping it. Promote the next key to the key file "
                            "and remove the next-key settings", self.key_file, new.key_id, old.key_id,
                            format_instant(wanted.activates_at))
                return False
            self.holder.swap(new)
            self.observer.key_reload("success")
            self.observer.key_activated(new)
            log.info("key reloaded (%s): %s -> %s (%d bits)", trigger, old.key_id if old else "-", new.key_id, new.bits)
            pending = self.holder.next
            if pending is not None and pending.key.key_id == new.key_id:
                self.holder.unschedule()
                self.observer.next_key(None, None)
                log.info("the next key %s is now the active key: nothing left to switch at %s",
                         new.key_id, format_instant(pending.activates_at))
            return True

    def _refused(self, trigger: str, state: object, old: SigningKey | None, why: str) -> None:
        if not self._refusals.first("key_file", state, why) and trigger != "SIGHUP":
            return  # the same file, bad the same way: tried again, reported once (unless asked by SIGHUP)
        self.observer.key_reload("failure")
        log.error("key reload (%s) refused, keeping key %s: %s", trigger, old.key_id if old else "-", why)

    # --- the next key ----------------------------------------------------------------------------

    def reload_next(self, trigger: str) -> bool:
        """Read the next key and its instant; schedule, reschedule or drop it. Whether anything changed.

        Both are checked in full first: a bad one changes nothing.
        """
        if not self.schedules:
            return False
        with self._lock:
            state = self._next_state()
            key = self._read_next_key(trigger, state)
            instant = self._read_instant(trigger, state)
            if key is False or instant is False:
                return False  # refused (reported once); read again on the next poll
            self._next_seen = state
            wanted = Scheduled(key, instant) if key is not None and instant is not None else None
            self._wanted = wanted
            return self._apply(wanted, trigger)

    def _read_next_key(self, trigger: str, state: _State) -> SigningKey | Literal[False] | None:
        assert self.next_key_file is not None
        if not os.path.exists(self.next_key_file):  # also a Secret's dangling symlink
            self._refusals.clear("key")
            return None  # not delivered yet: normal
        try:
            key = keyfile.load_key(self.next_key_file, self.passphrase_file,
                                   allow_insecure=self.allow_insecure_permissions)
        except SidecarError as exc:
            return self._next_refused(trigger, "key", state, str(exc))
        except Exception as exc:  # noqa: BLE001 - a bad next key never takes the server down
            return self._next_refused(trigger, "key", state, f"unexpected {type(exc).__name__}")
        self._refusals.clear("key")
        return key

    def _read_instant(self, trigger: str, state: _State) -> int | Literal[False] | None:
        spec = self.next_activates_at
        assert spec is not None
        path = self._instant_file()
        source = "SIDECAR_NEXT_KEY_ACTIVATES_AT"
        if path is not None:
            source = f"instant file {path}"
            if not os.path.exists(path):
                self._refusals.clear("instant")
                return None  # not delivered yet: normal
            try:
                with open(path, "rb") as f:
                    data = f.read(MAX_INSTANT_BYTES + 1)
            except OSError as exc:
                return self._next_refused(trigger, "instant", state, f"{source}: cannot read it ({exc.strerror})")
            if len(data) > MAX_INSTANT_BYTES:
                return self._next_refused(trigger, "instant", state,
                                          f"{source}: longer than {MAX_INSTANT_BYTES} bytes; it must hold one instant")
            try:
                spec = data.decode("utf-8")
            except UnicodeDecodeError:
                return self._next_refused(trigger, "instant", state, f"{source}: is not UTF-8 text")
        try:
            instant = parse_instant(spec, source)
        except SidecarError as exc:
            return self._next_refused(trigger, "instant", state, str(exc))
        self._refusals.clear("instant")
        return instant

    def _next_refused(self, trigger: str, what: str, state: object, why: str) -> Literal[False]:
        if self._refusals.first(what, state, why) or trigger == "SIGHUP":
            self.observer.next_key_refused(what)
            pending = self.holder.next
            keeping = (f"keeping the schedule of {pending.key.key_id} at {format_instant(pending.activates_at)}"
                       if pending else "nothing is scheduled")
            log.error("next key (%s) refused, %s: %s", trigger, keeping, why)
        return False

    def _apply(self, wanted: Scheduled | None, trigger: str) -> bool:
        active = self.holder.current  # a due key becomes active first
        pending = self.holder.next
        if wanted is None or wanted.key.key_id == active.key_id:
            if pending is None:
                return False  # nothing scheduled, or the switch already happened: quiet
            self.holder.unschedule()
            self.observer.next_key(None, None)
            why = "the next key is the active key" if wanted else "the next-key files are gone"
            log.info("next key %s at %s unscheduled (%s): %s keeps signing, tokens no longer end at that instant",
                     pending.key.key_id, format_instant(pending.activates_at), why, active.key_id)
            return True
        if pending == wanted or (pending is not None and pending.key.key_id == wanted.key.key_id
                                 and pending.activates_at == wanted.activates_at):
            return False
        now = self.clock()
        self.holder.schedule(wanted.key, wanted.activates_at)  # past T: active at once (see _cut_over)
        if self.holder.next is not None:  # first schedule, then tell: a log line can wait on its writer
            self.observer.next_key(wanted.key, wanted.activates_at)
            log.info("next key %s (%d bits) scheduled (%s) for %s, in %.0f s: until then %s signs and no token "
                     "outlives that instant", wanted.key.key_id, wanted.key.bits, trigger,
                     format_instant(wanted.activates_at), wanted.activates_at - now, active.key_id)
        return True

    def _cut_over(self, old: SigningKey, scheduled: Scheduled, late: float) -> None:
        """The holder switched to the scheduled key (in whichever thread saw T first)."""
        new = scheduled.key
        self.observer.key_activated(new)
        self.observer.next_key(None, None)
        at = format_instant(scheduled.activates_at)
        if late > 0 and self._starting:
            log.info("next key %s is in force: its instant %s passed before this process started (was %s)",
                     new.key_id, at, old.key_id)
        elif late > 0:
            self.observer.key_late(late)
            log.warning("next key %s arrived %.3f s after its instant %s: active at once, LATE (%s signed until now)",
                        new.key_id, late, at, old.key_id)
        else:
            log.info("key cut over at %s: %s -> %s (%d bits)", at, old.key_id, new.key_id, new.bits)

    # --- the watcher -----------------------------------------------------------------------------

    def poll(self) -> bool:
        """Read again what changed since it was last read whole (or failed); whether a key changed."""
        key_state = self._state()
        next_state = self._next_state() if self.schedules else None
        key_changed = key_state != self._seen
        next_changed = self.schedules and next_state != self._next_seen
        if not key_changed and not next_changed:
            return False
        self._stop.wait(SETTLE_SECONDS)
        if self._state() != key_state or (self.schedules and self._next_state() != next_state):
            return False  # still being written: look again on the next poll
        changed = False
        if next_changed:
            changed = self.reload_next("file change") or changed
        if key_changed:
            changed = self.reload("file change") or changed
        return changed

    def request_reload(self) -> None:
        """Ask the watcher thread for a reload now (safe to call from a signal handler)."""
        self._forced = True
        self._wake.set()

    def start(self, initial: SigningKey | None = None) -> None:
        """Read the next-key settings and start the watcher thread (before serving).

        ``initial`` is the key loaded before this process started watching
        (e.g. parsed by the pre-fork master): if the file changed since then,
        it is reloaded at once, so a restarted worker never serves a stale key.
        """
        self._starting = True
        try:
            key_state = self._seen[0]
            if initial is not None and key_state is not None and key_state.newer_than(initial.loaded_at):
                self.reload("start")
            self.reload_next("start")
        finally:
            self._starting = False
        self._thread = threading.Thread(target=self._run, name="key-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _timeout(self) -> float:
        """Until the next poll, or until T if that comes first."""
        pending = self.holder.next
        if pending is None:
            return self.poll_interval
        return max(0.0, min(self.poll_interval, pending.activates_at - self.clock()))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._timeout())
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.holder.next  # noqa: B018 - at T: make the next key active even when no call comes
                if self._forced:
                    self._forced = False
                    self.reload_next("SIGHUP")
                    self.reload("SIGHUP")
                else:
                    self.poll()
            except Exception:
                log.exception("key watcher error")
