"""torchvision is imported lazily, and only through the compatibility helper."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from reprogram.models import import_torchvision


def test_helper_returns_a_working_cached_torchvision():
    tv = import_torchvision()
    assert tv is import_torchvision()
    model = tv.models.get_model("resnet18", weights=None, num_classes=3)
    assert model.fc.out_features == 3


def test_importing_reprogram_imports_neither_torchvision_nor_transformers():
    # A fresh interpreter: this one has long since imported both.
    code = textwrap.dedent(
        """
        import sys
        import reprogram, reprogram.models
        assert "torchvision" not in sys.modules, "torchvision imported eagerly"
        assert "transformers" not in sys.modules, "transformers imported eagerly"
        tv = reprogram.models.import_torchvision()
        assert tv is reprogram.models.import_torchvision()
        assert tv.models.get_model("resnet18", weights=None, num_classes=2).fc.out_features == 2
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"
