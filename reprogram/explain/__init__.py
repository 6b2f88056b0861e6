"""Captum saliency reports (built by the explain issue)."""
