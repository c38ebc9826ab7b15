"""medrobust.report: one self-contained ``report.html`` from a results folder."""
from medrobust.report.html import write_report

__all__ = ["write_report"]
