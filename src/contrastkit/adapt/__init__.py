"""Adapting a trained model: methods that start from weights someone already trained (WiSE-FT so far)."""
