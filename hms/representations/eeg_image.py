"""The band-passed raw EEG itself as an image for the EfficientNets (`input=eeg_image`), as the 2nd place did.

Each labelled window's `input.signal` signal (the 16 chain pairs, band-passed, downsampled, clipped, scaled:
the `eeg1d` signal, made per batch from the per-file EEG cache) is cut into segments of
`input.options.segment_seconds` (default 10 s) stacked top to bottom, each segment a block of the 16 pairs
(LL, RL, LP, RP chains, 4 pairs each), so that neighbouring rows are neighbouring electrodes of one chain and
each row is time. At 50 Hz a 50 s window is a (5 x 16) x 500 image. The image is made by a layer inside the model
(a reshape: free on any device), so the batches, augmentations, test-time views and band-power baseline are the
raw-EEG ones.

Why this and not the 1st place's 1D-convolution stem feeding a 2D backbone: it needs no weights of its own, so an
ImageNet-pretrained EfficientNet applies unchanged, and on a CPU it costs nothing beyond the backbone; its
channels repeat the image as the notebook's grey tiles do, or (`backbone.positions`, on from scratch) put each
row's position in the middle channel, as `TileMontage` does for frequency rows: the row here is the pair.
"""

from __future__ import annotations

from .base import register
from .eeg1d import Signals, signal_options, signal_part
from ..constants import EEG_WINDOW_SECONDS
from ..schema import ConfigError

SEGMENT_SECONDS = 10


def _layer_class():
    import keras
    from keras import ops

    class SignalImage(keras.layers.Layer):
        """(batch, samples, pairs) signals -> (batch, segments * pairs, samples / segments, 3): segments of the window
        stacked top to bottom, each the pairs' rows; channels: the image three times, or (positions) its row's
        place from -1 to +1 in the middle one."""

        def __init__(self, segments: int, positions: bool = False, **kwargs):
            super().__init__(**kwargs)
            self.segments, self.positions = int(segments), bool(positions)

        def call(self, x):
            samples, pairs = x.shape[1], x.shape[2]
            length = samples // self.segments
            image = ops.reshape(x[:, :self.segments * length], (-1, self.segments, length, pairs))
            image = ops.reshape(ops.transpose(image, (0, 1, 3, 2)), (-1, self.segments * pairs, length, 1))
            if not self.positions:
                return ops.concatenate([image, image, image], axis=-1)
            rows = ops.reshape(ops.cast(ops.linspace(-1.0, 1.0, self.segments * pairs), image.dtype), (1, -1, 1, 1))
            return ops.concatenate([image, ops.broadcast_to(rows, ops.shape(image)), image], axis=-1)

        def compute_output_shape(self, shape):
            return (shape[0], self.segments * shape[2], shape[1] // self.segments, 3)

        def get_config(self):
            return {**super().get_config(), "segments": self.segments, "positions": self.positions}

    return SignalImage


@register
class EegImage(Signals):
    """The 16 band-passed pairs, segment by segment, as one image for an image backbone."""

    name = "eeg_image"
    family = "image"

    @property
    def segment_seconds(self) -> float:
        return float((self.cfg.input.get("options") or {}).get("segment_seconds", SEGMENT_SECONDS))

    @property
    def segments(self) -> int:
        return int(EEG_WINDOW_SECONDS // self.segment_seconds)

    def check(self) -> None:
        super().check()
        unknown = set(self.cfg.input.get("options") or {}) - {"segment_seconds"}
        if unknown:
            raise ConfigError(f"input.options.{sorted(unknown)[0]}: input=eeg_image takes only input.options.segment_seconds")
        seconds = self.segment_seconds
        if not 0 < seconds <= EEG_WINDOW_SECONDS or EEG_WINDOW_SECONDS % seconds:
            raise ConfigError(f"input.options.segment_seconds={seconds:g}: must divide the {EEG_WINDOW_SECONDS} s window")
        if seconds * signal_options(self.cfg).rate < 32:
            raise ConfigError(f"input.options.segment_seconds={seconds:g}: a segment of {seconds * signal_options(self.cfg).rate:g} "
                              "samples is narrower than the 32 pixels an EfficientNet needs")

    def parts(self):
        return [signal_part(self.cfg, self.name)]

    def build_model(self, weights=None, recipe: dict | None = None):
        import keras

        from ..features.signals import PAIR_NAMES
        from ..models.montage import image_classifier

        recipe = dict(recipe or {})
        options, pairs = signal_options(self.cfg), len(PAIR_NAMES)
        signal = keras.Input((options.samples, pairs), name="signal")
        image = _layer_class()(self.segments, positions=recipe.pop("positions", False), name="montage")(signal)
        shape = (self.segments * pairs, options.samples // self.segments, 3)
        backbone = self.cfg.backbone
        return image_classifier(signal, image, backbone.name, shape, source=backbone.source, weights=weights,
                                dropout=backbone.dropout, **recipe)
