"""Reports: the paper's Tables A/B/C, verdicts on claims C1/C2, figures, as HTML and Markdown."""

from flmoe_jax.report.build import ReportEntry, build_report

__all__ = ["ReportEntry", "build_report"]
