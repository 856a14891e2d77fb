"""EEG spectrograms computed inside the model (`input=eeg_layer`): the notebook's formula as a Keras layer on the
accelerator, from each window's raw chain pairs, beside Kaggle's spectrogram tiles from the cache.

The batches carry each labelled window's 16 chain pairs at 200 Hz (NaN filled, `hms.features.signals.PairWindows`,
cut from the per-file EEG cache), so no CPU worker makes EEG spectrograms: the layer does, in float32, with the
same arithmetic as `hms.features.eeg` (centred frames of a 128-sample periodic Hann window, the half-window DFT
products, the two-bin mel gathers, the per-pair dB reference and clip, the mean of each region's 4 pairs) and the
tile cache's area resize to `input.tile`. The rest is the `both` model: Kaggle tiles left, EEG tiles right.

`input.options.kaggle: false` drops Kaggle's tiles (the EEG spectrogram alone, as `input=eeg`).
"""

from __future__ import annotations

import numpy as np

from .base import Part, Representation, register
from ..schema import ConfigError


def area_matrices(tile) -> tuple[np.ndarray, np.ndarray]:
    """(H, 128) and (256, W): `rows @ tile @ columns` is OpenCV's INTER_AREA resize of a (128, 256) tile, which is
    separable; read off OpenCV by resizing identity matrices, so the layer resizes as the tile cache does."""
    import cv2

    height, width = tile
    rows = cv2.resize(np.eye(128, dtype=np.float32), (128, height), interpolation=cv2.INTER_AREA)
    columns = cv2.resize(np.eye(256, dtype=np.float32), (width, 256), interpolation=cv2.INTER_AREA)
    return rows, columns


def _layer_class():
    import keras
    from keras import ops

    from ..features.eeg import AMIN, N_MELS, TOP_DB, WIDTH, WIN_LENGTH, _operators

    class EegSpectrogram(keras.layers.Layer):
        """(batch, 10000, 16) chain pairs at 200 Hz -> (batch, H, W, 4) EEG spectrogram tiles (LL, RL, LP, RP),
        always in float32 (a mixed-precision policy casts the output for the layers after it)."""

        def __init__(self, tile=(N_MELS, WIDTH), **kwargs):
            super().__init__(dtype="float32", **kwargs)
            self.tile = tuple(int(t) for t in tile)
            cos, sin, first, second, weights = _operators()
            self._cos, self._sin = cos.astype("float32"), sin.astype("float32")
            self._first, self._second = first.astype("int32"), second.astype("int32")
            self._weights = weights.astype("float32")
            rows, columns = area_matrices(self.tile)
            self._rows, self._columns = rows.astype("float32"), columns.astype("float32")

        def call(self, pairs):
            if keras.backend.backend() == "jax":  # a GPU's default TF32 matmuls move dB values by up to 7e-3
                import jax

                with jax.default_matmul_precision("highest"):
                    return self._tiles(pairs)
            return self._tiles(pairs)

        def _tiles(self, pairs):
            half = WIN_LENGTH // 2
            samples = pairs.shape[1]
            hop = samples // WIDTH
            x = ops.pad(ops.transpose(ops.cast(pairs, "float32"), (0, 2, 1)), ((0, 0), (0, 0), (half, half)))  # centred
            index = (np.arange(WIDTH)[:, None] * hop + np.arange(WIN_LENGTH + 1)[None, :]).astype("int32")
            frames = ops.take(x, index, axis=2)  # (B, 16, 256, 129)
            after, before = frames[..., half:], ops.flip(frames[..., :half + 1], axis=-1)  # x[64+m], x[64-m]
            both = ops.concatenate([after[..., :1], after[..., 1:half] + before[..., 1:half]], axis=-1)
            diff = after[..., 1:half] - before[..., 1:half]
            power = ops.square(ops.matmul(both, self._cos)) + ops.square(ops.matmul(diff, self._sin))
            mels = (ops.take(power, self._first, axis=-1) * self._weights[0]
                    + ops.take(power, self._second, axis=-1) * self._weights[1])  # (B, 16, 256, 128)
            db = ops.log10(ops.maximum(mels, AMIN))
            db = db - ops.max(db, axis=(2, 3), keepdims=True)  # ref=max per pair
            db = ops.maximum(db, -TOP_DB / 10)
            regions = ops.mean(ops.reshape(db, (-1, 4, 4, WIDTH, N_MELS)), axis=2) * (10 / 40) + 1  # (B, 4, 256, 128)
            if self.tile != (N_MELS, WIDTH):  # the tile cache's area resize: mels to H rows, frames to W columns
                regions = ops.matmul(regions, ops.transpose(self._rows))  # (B, 4, 256, H)
                regions = ops.einsum("tw,brth->brwh", self._columns, regions)  # (B, 4, W, H)
            return ops.transpose(regions, (0, 3, 2, 1))

        def compute_output_shape(self, shape):
            return (shape[0], *self.tile, 4)

        def get_config(self):
            return {**super().get_config(), "tile": list(self.tile)}

    return EegSpectrogram


