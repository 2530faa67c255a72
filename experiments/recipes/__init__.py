"""Comparisons and paper reproductions: runs of several configs on identical data, seeds and
budget, summarised in a Markdown report with plots (experiments/compare.py,
experiments/reproduce.py)."""
