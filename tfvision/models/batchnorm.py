"""BatchNormalization that trains and infers with TensorFlow's fused kernel.

Keras 3 computes a training step's batch norm as separate ops (moments, normalize, two
moving-average updates), each a pass over the activations. ``FusedBatchNormV3`` does it in
one: ResNet-18 training takes about 13% less CPU time per image (BENCHMARKS.md). It also returns
the unbiased batch variance, which is what ``torch.nn.BatchNorm2d`` puts into its running
variance, so the moving statistics follow PyTorch's.

At inference (and in frozen layers) Keras normalizes with five elementwise ops per layer,
which TensorFlow's graph optimizer cannot fold into the convolution before it. The fused op
in inference mode it can: oneDNN then runs convolution, batch norm and ReLU as one kernel
(BENCHMARKS.md, serving). Anything unusual (masks, renorm, synchronized, another axis)
takes Keras' own path.
"""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tfvision")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    def call(self, inputs, training=None, mask=None):
        fusable = (mask is None and not self.renorm and not self.synchronized and self.scale
                   and self.center and len(inputs.shape) == 4 and self.axis in (3, -1))
        if not fusable:
            return super().call(inputs, training=training, mask=mask)
        learning = bool(training and self.trainable)
        # The kernel takes bfloat16 activations as they are and keeps its statistics in
        # float32 (its U type), so a cast to float32 and back around it changes nothing but
        # the time: the casts took a tenth of a bf16 ResNet-18 step (BENCHMARKS.md). float16
        # is cast, as Keras does: its gradients differed without the cast.
        x = inputs if inputs.dtype == tf.bfloat16 else tf.cast(inputs, "float32")
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            x, self.gamma, self.beta,
            mean=None if learning else self.moving_mean,
            variance=None if learning else self.moving_variance,
            epsilon=self.epsilon, data_format="NHWC", is_training=learning,
        )
        if learning:
            keep = self.momentum
            self.moving_mean.assign(self.moving_mean * keep + mean * (1.0 - keep))
            self.moving_variance.assign(self.moving_variance * keep + variance * (1.0 - keep))
        return tf.cast(outputs, self.compute_dtype)
