"""Fairness triggers learned against a discriminator (built by the trigger issue)."""
