"""1D backbones on raw-EEG windows (`input=eeg1d`, `backbone=eeg1d_cnn|eeg1d_gru|eeg1d_wavenet`) and the
classifier around them. Pure Keras: the same mixed precision (float32 softmax), distribution strategies,
KL loss, schedules and records as the EfficientNets, registered in the same backbone registry.

Each backbone maps (batch, samples, 16) to (batch, steps, features); `build_signal_model` pools that over time
(average and max, concatenated), applies dropout and a float32 softmax over the six classes.
- eeg1d_cnn: five blocks of two Conv1D + batch norm + ReLU, each block ending in a max pool by 2 (kernel 7, then
  5 and 3; 32 to 256 filters); about 330k weights.
- eeg1d_gru: a Conv1D stem that pools the window 8x (2500 samples at 50 Hz to 312 steps), then two
  bidirectional GRU layers of 64 units.
- eeg1d_wavenet: WaveNet-style stacks of gated, dilated Conv1D with residual connections (dilations 1 to 8),
  pooled 4x between stacks (as the public HMS WaveNet notebooks).
"""

from __future__ import annotations

import keras
from keras import layers

from ..constants import CLASSES
from .backbones import create_backbone, register


def _conv_block(x, filters: int, kernel: int, name: str):
    for i in range(2):
        x = layers.Conv1D(filters, kernel, padding="same", use_bias=False, name=f"{name}_conv{i}")(x)
        x = layers.BatchNormalization(name=f"{name}_bn{i}")(x)
        x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
    return layers.MaxPooling1D(2, name=f"{name}_pool")(x)


@register("eeg1d_cnn", "eeg1d")
def eeg1d_cnn(input_shape, weights=None):
    inputs = keras.Input(input_shape, name="signal")
    x = inputs
    for i, (filters, kernel) in enumerate(((32, 7), (64, 7), (96, 5), (128, 5), (160, 3))):
        x = _conv_block(x, filters, kernel, f"block{i + 1}")
    return keras.Model(inputs, x, name="eeg1d_cnn")


@register("eeg1d_gru", "eeg1d")
def eeg1d_gru(input_shape, weights=None):
    inputs = keras.Input(input_shape, name="signal")
    x = _conv_block(inputs, 32, 7, "stem1")
    x = _conv_block(x, 64, 5, "stem2")
    x = _conv_block(x, 64, 3, "stem3")
    for i in range(2):
        x = layers.Bidirectional(layers.GRU(64, return_sequences=True, name=f"gru{i + 1}"), name=f"bigru{i + 1}")(x)
    return keras.Model(inputs, x, name="eeg1d_gru")


def _wave_block(x, filters: int, dilations, name: str):
    x = layers.Conv1D(filters, 1, padding="same", name=f"{name}_in")(x)
    skip = x
    for d in dilations:
        tanh = layers.Conv1D(filters, 3, padding="same", dilation_rate=d, activation="tanh", name=f"{name}_tanh{d}")(x)
        gate = layers.Conv1D(filters, 3, padding="same", dilation_rate=d, activation="sigmoid", name=f"{name}_gate{d}")(x)
        x = layers.Multiply(name=f"{name}_gated{d}")([tanh, gate])
        x = layers.Conv1D(filters, 1, padding="same", name=f"{name}_mix{d}")(x)
        skip = layers.Add(name=f"{name}_add{d}")([skip, x])
    x = layers.BatchNormalization(name=f"{name}_bn")(skip)
    return layers.MaxPooling1D(4, name=f"{name}_pool")(x)


@register("eeg1d_wavenet", "eeg1d")
def eeg1d_wavenet(input_shape, weights=None):
    inputs = keras.Input(input_shape, name="signal")
    x = inputs
    for i, filters in enumerate((16, 32, 64, 64)):
        x = _wave_block(x, filters, (1, 2, 4, 8), f"wave{i + 1}")
    return keras.Model(inputs, x, name="eeg1d_wavenet")


def build_signal_model(backbone: str, samples: int, channels: int, weights=None, dropout: float = 0.2,
                       bn_momentum: float | None = None):
    """The classifier on (batch, samples, channels) raw-EEG windows; outputs class probabilities in float32.
    `bn_momentum` replaces the backbone's batch-norm momentum, as for the EfficientNets."""
    inputs = keras.Input((samples, channels), name="signal")
    net = create_backbone(backbone, (samples, channels), source="eeg1d", weights=weights)
    if bn_momentum is not None:
        stack = [net]
        while stack:
            layer = stack.pop()
            if isinstance(layer, layers.BatchNormalization):
                layer.momentum = bn_momentum
            stack.extend(getattr(layer, "layers", []))
    features = net(inputs)
    pooled = layers.Concatenate(name="pool")([layers.GlobalAveragePooling1D(name="avg")(features),
                                              layers.GlobalMaxPooling1D(name="max")(features)])
    pooled = layers.Dropout(dropout, name="dropout")(pooled)
    outputs = layers.Dense(len(CLASSES), activation="softmax", dtype="float32", name="probabilities")(pooled)
    return keras.Model(inputs, outputs, name=f"hms_{backbone}")
