"""Reports: the plain comparison of runs (runs_table), a study's tables (study_table), and how to pick runs (select)."""

from fmnist.report.cli import main

__all__ = ["main"]
