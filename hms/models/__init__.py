"""Backbone registry, the tile-montage classifier and the raw-EEG (1D) classifier."""

from .backbones import create_backbone, list_backbones, register
from .montage import (TileMontage, auto_bn_momentum, batch_norm_layers, build_model, image_classifier, recalibrate_batch_norm,
                      resolved_recipe)
from .signal import build_signal_model

__all__ = ["TileMontage", "auto_bn_momentum", "batch_norm_layers", "build_model", "build_signal_model", "create_backbone", "image_classifier", "list_backbones",
           "recalibrate_batch_norm", "register", "resolved_recipe"]
