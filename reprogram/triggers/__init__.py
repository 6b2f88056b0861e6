"""Fairness triggers: small learned inputs that make a frozen model fairer.

Triggers are ``nn.Module``s mapping a batch of inputs to triggered inputs (image:
:class:`BorderTrigger`, :class:`PatchTrigger`, :class:`AdditiveTrigger`; text:
:class:`PromptTrigger`; tabular: :class:`FeatureTrigger`); :class:`TriggerFitter` learns
one against a :class:`Discriminator`; :func:`save_trigger` / :func:`load_trigger` keep
them as safetensors + JSON. :func:`make_trigger` builds one by name for a model.
"""

from reprogram.triggers.artifacts import TRIGGER_TYPES, FingerprintWarning, load_trigger, save_trigger
from reprogram.triggers.discriminator import CRITERIA, Discriminator
from reprogram.triggers.fitter import GAP_METRIC, RULES, TriggerFitter
from reprogram.triggers.image import PATCH_POSITIONS, AdditiveTrigger, BorderTrigger, ImageTrigger, PatchTrigger
from reprogram.triggers.make import TRIGGER_NAMES, make_trigger
from reprogram.triggers.tabular import FeatureTrigger
from reprogram.triggers.text import PROMPT_MODES, PromptTrigger

__all__ = [
    "AdditiveTrigger",
    "BorderTrigger",
    "CRITERIA",
    "Discriminator",
    "FeatureTrigger",
    "FingerprintWarning",
    "GAP_METRIC",
    "ImageTrigger",
    "PATCH_POSITIONS",
    "PROMPT_MODES",
    "PatchTrigger",
    "PromptTrigger",
    "RULES",
    "TRIGGER_NAMES",
    "TRIGGER_TYPES",
    "TriggerFitter",
    "load_trigger",
    "make_trigger",
    "save_trigger",
]
