"""TensorFlow Datasets source: any catalog name, a local ``data_dir``, downloads optional.

Images are read still encoded (``SkipDecoding``) so they are decoded in the shared pipeline,
in parallel and together with the resize. A split TFDS does not have is held out of the
training split as its last ``validation_fraction`` (TFDS shuffles examples when it prepares
a dataset, so this is a random sample, the same on every run).
"""

import socket
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from tfvision.data.pipeline import decode_image
from tfvision.data.source import SourceData, Split
from tfvision.errors import DataError


def _splits(data_cfg):
    """Train and validation split strings; without a validation split, hold out a slice of train."""
    if data_cfg.validation_split:
        return data_cfg.train_split, data_cfg.validation_split
    keep = round(100 * (1 - data_cfg.validation_fraction))
    return f"{data_cfg.train_split}[:{keep}%]", f"{data_cfg.train_split}[{keep}%:]"


# Default ports of the URL schemes TFDS downloads over a socket (requests, or urllib for ftp).
_PORTS = {"http": 80, "https": 443, "ftp": 21}


def _unreachable_host(builder, timeout=5.0):
    """``(host, reason)`` for the first download host (or its proxy) that no TCP connection
    reaches (unknown name, refused, no answer within ``timeout`` seconds), or None.

    Probed before ``download_and_prepare`` because TFDS retries a failed connection ten
    times with backoff, minutes of silence before the error. Only URLs the builder registered
    checksums for are known in advance (catalog datasets do); others are not probed.
    """
    proxies = urllib.request.getproxies()
    targets = {}  # (host, port) to connect to: how to name it
    for url in builder.url_infos or {}:
        parts = urlsplit(url)
        if parts.scheme not in _PORTS:
            continue
        host = parts.hostname
        proxied = parts.scheme in proxies and not urllib.request.proxy_bypass(host)
        if proxied:  # requests connects to the proxy instead
            parts = urlsplit(proxies[parts.scheme])
        address = (parts.hostname, parts.port or _PORTS.get(parts.scheme, 80))
        targets.setdefault(
            address, f"{host} through the proxy {address[0]}:{address[1]}" if proxied else host)
    for address, label in targets.items():
        try:
            socket.create_connection(address, timeout=timeout).close()
        except OSError as err:
            return label, err
    return None


def _first_line(err):
    return next(iter(str(err).splitlines()), "")


def _network_error(name, host, reason):
    return DataError(
        f"cannot download TFDS dataset {name!r}: no network connection to {host} ({reason}); "
        f"prepare it on a machine with network (`tfds build {name} --data_dir DIR`), copy DIR "
        "here and point data.data_dir at it (data.download: false never tries the network)"
    )


def tfds_builder(name, data_dir=None, download=False):
    """The prepared builder for ``name``; prepares it only when ``download`` allows.

    A failed preparation names its cause: no network (probed first, so it fails in seconds),
    a missing Python package, or whatever else TFDS raised, never blaming the network for it.
    """
    import requests
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except ValueError as err:  # DatasetNotFoundError, with the whole catalog in its message
        raise DataError(f"TFDS has no dataset {name!r}: {_first_line(err)}") from None
    if builder.is_prepared():
        return builder
    if not download:
        raise DataError(
            f"TFDS dataset {name!r} is not prepared in {builder.data_dir} and downloading is off "
            "(data.download: false); prepare it there (`tfds build`, or copy a prepared data_dir "
            "and point data.data_dir at it) or set data.download: true"
        )
    try:
        unreachable = _unreachable_host(builder)  # reading its URLs imports the builder's code
        if unreachable is None:
            builder.download_and_prepare()
    except ModuleNotFoundError as err:  # TFDS imports a dataset's extras only to prepare it
        package = err.name or _first_line(err)
        raise DataError(
            f"TFDS cannot prepare dataset {name!r}: the Python package {package!r} is not "
            f"installed; install it (`pip install {package}`) and run again"
        ) from None
    except (requests.RequestException, urllib.error.URLError) as err:  # after TFDS's retries
        raise _network_error(name, "its download host", _first_line(err)) from None
    except Exception as err:  # a bad checksum, an HTTP error, a full disk: still the user's
        raise DataError(f"could not prepare TFDS dataset {name!r} in {builder.data_dir}: "
                        f"{type(err).__name__}: {_first_line(err)}") from err
    if unreachable:
        raise _network_error(name, *unreachable)
    return builder


def supervised_keys(builder):
    """(image key, label key), checked to be an image and a class label."""
    import tensorflow_datasets as tfds

    keys = builder.info.supervised_keys
    features = builder.info.features
    if (not keys or len(keys) != 2 or not isinstance(features[keys[0]], tfds.features.Image)
            or not isinstance(features[keys[1]], tfds.features.ClassLabel)):
        raise DataError(f"TFDS dataset {builder.name!r} is not an image classification "
                        f"dataset (supervised keys {keys}); tfvision needs (image, class label)")
    return keys


def load_tfds(data_cfg, seed, input_context=None) -> SourceData:
    import tensorflow as tf
    import tensorflow_datasets as tfds

    if not data_cfg.name:
        raise DataError("data.source: tfds needs data.name, a TFDS catalog name such as cifar10")
    builder = tfds_builder(data_cfg.name, data_cfg.data_dir, data_cfg.download)
    image_key, label_key = supervised_keys(builder)

    def split(name):
        try:
            size = builder.info.splits[name].num_examples
        except (KeyError, ValueError) as err:
            raise DataError(f"TFDS dataset {builder.name!r} has no split {name!r} ({err}); "
                            f"its splits: {', '.join(builder.info.splits)}") from None

        def items(shuffle):
            read = tfds.ReadConfig(shuffle_seed=seed, input_context=input_context,
                                   try_autocache=False, skip_prefetch=True)
            ds = builder.as_dataset(split=name, as_supervised=True, shuffle_files=shuffle,
                                    read_config=read,
                                    decoders={image_key: tfds.decode.SkipDecoding()})
            return ds.map(lambda image, label: (image, tf.cast(label, tf.int64)))

        fingerprint = f"tfds:{builder.name}:{builder.version}:{builder.data_dir}:{name}"
        return Split(items, decode_image, size, fingerprint, to_encoded=tf.identity)

    train_split, val_split = _splits(data_cfg)
    class_names = list(builder.info.features[label_key].names)
    return SourceData(split(train_split), split(val_split), class_names)
