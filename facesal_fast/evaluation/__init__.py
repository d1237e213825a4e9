"""``facesal evaluate``: faithfulness, deletion / insertion, CMS stability, ablations and the
sanity check, as one run.

Every metric is computed in the scorer's input geometry (:mod:`~.items`); the methods come
from the one registry (:mod:`facesal_fast.methods.registry`); each stage
(:mod:`~.faithfulness`, :mod:`~.curves`, :mod:`~.stability`, :mod:`~.ablations`,
:mod:`~.sanity`) returns a :class:`~.report.Section` that :mod:`~.report` writes to
``RUN/evaluate/`` (CSV, Markdown, PNG, ``evaluate.html``, ``summary.json``); :mod:`~.run`
drives them. Conventions and their options: :class:`~.config.EvalConfig` and docs/results.md.
"""

from facesal_fast.evaluation.config import EVALUATION_METHODS, EvalConfig
from facesal_fast.evaluation.items import Item, normalised_zero, prepare_items, reproject, score_images, to_input
from facesal_fast.evaluation.run import evaluate, run_cli
from facesal_fast.evaluation.sanity import sanity_cis

__all__ = [
    "EVALUATION_METHODS",
    "EvalConfig",
    "Item",
    "evaluate",
    "normalised_zero",
    "prepare_items",
    "reproject",
    "run_cli",
    "sanity_cis",
    "score_images",
    "to_input",
]
