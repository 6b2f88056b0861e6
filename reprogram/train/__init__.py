"""In-processing fairness methods and the one Trainer loop they share.

Every torch method is an :class:`Objective` run by :class:`Trainer`;
:func:`make_method` builds one by name (what the CLI, the sweeps and the benchmarks
use); model builders for the base models live in :mod:`reprogram.train.models`.
:class:`ReductionsWrapper` is the scikit-learn estimator around fairlearn's reductions.
"""

from reprogram.train.adversarial import AdversarialDebiasing, GradientReversal, grad_reverse
from reprogram.train.dro import GroupDRO
from reprogram.train.fas import FASLoss
from reprogram.train.lagrangian import LagrangianFairnessTrainer, LagrangianObjective
from reprogram.train.methods import (
    METHODS,
    SWEEP_PARAMETER,
    TORCH_METHODS,
    FittedMethod,
    MethodSetup,
    make_method,
    train_method,
)
from reprogram.train.models import LinearMixture, SplitModel, build_model, hf_classifier, mlp, resnet18, small_cnn
from reprogram.train.objective import CrossEntropy, Objective, per_sample_ce
from reprogram.train.pareto import ParetoPoint, pareto_front, pareto_sweep, plot_pareto, save_sweep
from reprogram.train.regularizers import FairnessRegularizer
from reprogram.train.reweighting import (
    HardExampleMining,
    WeightedCrossEntropy,
    affirmative_action_weights,
    independence_weights,
    inverse_frequency_weights,
)
from reprogram.train.sampling import GroupBalancedBatchSampler, GroupResampler, resample_indices
from reprogram.train.trainer import Trainer, TrainingDiverged, dataset_meta, save_frozen


def __getattr__(name: str):
    # fairlearn and scikit-learn load only when the reductions are asked for.
    if name == "ReductionsWrapper":
        from reprogram.train.reductions import ReductionsWrapper

        return ReductionsWrapper
    raise AttributeError(f"module 'reprogram.train' has no attribute {name!r}")


__all__ = [
    "AdversarialDebiasing",
    "CrossEntropy",
    "FASLoss",
    "FairnessRegularizer",
    "FittedMethod",
    "GradientReversal",
    "GroupBalancedBatchSampler",
    "GroupDRO",
    "GroupResampler",
    "HardExampleMining",
    "LagrangianFairnessTrainer",
    "LagrangianObjective",
    "LinearMixture",
    "METHODS",
    "MethodSetup",
    "Objective",
    "ParetoPoint",
    "ReductionsWrapper",
    "SWEEP_PARAMETER",
    "SplitModel",
    "TORCH_METHODS",
    "Trainer",
    "TrainingDiverged",
    "WeightedCrossEntropy",
    "affirmative_action_weights",
    "build_model",
    "dataset_meta",
    "grad_reverse",
    "hf_classifier",
    "independence_weights",
    "inverse_frequency_weights",
    "make_method",
    "mlp",
    "pareto_front",
    "pareto_sweep",
    "per_sample_ce",
    "plot_pareto",
    "resample_indices",
    "resnet18",
    "save_frozen",
    "save_sweep",
    "small_cnn",
    "train_method",
]
