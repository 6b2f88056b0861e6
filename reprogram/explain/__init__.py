"""Captum attributions and the HTML saliency report.

* attributions (:mod:`reprogram.explain.attributions`): :func:`attribute_images`
  (Integrated Gradients, Grad-CAM, SmoothGrad), :func:`attribute_text` (IG over token
  embeddings, trigger tokens marked), :func:`attribute_tabular` (IG per feature),
  :func:`group_feature_importance`; with a trigger they explain ``model(trigger(x))``
  with respect to the original ``x``;
* :func:`saliency_report`: model vs model + trigger on one self-contained HTML page
  (fairness tables, per-group attributions, the calibrator's reliability diagram),
  returned as a :class:`SaliencyReport` for notebooks.
"""

from reprogram.explain.attributions import (
    Attribution,
    TokenAttribution,
    attribute_images,
    attribute_tabular,
    attribute_text,
    find_last_conv,
    group_feature_importance,
)
from reprogram.explain.report import SaliencyReport, saliency_report, select_samples

__all__ = [
    "Attribution",
    "SaliencyReport",
    "TokenAttribution",
    "attribute_images",
    "attribute_tabular",
    "attribute_text",
    "find_last_conv",
    "group_feature_importance",
    "saliency_report",
    "select_samples",
]
