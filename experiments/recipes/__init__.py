"""Comparisons and paper reproductions: runs of several configs on identical data, seeds and
budget, summarised in a Markdown report with plots (experiments/compare.py,
experiments/reproduce.py)."""

import importlib

# every recipe, in the order docs and --paper=list show them (experiments/recipes/<name>.py)
RECIPES = ("switch", "capacity", "precision", "stability", "expert_choice", "loss_free",
           "routing", "upcycle")


def load(name: str):
    """The Recipe of experiments/recipes/<name>.py."""
    return importlib.import_module(f"experiments.recipes.{name}").RECIPE
