"""Verification manifests: what checking some files found, trusted until one of them changes.

Checking every record of a TFRecord set costs about 20 us a record (a minute for 3 million),
and the files rarely change. A manifest keeps the check's result (numpy arrays) with the
fingerprint of what it was made from: each file's real path, size and modification time, and
an ``identity`` for whatever else the result depends on (feature keys, class count, the
checker's own code). A run whose files fingerprint the same uses the result instead of
checking again; any difference, or a manifest that cannot be read, means checking again and
writing a new one: nothing else is trusted.

A manifest is kept beside the files (``.tfvision-verified-<hash>.npz``: hidden, so record
listings skip it) or, where that folder cannot be written (a read-only bucket), in the user
cache (``$XDG_CACHE_HOME/tfvision/verified``, by default ``~/.cache``). The hash names the
files only, so a stale manifest is overwritten, not left beside the new one. All access goes
through ``tf.io.gfile``: gs:// and ram:// work as local paths do. Object stores stamp a file
by its length and last write; ram:// has no mtime, so there a rewrite of the same length
goes unnoticed.
"""

import hashlib
import io
import json
import os
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tensorflow as tf

from tfvision import fs, rundir

PREFIX = ".tfvision-verified-"
_STAT_THREADS = 16  # an object store answers a stat in tens of milliseconds: ask in parallel


def _stamp(path: str) -> tuple:
    # fs.stamp: the exact local mtime (gfile rounds local ones to the second)
    return (path if fs.is_url(path) else os.path.realpath(path), *fs.stamp(path))


def stamp(files) -> list[tuple]:
    """``(path, size, mtime in ns)`` of each file; local paths resolved, so every spelling of
    a path (relative, through a symlink) stamps alike. Take it before checking the files: a
    file changed during the check then no longer matches its manifest."""
    with ThreadPoolExecutor(_STAT_THREADS) as pool:
        return list(pool.map(_stamp, files))


def _places(stamps) -> list[str]:
    """Where the manifest of these files is looked for and written, in that order."""
    paths = json.dumps([path for path, *_ in stamps])
    name = f"{PREFIX}{hashlib.sha256(paths.encode()).hexdigest()[:24]}.npz"
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return [fs.join(fs.dirname(stamps[0][0]), name),
            os.path.join(cache, "tfvision", "verified", name)]


def _fingerprint(stamps, identity) -> str:
    return json.dumps([[list(s) for s in stamps], identity])


def _load(path) -> dict:
    """Every array in the manifest at ``path``; empty when it is absent or unreadable."""
    try:
        with tf.io.gfile.GFile(path, "rb") as f, \
                np.load(io.BytesIO(f.read()), allow_pickle=False) as stored:
            return {key: stored[key] for key in stored.files}
    except (tf.errors.OpError, OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile,
            zlib.error):  # absent, or cut short or garbled on the way
        return {}


def read(stamps, identity) -> dict | None:
    """The arrays remembered for exactly these stamps and identity, or None."""
    expected = _fingerprint(stamps, identity)
    for path in _places(stamps):
        arrays = _load(path)
        if str(arrays.pop("fingerprint", "")) == expected:
            return arrays
    return None


def write(stamps, identity, arrays: dict) -> str | None:
    """Remember ``arrays`` for these stamps and identity: beside the files, else in the user
    cache. Written under a temporary name and renamed, so a reader (another worker, say)
    finds a whole manifest or none. Returns where it went; None when nowhere was writable,
    and the next run checks again."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, fingerprint=np.array(_fingerprint(stamps, identity)), **arrays)
    for path in _places(stamps):
        try:
            tf.io.gfile.makedirs(fs.dirname(path))
            with rundir.atomic_write(path) as tmp, tf.io.gfile.GFile(tmp, "wb") as f:
                f.write(buffer.getvalue())
            return path
        except (OSError, tf.errors.OpError):
            continue  # not writable here: try the next place
    return None
