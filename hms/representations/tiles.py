"""The notebook's tiles (`input=both`, `kaggle`, `eeg`): Kaggle's spectrogram and the EEG spectrogram, four
region tiles each, laid out as one image for an EfficientNet (`hms.models.montage`)."""

from __future__ import annotations

from .base import Part, Representation, register


class Tiles(Representation):
    """Finished tiles of one or more feature kinds, side by side on the channel axis (Kaggle's first)."""

    family = "image"
    kinds: tuple = ()

    def parts(self) -> list[Part]:
        stored = {"kaggle": "kaggle", "eeg": "eeg"}
        return [Part(kind, stored[kind], tile=True) for kind in self.kinds]

    def build_model(self, weights=None, recipe: dict | None = None):
        from ..models.montage import build_model

        backbone = self.cfg.backbone
        return build_model(backbone.name, tuple(self.cfg.input.tile), len(self.kinds), source=backbone.source, weights=weights,
                           dropout=backbone.dropout, **(recipe or {}))


@register
class Both(Tiles):
    """4 Kaggle + 4 EEG spectrogram tiles (the notebook's 8-tile montage)."""

    name = "both"
    kinds = ("kaggle", "eeg")


@register
class KaggleTiles(Tiles):
    """Kaggle's spectrogram only: 4 tiles."""

    name = "kaggle"
    kinds = ("kaggle",)


@register
class EegTiles(Tiles):
    """The EEG spectrogram only: 4 tiles."""

    name = "eeg"
    kinds = ("eeg",)
