"""TFDS downloads through tfvision, with no internet: TFDS's CIFAR-10 builder downloads a
small archive in CIFAR's own format from a loopback HTTP server, and a run that cannot
reach the network fails in seconds and says so."""

import http.server
import io
import socket
import tarfile
import threading
import time

import numpy as np
import pytest
from conftest import run_cli
from tensorflow_datasets.image_classification.cifar import Cifar10

from tfvision import load_dataset
from tfvision.config import load_config
from tfvision.data.tfds_source import tfds_builder
from tfvision.errors import DataError

CLASSES = [f"kind{i}" for i in range(10)]  # not CIFAR's names: they must come from the archive
ARCHIVE_PATH = "/~kriz/cifar-10-binary.tar.gz"


class LoopbackCifar10(Cifar10):
    """TFDS's CIFAR-10 builder (its features, archive layout and binary parser) downloading
    from ``url``, a loopback server. The catalog's own URL cannot be served here: it is
    HTTPS on www.cs.toronto.edu, and TFDS checks it against a registered checksum that
    only the real 170 MB archive has."""

    url = None  # set by the cifar_server fixture

    @property
    def _cifar_info(self):
        return super()._cifar_info._replace(url=self.url)


class ExtraNeedingCifar10(Cifar10):
    """CIFAR-10 as a dataset that needs an uninstalled package to prepare, as the datasets
    behind tensorflow-datasets' extras do (and every builder did without importlib_resources)."""

    def _split_generators(self, dl_manager):
        import tfvision_absent_package  # noqa: F401


def cifar_archive(rng):
    """cifar-10-binary.tar.gz as www.cs.toronto.edu serves it, one image of each class in
    every batch file: (archive bytes, {split: [(image, label), ...]})."""
    examples, files = {"train": [], "test": []}, {}
    for name in [*(f"data_batch_{i}.bin" for i in range(1, 6)), "test_batch.bin"]:
        labels = rng.permutation(10).astype(np.uint8)
        images = rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
        # A record: the label byte, then the red, green and blue 32×32 planes, row by row.
        planes = images.transpose(0, 3, 1, 2).reshape(10, -1)
        files[name] = np.concatenate([labels[:, None], planes], axis=1).tobytes()
        examples["test" if name.startswith("test") else "train"] += zip(images, labels)
    files["batches.meta.txt"] = "\n".join(CLASSES).encode() + b"\n\n"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue(), examples


@pytest.fixture(scope="module")
def cifar_server():
    """Serves the archive on 127.0.0.1; yields (served examples, paths requested)."""
    archive, examples = cifar_archive(np.random.default_rng(0))
    requested = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requested.append(self.path)
            found = self.path == ARCHIVE_PATH
            self.send_response(200 if found else 404)
            self.send_header("Content-Length", str(len(archive) if found else 0))
            self.end_headers()
            if found:
                self.wfile.write(archive)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    LoopbackCifar10.url = f"http://127.0.0.1:{server.server_port}{ARCHIVE_PATH}"
    yield examples, requested
    server.shutdown()
    server.server_close()


def pairs(dataset):
    """Sorted (image bytes, label) of every example in batches of float images in [0, 255]."""
    return sorted((image.astype(np.uint8).tobytes(), int(label))
                  for images, labels in dataset.as_numpy_iterator()
                  for image, label in zip(images, labels, strict=True))


def test_tfds_builder_downloads_and_prepares_then_load_dataset_reads_it(
        cifar_server, tmp_path, monkeypatch):
    """tfds_builder(download=True) makes TFDS fetch the archive over HTTP, extract, parse and
    write it; load_dataset then reads back exactly the images and labels served."""
    examples, requested = cifar_server
    monkeypatch.setenv("no_proxy", "127.0.0.1")  # a CI proxy must not take the loopback URL
    builder = tfds_builder("loopback_cifar10", tmp_path, download=True)
    assert requested == [ARCHIVE_PATH]
    assert builder.is_prepared()

    config = load_config("cifar10_cnn", [
        "data.name=loopback_cifar10", f"data.data_dir={tmp_path}", "data.augment=none"])
    data = load_dataset(config)
    assert requested == [ARCHIVE_PATH]  # prepared once, read from data_dir after
    assert data.class_names == CLASSES
    assert (data.train_size, data.validation_size) == (50, 10)
    for dataset, split in ((data.train, "train"), (data.validation, "test")):
        assert pairs(dataset) == sorted((image.tobytes(), int(label))
                                        for image, label in examples[split])


def test_missing_package_is_named_not_blamed_on_the_network(tmp_path):
    with pytest.raises(DataError) as caught:
        tfds_builder("extra_needing_cifar10", tmp_path, download=True)
    message = str(caught.value)
    assert "'tfvision_absent_package' is not installed" in message
    assert "`pip install tfvision_absent_package`" in message
    assert "network" not in message


def test_offline_train_fails_fast_naming_the_network(tmp_path):
    """`tfvision train -c cifar10_cnn` (the real cifar10 builder) with no way out: exit 2 in
    seconds, not after TFDS's minutes of retries, and the network named as the cause.

    The way out is closed with HTTPS_PROXY pointing at a loopback port nobody listens on: the
    documented way to route TFDS downloads (requests reads it), so the test behaves the same
    on a machine with internet. Without it, on a machine with no route out (this one; a CI
    runner that reaches only PyPI) the probe fails on DNS, or after its 5 s connect timeout,
    with the same message naming www.cs.toronto.edu.
    """
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound and never listening: connections are refused
        proxy = f"http://127.0.0.1:{closed.getsockname()[1]}"
        start = time.monotonic()
        result = run_cli("train", "-c", "cifar10_cnn", "--set", f"data.data_dir={tmp_path}",
                         cwd=tmp_path, timeout=120,
                         env={"https_proxy": proxy, "HTTPS_PROXY": proxy})
        elapsed = time.monotonic() - start
    assert result.returncode == 2, result.stderr
    assert "network" in result.stderr
    assert "www.cs.toronto.edu" in result.stderr and "data.data_dir" in result.stderr
    assert "Traceback" not in result.stderr
    assert elapsed < 30
