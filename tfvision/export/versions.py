"""TF Serving's layout, ``EXPORT_DIR/<integer version>/``, written so no one sees half a version.

TF Serving loads every directory whose name is an integer as soon as it appears, so a
version is written and checked in a hidden temporary directory beside the others first.
On a local disk it is then renamed into place (one atomic ``rename``). Object stores
(``gs://``) have no rename: there the files are copied into the version folder with
``saved_model.pb`` last, so a server that finds the folder early finds no model to load
(TF Serving retries the load), never a graph without its variables. A killed export leaves
at most a hidden ``.tmp-*`` directory, which the next export removes, and, on an object
store, a version folder without ``saved_model.pb``.
"""

import os
from contextlib import contextmanager

import tensorflow as tf

from tfvision import fs
from tfvision.errors import ExportError

_TMP_PREFIX = ".tmp-"
GRAPH_FILE = "saved_model.pb"


def existing_versions(export_dir) -> list[int]:
    export_dir = str(export_dir)
    if not tf.io.gfile.isdir(export_dir):
        return []
    return sorted(int(name) for name in fs.listdir(export_dir)
                  if name.isdigit() and tf.io.gfile.isdir(fs.join(export_dir, name)))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_abandoned(export_dir: str) -> None:
    """Delete temporary directories left by exports that were killed (on this machine)."""
    for name in fs.listdir(export_dir):
        pid = name.rsplit("-", 1)[-1]
        if name.startswith(_TMP_PREFIX) and pid.isdigit() and not _pid_alive(int(pid)):
            fs.rmtree(fs.join(export_dir, name))


def _copy_graph_last(src: str, dst: str) -> None:
    """Copy the tree ``src`` to ``dst`` (an object store) with ``saved_model.pb`` last."""
    files = [(fs.join(folder, name), fs.join(dst, folder[len(src):].lstrip("/"), name))
             for folder, _, names in fs.walk(src) for name in names]
    files.sort(key=lambda pair: fs.basename(pair[0]) == GRAPH_FILE)
    for source, target in files:
        tf.io.gfile.makedirs(fs.dirname(target))
        tf.io.gfile.copy(source, target)


def _publish(tmp: str, final: str) -> None:
    if fs.is_url(final):
        _copy_graph_last(tmp, final)
    else:
        os.rename(tmp, final)


@contextmanager
def new_version(export_dir, version=None):
    """Yield ``(version, temporary dir)`` to write into; publish it as ``export_dir/version``.

    ``version`` defaults to one more than the highest existing one; an existing version is
    never overwritten. If the body raises, the temporary directory is removed.
    """
    export_dir = str(export_dir)
    tf.io.gfile.makedirs(export_dir)
    _remove_abandoned(export_dir)
    versions = existing_versions(export_dir)
    if version is None:
        version = versions[-1] + 1 if versions else 1
    if version < 1:
        raise ExportError(f"version must be a positive integer, got {version}")
    final = fs.join(export_dir, str(version))
    if tf.io.gfile.exists(final):
        raise ExportError(
            f"{final} already exists and versions are never overwritten; "
            f"omit --version to write the next one ({max(versions, default=0) + 1})"
        )
    tmp = fs.join(export_dir, f"{_TMP_PREFIX}{version}-{os.getpid()}")
    fs.rmtree(tmp)
    try:
        yield version, tmp
        try:
            _publish(tmp, final)
        except (OSError, tf.errors.OpError) as err:
            raise ExportError(f"cannot move the new version into {final}: {err}") from None
    finally:
        fs.rmtree(tmp)
