"""Paths on any filesystem TensorFlow reads: local ones, and URLs (``gs://``, ``s3://``,
``ram://`` ...) through ``tf.io.gfile``.

Local paths go through ``os`` and ``open``, so that what needs no TensorFlow (``data
inspect``, scanning an image folder, ``--help``) starts without importing it; TensorFlow is
imported only when a URL is given.
"""

import os
import posixpath
import shutil
from pathlib import Path


def is_url(path) -> bool:
    return "://" in str(path)


def _paths(path):
    return posixpath if is_url(path) else os.path


def join(*parts) -> str:
    """A path inside a folder; URLs keep their forward slashes."""
    parts = [str(p) for p in parts]
    return _paths(parts[0]).join(*parts)


def split(path) -> tuple[str, str]:
    path = str(path).rstrip("/") or str(path)
    return _paths(path).split(path)


def basename(path) -> str:
    return split(path)[1]


def dirname(path) -> str:
    return split(path)[0]


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def open_file(path, mode="rb"):
    return _gfile().GFile(str(path), mode) if is_url(path) else open(path, mode)


def isdir(path) -> bool:
    return _gfile().isdir(str(path)) if is_url(path) else os.path.isdir(path)


def isfile(path) -> bool:
    if is_url(path):
        return _gfile().exists(str(path)) and not _gfile().isdir(str(path))
    return os.path.isfile(path)


def listdir(path) -> list[str]:
    """Entry names, sorted, without gfile's trailing slash on folders."""
    if not is_url(path):
        return sorted(os.listdir(path))
    names = [name.rstrip("/") for name in _gfile().listdir(str(path))]
    # TF's ram:// lists by bare prefix: "d" also "lists" ".x" of a sibling "d.x/f"; such
    # names do not exist, so one check per entry drops them.
    return sorted(n for n in names if _gfile().exists(join(path, n)))


def walk(path):
    """``(folder, subfolder names, file names)`` top-down; like ``os.walk``, the subfolder
    list may be pruned in place."""
    if not is_url(path):
        yield from os.walk(path, followlinks=True)
        return
    pending = [str(path)]
    while pending:
        folder = pending.pop()
        names = listdir(folder)
        dirs = [n for n in names if isdir(join(folder, n))]
        yield folder, dirs, [n for n in names if n not in dirs]
        pending.extend(join(folder, d) for d in reversed(dirs))


def rmtree(path) -> None:
    """Delete a folder and everything in it, if it exists."""
    if not is_url(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    if not _gfile().exists(str(path)):
        return
    # File by file, then the folders deepest first: gfile's own rmtree trips over the
    # phantom entries of ram://'s listing (see listdir).
    tree = list(walk(path))
    for folder, _, names in tree:
        for name in names:
            _gfile().remove(join(folder, name))
    for folder, _, _ in reversed(tree):
        _gfile().remove(folder)


def stamp(path) -> tuple[int, int]:
    """``(size, mtime in ns)``: what says a file changed."""
    if is_url(path):
        info = _gfile().stat(str(path))
        return info.length, info.mtime_nsec
    info = os.stat(path)
    return info.st_size, info.st_mtime_ns


def user_path(path):
    """What the Python API hands back: a ``pathlib.Path`` for a local path, a URL as it is
    (pathlib would fold ``gs://`` into ``gs:/``)."""
    return str(path) if is_url(path) else Path(path)


def absolute(path) -> str:
    return str(path) if is_url(path) else os.path.abspath(os.path.expanduser(path))
