"""Key-file safety: who may read or write the key files, and no core dumps holding them.

A key file (the active key, its passphrase file, the next key) that group or
others may *write* is always refused (SPEC §9): with the file watcher, anyone
who can write it swaps the signing key. One readable by others is refused, and
so is one readable by its group (unless the operator says
``--allow-insecure-key-permissions``): on a shared node anyone in the group
could copy it. One group-readable layout is
accepted because it is how Kubernetes mounts a Secret for a non-root container:
``defaultMode: 0400`` with ``fsGroup`` gives ``0440 root:<fsGroup>``. There the
file belongs to someone else, this process reads it only through its own group,
and the group cannot write it. Core dumps are switched off because a dump of the server
process would contain the parsed key.
"""

from __future__ import annotations

import os
import resource
import stat

from sidecar.domain import keys
from sidecar.domain.errors import UnusableKey

#: Permission bits that make a key file readable beyond its owner.
INSECURE_BITS = stat.S_IRGRP | stat.S_IROTH
#: Permission bits that let someone other than the owner replace the key: never accepted.
WRITABLE_BITS = stat.S_IWGRP | stat.S_IWOTH


def check_key_permissions(path: str, *, allow_insecure: bool = False, role: str = "key file") -> None:
    """Refuse a key file (after following symlinks) that group or others may write, or read.

    ``role`` names the file in the error (``key file``, ``passphrase file``,
    ``next key file``); ``allow_insecure`` (``--allow-insecure-key-permissions``)
    lets group and others *read* it, never write it. Call it wherever such a file
    is (re)loaded: start-up and every reload.

    >>> check_key_permissions("/nonexistent")  # a missing file is reported by the loader
    """
    try:
        st = os.stat(path)
    except OSError:
        return
    mode = st.st_mode
    if not stat.S_ISREG(mode):  # a directory or device is reported by the loader, accurately
        return
    if mode & WRITABLE_BITS:
        raise UnusableKey(
            f"{role} {path}: mode {stat.S_IMODE(mode):04o} lets group or others write it (and so swap the key); "
            "chmod 600 it (Kubernetes: defaultMode 0400)"
        )
    if mode & INSECURE_BITS and not allow_insecure and not _secret_volume_layout(st):
        raise UnusableKey(
            f"{role} {path}: mode {stat.S_IMODE(mode):04o} lets group or others read "
            f"{'it' if role == 'passphrase file' else 'the private key'}; "
            "chmod 600 it (Kubernetes: defaultMode 0400), or pass --allow-insecure-key-permissions"
        )


def _secret_volume_layout(st: os.stat_result, euid: int | None = None, groups: set[int] | None = None) -> bool:
    """``0440 root:<our group>``-style: readable by group only, owned by another user,
    the group one of this process's (``euid``/``groups``: this process's unless given),
    and neither group nor others may write or read more."""
    euid = os.geteuid() if euid is None else euid
    groups = {os.getegid(), *os.getgroups()} if groups is None else groups
    mode = stat.S_IMODE(st.st_mode)
    return (
        not mode & (stat.S_IROTH | stat.S_IWOTH | stat.S_IXOTH | stat.S_IWGRP)
        and st.st_uid != euid
        and st.st_gid in groups
    )


def load_key(path: str, passphrase_file: str | None, *, allow_insecure: bool = False) -> keys.SigningKey:
    """Check the files' permissions (key and passphrase), then load the key (start-up and every reload)."""
    check_key_permissions(path, allow_insecure=allow_insecure)
    if passphrase_file is not None:
        check_key_permissions(passphrase_file, allow_insecure=allow_insecure, role="passphrase file")
    return keys.load(path, passphrase_file)


def disable_core_dumps() -> None:
    """Set RLIMIT_CORE to 0 (soft and hard) so this process and its children never dump core."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
