"""Claiming a run so that sweep workers sharing only a results directory never run the
same run: a claim is a file created atomically (`O_CREAT | O_EXCL`), holding who took it
(host, pid, time, a random token); the holder touches its mtime every few seconds while it
trains (a heartbeat thread).

A claim is stale, and taken over, when its heartbeat is older than `timeout` seconds, or
at once when it names a process on this host that no longer exists (a killed worker
restarted on the same machine need not wait). Taking over is serialised by a second
O_EXCL file (`<claim>.takeover`), so two workers that both see the same stale claim cannot
both win; a takeover lock left by a dead worker is itself stale after `timeout`.
Atomic O_EXCL create holds on local file systems and NFSv3+ (and on mounts of an object
store, such as gcsfuse, that implement it); `os.utime` heartbeats need the file systems'
clocks to agree within `timeout`. An object-store URL (`gs://`, `s3://`) has no exclusive
create through `etils.epath`/fsspec, so a sweep refuses one as its results directory
(`check_claims_supported`): mount the bucket (gcsfuse) instead, or write runs to shared
disk.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from jaxdepth.errors import UserError


@dataclass
class Claim:
    path: Path
    token: str
    _stop: threading.Event | None = None
    _thread: threading.Thread | None = None

    def start_heartbeat(self, every: float) -> None:
        """Touch the claim every `every` seconds until `release`."""
        self._stop = threading.Event()

        def beat():
            while not self._stop.wait(every):
                try:
                    os.utime(self.path)
                except FileNotFoundError:  # released or taken over: nothing to keep alive
                    return

        self._thread = threading.Thread(target=beat, daemon=True, name=f"heartbeat {self.path}")
        self._thread.start()

    def held(self) -> bool:
        """Whether the claim file is still ours (not taken over by another worker)."""
        info = read_claim(self.path)
        return info is not None and info.get("token") == self.token

    def release(self) -> None:
        if self._stop is not None:
            self._stop.set()
            self._thread.join()
        if self.held():
            self.path.unlink(missing_ok=True)


def read_claim(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:  # being written right now, or torn: treat as held, age decides
        return {}


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def claim_is_stale(path: Path, timeout: float, now: float | None = None) -> bool:
    """True when the claim's heartbeat is older than `timeout` s, or it names a dead
    process on this host."""
    info = read_claim(path)
    if info is None:
        return False
    try:
        age = (now or time.time()) - path.stat().st_mtime
    except FileNotFoundError:
        return False
    if age > timeout:
        return True
    if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int):
        return not _process_alive(info["pid"])
    return False


def _create(path: Path, token: str) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time(),
                   "token": token}, f)
    return True


def check_claims_supported(out_dir) -> None:
    """A UserError when `out_dir` is on a store where claims are not atomic (see above)."""
    if "://" in os.fspath(out_dir):
        raise UserError(
            f"sweep results directory '{out_dir}' is an object-store URL, where run claims "
            "cannot be made atomically (no create-if-absent through fsspec); use a local or "
            "NFS directory, or a mount of the bucket (gcsfuse), as --out")


def try_claim(path: str | Path, timeout: float = 300.0) -> Claim | None:
    """Claim `path` (a file; its directory is created). Returns the Claim, or None when a
    live worker holds it. A stale claim is taken over (see the module docstring)."""
    check_claims_supported(path)
    path = Path(os.fspath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    if _create(path, token):
        return Claim(path, token)
    if not claim_is_stale(path, timeout):
        return None
    lock = path.with_name(path.name + ".takeover")
    if not _create(lock, token):
        try:  # a takeover lock left by a worker that died while taking over
            if time.time() - lock.stat().st_mtime > timeout:
                lock.unlink(missing_ok=True)
        except FileNotFoundError:
            pass
        return None
    try:
        if not claim_is_stale(path, timeout):  # someone else took it over meanwhile
            return None
        path.unlink(missing_ok=True)
        return Claim(path, token) if _create(path, token) else None
    finally:
        lock.unlink(missing_ok=True)
