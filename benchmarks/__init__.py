"""The benchmark scripts (run each as ``python benchmarks/<script>.py``) and their runner,
``python -m benchmarks`` (see ``benchmarks/__main__.py``)."""
