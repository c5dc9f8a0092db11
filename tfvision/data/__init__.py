"""Data sources and the tf.data pipeline they all share (``dataset.load_dataset``).

Nothing is imported here, so what needs no TensorFlow (``data inspect`` of a folder, the
header checks) starts without it.
"""
