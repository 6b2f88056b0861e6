"""Shared test set-up. Its presence puts this folder on sys.path, so tests can
``import tiny_models``."""
