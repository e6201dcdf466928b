"""Forensics: ``postwatch investigate`` turns access logs and mail logs into an evidence report.

``investigate(options, progress=None) -> Report`` streams the inputs once (constant memory in the
size of the logs: only open queue ids, counters and the form messages themselves are kept) and
returns a :class:`~postwatch.forensics.model.Report`; ``render_json``, ``render_html`` and
``render_csv`` write it.  The parsers and the failure reasons are the shared ones of
:mod:`postwatch.maillogs` and :mod:`postwatch.reasons`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from postwatch.forensics.engine import InvestigateError, InvestigateOptions, investigate
    from postwatch.forensics.model import Report
    from postwatch.forensics.render import render_csv, render_html, render_json, report_dict

_ENGINE = ("InvestigateError", "InvestigateOptions", "investigate")
_RENDER = ("render_csv", "render_html", "render_json", "report_dict")


def __getattr__(name: str) -> Any:
    """Imported on first use: ``postwatch --help`` imports this package (for its commands) and
    should pay neither for the engine nor for Jinja2."""
    if name in _ENGINE:
        from postwatch.forensics import engine

        return getattr(engine, name)
    if name == "Report":
        from postwatch.forensics import model

        return model.Report
    if name in _RENDER:
        from postwatch.forensics import render

        return getattr(render, name)
    raise AttributeError(name)


__all__ = [
    "InvestigateError",
    "InvestigateOptions",
    "Report",
    "investigate",
    "render_csv",
    "render_html",
    "render_json",
    "report_dict",
]
