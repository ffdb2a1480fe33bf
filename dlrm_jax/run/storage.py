"""The one path layer for run directories: local paths and `gs://` buckets.

Local paths keep today's behaviour byte for byte: `path()` gives a plain
`pathlib.Path`, `write_atomic` is `files.write_atomic` (temp file, fsync,
rename).  A `gs://bucket/prefix` path is an `etils.epath.Path` (what Orbax
takes) and every operation here goes through one gcsfs filesystem:

* A single-object write is the atomic unit on GCS (readers see the old or the
  new object), so `write_atomic` is one PUT, no temp name: a rename on GCS is a
  copy plus a delete per object.
* Nothing is ever opened for append: gcsfs turns `open("a")` into an overwrite
  with only a warning (every earlier line lost).  metrics.jsonl on a bucket is
  rewritten whole (rundir.MetricsLog).
* No `**` globs (gcsfs raises NotImplementedError): `glob` here matches names
  in one directory.
* No `Path.absolute()` on gs://: `pathlib.Path("gs://b/r").absolute()` is
  `<cwd>/gs:/b/r`; use `absolute()` here.
* gcsfs caches listings per process; another process's (or the lease's
  google-cloud-storage) writes would not show, so the filesystem here keeps no
  listings cache.
* The bucket is looked up first, once per process, with a timeout and no
  retries: a missing bucket, missing credentials or a 403 is one UserError line
  within seconds (gcsfs retries some of these for minutes, and `mkdir` of a
  bucket-only path would create the bucket).

The gcs extra (`pip install -e '.[gcs]'`) brings gcsfs and google-cloud-storage;
without it a gs:// path is a UserError with that install line.  Standard
library only at import, so the JAX-free `analysis` package may use it.
"""
from __future__ import annotations

import fnmatch
import os
import threading
from pathlib import Path
from typing import Any, Callable

from dlrm_jax.errors import UserError
from dlrm_jax.run import files

SCHEME = "gs://"
INSTALL = "pip install -e '.[gcs]'"
# Seconds a bucket lookup may take before it is reported (no retries: a missing
# bucket must be one line at once, not a minute of backoff).
BUCKET_TIMEOUT_S = 20.0


def _set_env() -> None:
    """Environment the gs:// libraries read when they load or first run.

    GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT: gcsfs >= 2026.3 asks the Storage Control
    gRPC API for each bucket's type, read when gcsfs is imported; an emulator
    lacks that API and every call waits ~60 s.  EPATH_USE_TF: epath otherwise
    sends gs:// to tf.io.gfile whenever tensorflow is importable (the tfds
    extra), a second client with other semantics than the gcsfs used here.
    setdefault: a user who needs either may still set it."""
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    os.environ.setdefault("EPATH_USE_TF", "false")


_set_env()  # now, before anything (Orbax's epath, a test) can load gcsfs


def is_remote(p: Any) -> bool:
    """True for a gs:// path (a string or an epath.Path), False for a local one."""
    return os.fspath(p).startswith(SCHEME)


def path(p: str | os.PathLike) -> Any:
    """`pathlib.Path` for a local path, `etils.epath.Path` for gs://bucket/...

    Pass the user's string: `pathlib.Path("gs://b/r")` already lost a slash
    ("gs:/b/r"), which is refused here rather than written under ./gs:."""
    text = os.fspath(p)
    if text.startswith(SCHEME):
        _libraries(text)
        check_bucket(bucket(text))  # a bad bucket is one line now, before anything is written
        from etils import epath
        return epath.Path(text)
    if isinstance(p, Path) and p.parts[:1] == ("gs:",):
        raise ValueError(f"{p}: a gs:// path went through pathlib.Path (one slash lost); "
                         f"pass the string to storage.path")
    return Path(p)


def bucket(p: Any) -> str:
    """The bucket of a gs:// path; UserError for `gs://` without one."""
    name = os.fspath(p)[len(SCHEME):].split("/", 1)[0]
    if not name:
        raise UserError(f"{os.fspath(p)}: no bucket name (gs://BUCKET/path)")
    return name


def absolute(p: Any) -> Any:
    """Path.absolute() for a local path; a gs:// path is absolute already (see the trap above)."""
    return p if is_remote(p) else Path(p).absolute()


# --------------------------------------------------------------------------- remote plumbing

_LOCK = threading.Lock()
_FS: list = []             # the one gcsfs filesystem of this process
_CLIENT: list = []         # the one google-cloud-storage client
_CHECKED: set[str] = set()  # buckets looked up already


def _libraries(where: str) -> None:
    _set_env()
    try:
        import gcsfs  # noqa: F401
        from google.cloud import storage  # noqa: F401
    except ImportError:
        raise UserError(f"{where}: gs:// paths need the gcs extra: {INSTALL}") from None


