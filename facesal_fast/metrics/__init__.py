"""Faithfulness metrics, sanity checks and stability measures for saliency maps.

- :mod:`.explanation`: equal-budget heatmaps and negative explanation images
  ``E = (1 - H) (x) I`` (eqs. 9-10 of John et al.).
- :mod:`.faithfulness`: Average Drop %, % Increase in confidence, Win % (eqs. 11-13),
  deletion / insertion curves and their areas (Petsiuk et al., RISE: random tie order,
  mean-grey deletion, the reference's 11 x 11 sigma 5 insertion blur).
- :mod:`.similarity`: Spearman rank correlation and SSIM (Wang et al. 2004) between maps.
- :mod:`.sanity`: cascading layer randomisation (Adebayo et al. 2018).
- :mod:`.stability`: CMS convergence and split-half reliability.
"""

from facesal_fast.metrics.explanation import equal_mass, explanation_image, minmax
from facesal_fast.metrics.faithfulness import (
    BLURS,
    TIES,
    FaithfulnessTable,
    average_drop,
    curve_auc,
    deletion_curve,
    faithfulness_table,
    increase_in_confidence,
    insertion_curve,
    perturbation_batch,
    rise_blur,
    saliency_rank,
    win_percent,
)
from facesal_fast.metrics.sanity import cascading_randomization, randomizable_layers, randomize_layer
from facesal_fast.metrics.similarity import spearman, ssim
from facesal_fast.metrics.stability import convergence_curve, split_half

__all__ = [
    "BLURS",
    "TIES",
    "rise_blur",
    "saliency_rank",
    "FaithfulnessTable",
    "average_drop",
    "cascading_randomization",
    "convergence_curve",
    "curve_auc",
    "deletion_curve",
    "equal_mass",
    "explanation_image",
    "faithfulness_table",
    "increase_in_confidence",
    "insertion_curve",
    "minmax",
    "perturbation_batch",
    "randomizable_layers",
    "randomize_layer",
    "spearman",
    "split_half",
    "ssim",
    "win_percent",
]
