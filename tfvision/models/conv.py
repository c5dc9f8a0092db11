"""Conv2D whose bias gradient TensorFlow sums itself instead of oneDNN.

Keras adds a convolution's bias with ``tf.nn.bias_add``, so its gradient is a ``BiasAddGrad``.
With oneDNN on, TensorFlow's layout pass fuses that ``BiasAddGrad`` into the convolution's
backward-by-weights primitive (``_MklNativeConv2DBackpropFilterWithBias``), and the oneDNN
bundled with TensorFlow 2.21 sums the bias gradient there in its plain C++
``compute_diff_bias``: 1.7 to 3.2 ms of the seed CNN's 8 to 10 ms training step on a 2-core
Zen 5, by perf's samples. Summed by TensorFlow's own ``Sum`` the gradient costs a fraction of
that, and the step ran 1.18× faster (BENCHMARKS.md, "The CNN's bias gradient"); a
keras.applications ResNet50, whose 53 convolutions all have a bias, trained 1.09× faster.
The kernel's gradient is the same to the bit; the bias's differs only by the order of a
float sum.
"""

import keras
import tensorflow as tf


def _bias_add(x, bias, data_format):
    """``tf.nn.bias_add`` whose gradient for ``bias`` is a float32 ``reduce_sum``, which the
    layout pass leaves alone (it fuses only ``BiasAddGrad``)."""
    channel_axis = 1 if data_format.startswith("NC") else x.shape.rank - 1
    summed_axes = [axis for axis in range(x.shape.rank) if axis != channel_axis]

    @tf.custom_gradient
    def add(x, bias):
        def gradient(upstream):
            # Summed in float32 under mixed precision too, as BiasAddGrad accumulates.
            total = tf.reduce_sum(tf.cast(upstream, tf.float32), axis=summed_axes)
            return upstream, tf.cast(total, bias.dtype)

        return tf.nn.bias_add(x, bias, data_format=data_format), gradient

    return add(x, bias)


@keras.saving.register_keras_serializable(package="tfvision")
class Conv2D(keras.layers.Conv2D):
    def call(self, inputs):
        if not self.use_bias:
            return super().call(inputs)
        outputs = self.convolution_op(inputs, self.kernel)
        data_format = "NHWC" if self.data_format == "channels_last" else "NCHW"
        outputs = _bias_add(outputs, tf.convert_to_tensor(self.bias), data_format)
        return outputs if self.activation is None else self.activation(outputs)


def with_summed_bias_gradients(model):
    """``model`` (a functional one, e.g. from keras.applications) with this ``Conv2D`` in
    place of every Keras ``Conv2D`` that has a bias, and the same weights; ``model`` itself
    when it has none."""
    def swapped_class(layer):
        biased_conv = type(layer) is keras.layers.Conv2D and layer.use_bias
        return Conv2D if biased_conv else None

    if not any(swapped_class(layer) for layer in model.layers):
        return model

    def clone(layer):
        return (swapped_class(layer) or layer.__class__).from_config(layer.get_config())

    # A new input of the same name: the clone's own would be named after a tensor.
    inputs = keras.Input(batch_shape=model.inputs[0].shape, name=model.layers[0].name)
    swapped = keras.models.clone_model(model, input_tensors=inputs, clone_function=clone)
    swapped.set_weights(model.get_weights())
    return swapped
