"""Audits: resumable runs over many photos (:mod:`.runner`, :mod:`.store`, :mod:`.groups`),
:func:`~facesal_fast.audit.cms.cms` over files, and the checked options of ``facesal audit``
(:mod:`.options`). Empty on purpose: ``import facesal_fast.audit.options`` stays light."""
