"""Synthetic HMS data in Kaggle's exact layout: `python -m hms.synth OUT_DIR`."""

from .dataset import META_DIR, SynthSpec, ensure_dataset, generate, read_meta, reference_scores

__all__ = ["META_DIR", "SynthSpec", "ensure_dataset", "generate", "read_meta", "reference_scores"]
