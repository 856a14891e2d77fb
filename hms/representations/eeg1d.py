"""Raw-EEG windows for the 1D backbones (`input=eeg1d`, `backbone=eeg1d_cnn|eeg1d_gru|eeg1d_wavenet`): the 16
chain pairs of each labelled window, band-passed, downsampled, clipped and scaled (`hms.features.signals`),
made per batch from the per-file EEG cache."""

from __future__ import annotations

from .base import Part, Representation, register
from ..schema import ConfigError

SIGNAL_AUGMENTATIONS = ("time_flip", "hemisphere", "time_shift", "channel_dropout", "amplitude", "mixup")


def signal_options(cfg):
    """`input.signal` as SignalOptions; a bad value is a ConfigError naming the key."""
    from ..features.signals import SignalOptions

    try:
        return SignalOptions(**cfg.input.signal)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def signal_part(cfg, name: str) -> Part:
    """The raw-EEG signals of `input.signal`, made per batch from the per-file EEG cache (kept in memory once made)."""
    from ..features.signals import SignalWindows

    options = signal_options(cfg)
    return Part(name, "eeg", make=lambda files, file_ids, offsets: SignalWindows(files, file_ids, offsets, options))


class Signals(Representation):
    """What every representation made of `input.signal` windows shares: their augmentations, test-time views and
    band-power baseline."""

    augmentations = SIGNAL_AUGMENTATIONS

    def check(self) -> None:
        signal_options(self.cfg)

    def augmentation(self, seed: int | None = None):
        from ..augment import build_signal_augmentation

        return build_signal_augmentation(self.cfg.augmentation, seed)

    def views(self) -> list:
        from ..augment import tta_views

        return tta_views(self.cfg.augmentation, ndim=3)


@register
class Eeg1d(Signals):
    """(samples, 16) signals for a 1D backbone."""

    name = "eeg1d"
    family = "signal"

    def parts(self) -> list[Part]:
        return [signal_part(self.cfg, self.name)]

    def build_model(self, weights=None, recipe: dict | None = None):
        from ..features.signals import PAIR_NAMES
        from ..models.signal import build_signal_model

        options = signal_options(self.cfg)
        return build_signal_model(self.cfg.backbone.name, options.samples, len(PAIR_NAMES), weights=weights,
                                  dropout=self.cfg.backbone.dropout, bn_momentum=(recipe or {}).get("bn_momentum"))
