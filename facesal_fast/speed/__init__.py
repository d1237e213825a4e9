"""Faster occlusion: incremental inference (Krypton) and adaptive refinement."""

from facesal_fast.speed.incremental import IncrementalModel, IncrementalScorer, patch_boxes

__all__ = ["IncrementalModel", "IncrementalScorer", "patch_boxes"]