def client():
    """The process's google-cloud-storage client (conditional writes: the lease)."""
    with _LOCK:
        if not _CLIENT:
            from google.cloud import storage
            try:
                _CLIENT.append(storage.Client())
            except Exception as err:  # google.auth's DefaultCredentialsError and kin
                raise UserError(_credentials_line(err)) from None
        return _CLIENT[0]


def _credentials_line(err: Exception) -> str:
    return (f"gs://: no Google Cloud credentials ({type(err).__name__}); run "
            f"`gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS")


def check_bucket(name: str) -> None:
    """UserError (one line) unless bucket `name` exists and these credentials may read it."""
    if name in _CHECKED:
        return
    from google.api_core import exceptions as gexc
    try:
        client().get_bucket(name, timeout=BUCKET_TIMEOUT_S, retry=None)
    except gexc.NotFound:
        raise UserError(f"gs://{name}: no such bucket (create it, or fix the path)") from None
    except gexc.Forbidden:
        raise UserError(f"gs://{name}: permission denied (403) for these credentials") from None
    except gexc.GoogleAPICallError as err:
        raise UserError(f"gs://{name}: bucket lookup failed ({err.code} {type(err).__name__})") from None
    except UserError:
        raise
    except Exception as err:  # no credentials, a refused token, an unreachable endpoint, a timeout
        text = type(err).__name__
        if "Credentials" in text or "RefreshError" in text or "TransportError" in text:
            raise UserError(_credentials_line(err)) from None
        raise UserError(f"gs://{name}: cannot reach the bucket ({text}: {str(err)[:80]})") from None
    _CHECKED.add(name)


def _fs(p: Any):
    """gcsfs filesystem, and the path as gcsfs names it ("bucket/key"), bucket checked."""
    text = os.fspath(p)
    _libraries(text)
    check_bucket(bucket(text))
    with _LOCK:
        if not _FS:
            import gcsfs
            # use_listings_cache=False: see the module docstring (other writers' objects).
            _FS.append(gcsfs.GCSFileSystem(use_listings_cache=False, skip_instance_cache=True))
        return _FS[0], text[len(SCHEME):].rstrip("/")


def forget_listings() -> None:
    """Drop the listings every gcsfs instance of this process caches, epath's (Orbax's
    view of a bucket) included: after objects were moved or removed through this
    module, or by another process, Orbax would otherwise still list them.  Nothing
    if gcsfs was never loaded (local runs)."""
    import sys
    if "gcsfs" in sys.modules:
        # fsspec keeps its instances on the class (_Cached): whatever options epath gave.
        for fs in list(getattr(sys.modules["gcsfs"].GCSFileSystem, "_cache", {}).values()):
            fs.invalidate_cache()


def reset() -> None:
    """Forget the client, the filesystem and the checked buckets (tests: a new emulator)."""
    with _LOCK:
        _FS.clear()
        _CLIENT.clear()
        _CHECKED.clear()


# --------------------------------------------------------------------------- the operations

def read_bytes(p: Any) -> bytes:
    """The whole file; FileNotFoundError if it does not exist (local or gs://)."""
    if not is_remote(p):
        return Path(p).read_bytes()
    fs, key = _fs(p)
    return fs.cat_file(key)


def read_ranges(paths: list, starts: list[int], ends: list[int]) -> list[bytes]:
    """Bytes [start, end) of each file (ranged reads: prepared data shards on a bucket).

    On gs:// one `cat_ranges` call, its requests in flight together; locally a seek and
    a read each.  A range past a file's end is cut short there, as a read would be."""
    if not paths:
        return []
    if not is_remote(paths[0]):
        out = []
        for p, start, end in zip(paths, starts, ends):
            with open(p, "rb") as f:
                f.seek(start)
                out.append(f.read(max(0, end - start)))
        return out
    fs, _ = _fs(paths[0])
    keys = [_fs(p)[1] for p in paths]
    return fs.cat_ranges(keys, list(starts), list(ends), on_error="raise")


def read_text(p: Any) -> str:
    return read_bytes(p).decode()


def write_atomic(p: Any, data: str | bytes) -> None:
    """Replace the whole file: readers see the old content or the new, never half."""
    if not is_remote(p):
        files.write_atomic(p, data)
        return
    fs, key = _fs(p)
    fs.pipe_file(key, data.encode() if isinstance(data, str) else data)  # one object write


def create_only(p: Any, data: str | bytes) -> bool:
    """Write the file only if there is none; False (nothing written) if there was one.

    On gs:// one upload with `ifGenerationMatch=0`: of several racing writers exactly
    one creates it.  Locally `O_CREAT | O_EXCL` (a temp file linked into place, so
    readers never see it half written)."""
    data = data.encode() if isinstance(data, str) else data
    if not is_remote(p):
        return _create_local(Path(p), data)
    from google.api_core.exceptions import PreconditionFailed
    try:
        _blob(p).upload_from_string(data, if_generation_match=0, timeout=BUCKET_TIMEOUT_S)
    except PreconditionFailed:
        return False
    return True


