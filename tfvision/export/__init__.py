"""Exports for serving: versioned SavedModels for TF Serving (``savedmodel``), TFLite files
(``tflite``), and what TF Serving clients send (``serving``).

Nothing is imported here, so ``tfvision serving-request`` builds REST bodies without
TensorFlow.
"""
