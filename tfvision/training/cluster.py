"""Who this process is in a multi-worker cluster (TF_CONFIG), and where its files go.

Only the chief writes the run's side effects (best checkpoint, ``model.keras``, TensorBoard
logs, history, exports). Every worker still performs those saves, because saving reads
variables that MultiWorkerMirroredStrategy synchronizes with collective operations all
workers must join; the other workers write into temporary directories of their own and
delete them (as the TF Model Garden does). Each worker keeps its own directory for what it
needs to resume: its config and BackupAndRestore backup.
"""

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass

from tfvision.errors import ConfigError

WORKER_DONE = "worker-complete.txt"
DIGEST_LABEL = "final weights sha256:"


@dataclass(frozen=True)
class Task:
    type: str = "worker"
    index: int = 0
    num_workers: int = 1
    has_chief_job: bool = False

    @property
    def is_chief(self) -> bool:
        """The ``chief`` task, or worker 0 when the cluster has no chief job."""
        return self.type == "chief" or (self.index == 0 and not self.has_chief_job)

    def run_dir(self, run_dir) -> str:
        """The chief uses ``run_dir``; other workers ``<run_dir>.worker-<i>`` beside it."""
        run_dir = str(run_dir).rstrip("/")
        return run_dir if self.is_chief else f"{run_dir}.worker-{self.index}"


def current_task() -> Task:
    """This process' task from TF_CONFIG (a single worker when it is not set)."""
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return Task()
    try:
        spec = json.loads(raw)
        cluster, task = spec.get("cluster", {}), spec.get("task", {})
        kind, index = task.get("type", "worker"), int(task.get("index", 0))
    except (ValueError, AttributeError, TypeError) as err:
        raise ConfigError(f"TF_CONFIG is not valid: {err}; see README 'Training on several "
                          "machines'") from None
    if kind not in ("chief", "worker"):
        raise ConfigError(f"TF_CONFIG task type {kind!r} is not supported; use chief or worker")
    workers = len(cluster.get("chief", [])) + len(cluster.get("worker", []))
    return Task(kind, index, max(workers, 1), bool(cluster.get("chief")))


@contextlib.contextmanager
def side_effect_dir(run_dir, task: Task):
    """Where this process writes the run's outputs: ``run_dir`` on the chief, else a temp dir."""
    if task.is_chief:
        yield str(run_dir)
        return
    tmp = tempfile.mkdtemp(prefix=f"tfvision-worker-{task.index}-")
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def weights_digest(model) -> str:
    """SHA-256 of a model's weights: equal on every worker when training stayed in sync."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(weight.tobytes())
    return digest.hexdigest()
