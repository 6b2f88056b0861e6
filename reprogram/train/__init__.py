"""In-processing fairness methods and the one Trainer loop they share.

Every torch method is an :class:`Objective` run by :class:`Trainer`; model builders for
the base models live in :mod:`reprogram.train.models`.
"""

from reprogram.train.adversarial import AdversarialDebiasing, GradientReversal, grad_reverse
from reprogram.train.lagrangian import LagrangianFairnessTrainer, LagrangianObjective
from reprogram.train.models import SplitModel, build_model, hf_classifier, mlp, resnet18, small_cnn
from reprogram.train.objective import CrossEntropy, Objective, per_sample_ce
from reprogram.train.reweighting import (
    HardExampleMining,
    WeightedCrossEntropy,
    affirmative_action_weights,
    inverse_frequency_weights,
)
from reprogram.train.sampling import GroupBalancedBatchSampler, GroupResampler, resample_indices
from reprogram.train.trainer import Trainer, TrainingDiverged, dataset_meta

__all__ = [
    "AdversarialDebiasing",
    "CrossEntropy",
    "GradientReversal",
    "GroupBalancedBatchSampler",
    "GroupResampler",
    "HardExampleMining",
    "LagrangianFairnessTrainer",
    "LagrangianObjective",
    "Objective",
    "SplitModel",
    "Trainer",
    "TrainingDiverged",
    "WeightedCrossEntropy",
    "affirmative_action_weights",
    "build_model",
    "dataset_meta",
    "grad_reverse",
    "hf_classifier",
    "inverse_frequency_weights",
    "mlp",
    "per_sample_ce",
    "resample_indices",
    "resnet18",
    "small_cnn",
]