def eeg_spectrogram_layer(tile, name: str = "eeg_spectrogram"):
    """The EEG spectrogram layer for tiles of size `tile` (height, width)."""
    return _layer_class()(tile, name=name)


@register
class EegLayer(Representation):
    """Kaggle tiles from the cache and EEG spectrogram tiles made by the model from raw pairs."""

    name = "eeg_layer"
    family = "image"
    augmentations = ("time_flip", "hemisphere", "mixup")

    @property
    def kaggle(self) -> bool:
        return bool((self.cfg.input.get("options") or {}).get("kaggle", True))

    def check(self) -> None:
        unknown = set(self.cfg.input.get("options") or {}) - {"kaggle"}
        if unknown:
            raise ConfigError(f"input.options.{sorted(unknown)[0]}: input=eeg_layer takes only input.options.kaggle")
        if self.cfg.data.get("eeg_spectrograms"):
            raise ConfigError(f"data.eeg_spectrograms={self.cfg.data.eeg_spectrograms}: input=eeg_layer computes the EEG "
                              "spectrograms in the model; precomputed ones apply to input=both or eeg")

    def parts(self) -> list[Part]:
        from ..features.signals import PairWindows

        pairs = Part("eeg_pairs", "eeg", make=PairWindows)
        return [Part("kaggle", "kaggle", tile=True), pairs] if self.kaggle else [pairs]

    def _layouts(self):
        return ("tiles", "signal") if self.kaggle else ("signal",)

    def augmentation(self, seed: int | None = None):
        from ..augment import FlipAugment

        if not (self.cfg.augmentation.time_flip > 0 or self.cfg.augmentation.hemisphere > 0):
            return None
        return FlipAugment(self.cfg.augmentation, self._layouts(), seed)

    def views(self) -> list:
        from ..augment import flip_views

        return flip_views(self.cfg.augmentation, self._layouts())

    def build_model(self, weights=None, recipe: dict | None = None):
        import keras

        from ..constants import EEG_WINDOW_ROWS
        from ..features.eeg import PAIRS
        from ..models.montage import build_model

        tile = tuple(self.cfg.input.tile)
        pairs = keras.Input((EEG_WINDOW_ROWS, len(PAIRS)), name="pairs")
        eeg = eeg_spectrogram_layer(tile)(pairs)
        if self.kaggle:
            kaggle = keras.Input((*tile, 4), name="tiles")
            inputs, tiles = [kaggle, pairs], keras.layers.Concatenate(name="kinds")([kaggle, eeg])
        else:
            inputs, tiles = pairs, eeg
        backbone = self.cfg.backbone
        return build_model(backbone.name, tile, 2 if self.kaggle else 1, source=backbone.source, weights=weights,
                           dropout=backbone.dropout, inputs=inputs, tiles=tiles, **(recipe or {}))
