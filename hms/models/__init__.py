"""Backbone registry and the tile-montage classifier."""

from .backbones import create_backbone, list_backbones, register
from .montage import TileMontage, auto_bn_momentum, build_model, model_for, resolved_recipe

__all__ = ["TileMontage", "auto_bn_momentum", "build_model", "create_backbone", "list_backbones", "model_for", "register", "resolved_recipe"]
