"""Evaluation layer: metric tables, plots, baselines and analyses run after a model is trained (uses the layers below)."""
