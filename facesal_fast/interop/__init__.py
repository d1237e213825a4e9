"""Adapters to the field's other toolkits: captum's ``attribute`` call
(:mod:`~facesal_fast.interop.captum`, :class:`CanonicalOcclusion`) and Quantus's model and
``explain_func`` (:mod:`~facesal_fast.interop.quantus`)."""

from facesal_fast.interop.captum import CanonicalOcclusion
from facesal_fast.interop.quantus import SAME_FACE, QuantusModel, quantus_explain, quantus_model

__all__ = ["SAME_FACE", "CanonicalOcclusion", "QuantusModel", "quantus_explain", "quantus_model"]
