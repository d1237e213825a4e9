"""Canonical saliency: CIS per image (Algorithm 1, its options a :class:`CISOptions`) and the
streamed CMS accumulator.

:func:`facesal_fast.cms` (in :mod:`facesal_fast.audit.cms`) runs the accumulator over files;
:mod:`facesal_fast.saliency.identity` explains identification and verification (eqs. 7, 8).
"""

from facesal_fast.core.options import CISOptions
from facesal_fast.saliency.cis import CISResult, cis, default_patch
from facesal_fast.saliency.cms import CMSAccumulator, CMSResult, GroupDifference

__all__ = ["CISOptions", "CISResult", "CMSAccumulator", "CMSResult", "GroupDifference", "cis", "default_patch"]
