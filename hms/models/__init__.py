"""Backbone registry and the tile-montage classifier."""

from .backbones import create_backbone, list_backbones, register
from .montage import TileMontage, build_model, model_for

__all__ = ["TileMontage", "build_model", "create_backbone", "list_backbones", "model_for", "register"]
