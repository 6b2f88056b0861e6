import pytest
import torch

from reprogram.data import spurious_digits
from reprogram.models import FrozenModel
from reprogram.train import Trainer, small_cnn


@pytest.fixture(scope="session")
def digits():
    """Spurious digits (8x8) and an ERM CNN that learned the tint shortcut, frozen."""
    train, val, test = (spurious_digits(s, size=8, train_correlation=0.95) for s in ("train", "val", "test"))
    torch.manual_seed(0)
    trainer = Trainer(small_cnn(2, width=8), epochs=12, batch_size=64, lr=3e-3, progress=False).fit(train)
    return FrozenModel(trainer.model, input_kind="image"), train, val, test
