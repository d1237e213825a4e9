"""Canonical saliency: CIS per image (Algorithm 1) and CMS per model, streamed."""

from facesal_fast.saliency.cis import CISResult, cis, default_patch
from facesal_fast.saliency.cms import CMSAccumulator, CMSResult, GroupDifference, cms

__all__ = ["CISResult", "CMSAccumulator", "CMSResult", "GroupDifference", "cis", "cms", "default_patch"]