def rewrite(p: Any, build: Callable[[], str | bytes], tries: int = 20) -> None:
    """Replace the file with `build()`, where several processes rebuild it from the same
    sources (results.csv from the run directories of every shard of a sweep).

    Locally `write_atomic(p, build())`, as before.  On gs:// the object's generation is
    read before `build` and the write is conditional on it (`ifGenerationMatch`): a
    writer that rebuilt from an older view of the sources than the object already has
    gets 412 and builds again, so the last write always saw every source written
    before it (no shard's row lost to another shard's stale rebuild)."""
    if not is_remote(p):
        write_atomic(p, build())
        return
    import random
    import time

    from google.api_core.exceptions import PreconditionFailed
    blob = _blob(p)
    for attempt in range(tries):
        current = blob.bucket.get_blob(blob.name, timeout=BUCKET_TIMEOUT_S)
        data = build()
        data = data.encode() if isinstance(data, str) else data
        try:
            blob.upload_from_string(data, if_generation_match=current.generation if current else 0,
                                    timeout=BUCKET_TIMEOUT_S)
            return
        except PreconditionFailed:
            # Another writer came between our read and our write: rebuild from what is there
            # now.  Jittered, and at least GCS's ~1 s between writes of one object name.
            time.sleep(1.0 + random.random())
    raise OSError(f"{os.fspath(p)}: rewritten by other processes {tries} times in a row while "
                  f"this one rebuilt it; rerun to rebuild it")


def _create_local(p: Path, data: bytes) -> bool:
    import tempfile
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, p)  # fails if `p` exists: the one creator
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)
    return True


def _blob(p: Any):
    """The google-cloud-storage blob of a gs:// path (conditional writes), bucket checked."""
    text = os.fspath(p)
    _libraries(text)
    name = bucket(text)
    check_bucket(name)
    return client().bucket(name).blob(text[len(SCHEME) + len(name) + 1:])


def exists(p: Any) -> bool:
    """A file, or a directory (on gs://: any object under the prefix)."""
    if not is_remote(p):
        return Path(p).exists()
    fs, key = _fs(p)
    return fs.exists(key)


def is_file(p: Any) -> bool:
    if not is_remote(p):
        return Path(p).is_file()
    fs, key = _fs(p)
    return fs.isfile(key)


def is_dir(p: Any) -> bool:
    if not is_remote(p):
        return Path(p).is_dir()
    fs, key = _fs(p)
    return fs.isdir(key)


def listdir(p: Any) -> list[str]:
    """Names directly in directory `p`, sorted; [] if there is none."""
    if not is_remote(p):
        try:
            return sorted(child.name for child in Path(p).iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return []
    fs, key = _fs(p)
    try:
        return sorted({entry.rstrip("/").rsplit("/", 1)[-1] for entry in fs.ls(key, detail=False)})
    except FileNotFoundError:
        return []


def glob(p: Any, pattern: str) -> list[str]:
    """Names in directory `p` matching `pattern` (fnmatch, one level: gcsfs has no `**`)."""
    if "**" in pattern or "/" in pattern:
        raise ValueError(f"storage.glob matches names in one directory, not {pattern!r}")
    return [name for name in listdir(p) if fnmatch.fnmatchcase(name, pattern)]


def makedirs(p: Any) -> None:
    """mkdir -p locally; nothing on gs:// (prefixes need no object, and gcsfs's mkdir of a
    bucket-only path would create the bucket)."""
    if not is_remote(p):
        Path(p).mkdir(parents=True, exist_ok=True)
    else:
        _fs(p)  # the bucket is checked all the same


def remove(p: Any, missing_ok: bool = True) -> None:
    """Delete one file."""
    if not is_remote(p):
        Path(p).unlink(missing_ok=missing_ok)
        return
    fs, key = _fs(p)
    try:
        fs.rm_file(key)
    except FileNotFoundError:
        if not missing_ok:
            raise


def move(src: Any, dst: Any, marker: str | None = None) -> None:
    """Rename a file or directory.  On gs:// there is no rename: every object is copied,
    then the source deleted, so a reader may see both meanwhile.  `marker`: the file
    whose presence makes directory `src` count as committed (Orbax's commit file); on
    gs:// it is deleted first, so a move killed midway leaves no committed half."""
    if not is_remote(src):
        Path(src).rename(dst)
        return
    fs, key = _fs(src)
    if marker is not None:
        remove(f"{SCHEME}{key}/{marker}")
    _, target = _fs(dst)
    if fs.isdir(key):
        for name in fs.find(key):  # every object under the prefix, copied one by one
            fs.copy(name, target + name[len(key):])
    else:
        fs.copy(key, target)
    fs.rm(key, recursive=True)


def rmtree(p: Any) -> None:
    """Delete a directory and everything under it; nothing if it does not exist."""
    if not is_remote(p):
        import shutil
        if Path(p).exists():
            shutil.rmtree(p)
        return
    fs, key = _fs(p)
    try:
        fs.rm(key, recursive=True)
    except FileNotFoundError:
        pass
