"""The run lock on a bucket: a lease object `<run_dir>/.lock`.

GCS has no flock, so the lock is an object whose body names its owner and
when the lease expires; the generation preconditions of google-cloud-storage
make every step a compare-and-swap (a mismatch is 412 PreconditionFailed):

* take: create it with `ifGenerationMatch=0` (create only: of several racing
  creators exactly one succeeds);
* renew: the owner rewrites it with `ifGenerationMatch=<its generation>`, from
  a daemon thread every ttl/4, pushing the expiry a ttl ahead; a 412 means it
  was taken over: `lost` is set and `check()` raises before the next save;
* take over: only once the body's expiry has passed, by writing with
  `ifGenerationMatch=<the stale generation>`: of several contenders who read
  the same stale generation exactly one wins, the others see a live lease;
* release: delete it with `ifGenerationMatch=<its generation>`.  fake-gcs-server
  1.54 ignores preconditions on delete (its issue #1282), so the generation is
  also read first and a lease that is no longer ours is left alone.

Expiry is the owner's wall clock read by the contender's: the owner renews
every ttl/4 with a ttl ahead, so a contender's clock would have to run 3/4 of a
ttl ahead to take a live lease; NTP keeps hosts far closer.  A killed trainer
blocks its run for at most one ttl (DLRM_LEASE_TTL_S, default 120 s); the
"held" line says how long.  GCS takes about one write per second per object
name, far above one renewal per ttl/4.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from typing import Any

from dlrm_jax.errors import UserError
from dlrm_jax.run import storage

NAME = ".lock"


def default_ttl() -> float:
    raw = os.environ.get("DLRM_LEASE_TTL_S", "120")
    try:
        ttl = float(raw)
    except ValueError:
        ttl = -1.0
    if not ttl > 0:
        raise UserError(f"DLRM_LEASE_TTL_S={raw!r}: not a positive number of seconds")
    return ttl


class Lease:
    """One owner's lease on a gs:// lock object (`acquire`, `renew`, `release`)."""

    def __init__(self, lock_path: Any, ttl_s: float | None = None, renew: bool = True):
        self.path = os.fspath(lock_path)
        self.ttl_s = default_ttl() if ttl_s is None else float(ttl_s)
        self.owner = uuid.uuid4().hex
        self.generation: int | None = None
        self.expires = 0.0
        self.lost = False
        self._auto_renew = renew
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        name = storage.bucket(self.path)
        storage.check_bucket(name)
        self._bucket = storage.client().bucket(name)
        self._key = self.path[len(storage.SCHEME) + len(name) + 1:]

    # ------------------------------------------------------------------ taking it
    def acquire(self, held_message: str) -> None:
        """Take the lease, or raise UserError(`held_message` + who holds it until when)."""
        for _ in range(8):  # each pass ends in a win, a live holder, or a lost race to retry
            if self.try_take(0):
                break
            current = self.read()
            if current is None:
                continue  # released between our create and our read: create again
            generation, holder, expires = current
            left = expires - time.time()
            if left > 0:
                raise UserError(f"{held_message}: held by {holder.get('host', '?')} pid "
                                f"{holder.get('pid', '?')}, lease expires in {left:.0f} s "
                                f"unless renewed")
            if self.try_take(generation):  # take over exactly the stale generation
                break
            # else another contender won it (or it was renewed): see who holds it now
        else:
            raise UserError(f"{held_message}: the lease kept changing hands; try again")
        if self._auto_renew:
            self._thread = threading.Thread(target=self._heartbeat, name=f"lease {self.path}",
                                            daemon=True)
            self._thread.start()

    def try_take(self, generation: int) -> bool:
        """One compare-and-swap: write our lease if the object's generation is still
        `generation` (0: if there is no lease object); False if it is not."""
        from google.api_core.exceptions import PreconditionFailed
        try:
            self._put(generation)
        except PreconditionFailed:
            return False
        return True

    def read(self) -> tuple[int, dict, float] | None:
        """The lease object now: (generation, body, expiry as a Unix time), None if there is none."""
        from google.api_core.exceptions import NotFound, PreconditionFailed
        current = self._bucket.get_blob(self._key, timeout=storage.BUCKET_TIMEOUT_S)
        if current is None:
            return None
        try:
            body = current.download_as_bytes(if_generation_match=current.generation,
                                             timeout=storage.BUCKET_TIMEOUT_S)
        except (NotFound, PreconditionFailed):
            return self.read()  # renewed or released between the two requests: read again
        holder = _parse(body)
        expires = holder.get("expires")
        if not isinstance(expires, (int, float)):  # a body we cannot read: its write time + ttl
            expires = current.updated.timestamp() + self.ttl_s
        return current.generation, holder, float(expires)

    def _put(self, if_generation: int) -> None:
        now = time.time()
        expires = now + self.ttl_s
        body = {"owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(),
                "ttl_s": self.ttl_s, "renewed": now, "expires": expires}
        blob = self._bucket.blob(self._key)
        blob.upload_from_string(json.dumps(body) + "\n", content_type="application/json",
                                if_generation_match=if_generation,
                                timeout=storage.BUCKET_TIMEOUT_S)
        self.generation = blob.generation
        self.expires = expires

    # ------------------------------------------------------------------ keeping it
    def renew(self) -> bool:
        """Push the expiry a ttl ahead; False (and `lost`) once someone else holds it."""
        from google.api_core.exceptions import PreconditionFailed
        if self.lost or self.generation is None:
            return False
        try:
            self._put(self.generation)
        except PreconditionFailed:
            self.lost = True  # taken over (or deleted) after we failed to renew in time
        except Exception:
            # A transient error (network, 5xx): try again on the next beat.  Past our own
            # expiry another trainer may take it, so from then on it counts as lost.
            if time.time() >= self.expires:
                self.lost = True
        return not self.lost

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            if not self.renew():
                return

    def check(self) -> None:
        """UserError if the lease was lost: call before a save or the summary."""
        if self.lost or (self.generation is not None and time.time() >= self.expires):
            self.lost = True
            raise UserError(f"lost the run lock {self.path} (not renewed within its "
                            f"{self.ttl_s:.0f} s lease; another trainer may hold it now); stopping")

    # ------------------------------------------------------------------ giving it back
    def release(self) -> None:
        from google.api_core.exceptions import NotFound, PreconditionFailed
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=storage.BUCKET_TIMEOUT_S)
        generation, self.generation = self.generation, None
        if generation is None or self.lost:
            return
        current = self._bucket.get_blob(self._key, timeout=storage.BUCKET_TIMEOUT_S)
        if current is None or current.generation != generation:
            return  # someone else's lease now: not ours to delete
        try:
            current.delete(if_generation_match=generation, timeout=storage.BUCKET_TIMEOUT_S)
        except (NotFound, PreconditionFailed):
            pass


def _parse(body: bytes) -> dict:
    try:
        out = json.loads(body)
    except ValueError:
        return {}
    return out if isinstance(out, dict) else {}


# --------------------------------------------------------------------------- rundir's interface

_LEASES: dict[str, Lease] = {}


def lock(run_dir: Any, held_message: str) -> Lease:
    """Take the run's lease (released by `unlock`, or expiring a ttl after the process dies)."""
    key = os.fspath(run_dir).rstrip("/")
    unlock(run_dir)  # this process trained here before (a retry in the same session)
    lease = Lease(f"{key}/{NAME}")
    lease.acquire(held_message)
    _LEASES[key] = lease
    return lease


def unlock(run_dir: Any) -> None:
    lease = _LEASES.pop(os.fspath(run_dir).rstrip("/"), None)
    if lease is not None:
        lease.release()


def check(run_dir: Any) -> None:
    """UserError if this process held the run's lease and lost it; nothing otherwise."""
    lease = _LEASES.get(os.fspath(run_dir).rstrip("/"))
    if lease is not None:
        lease.check()
