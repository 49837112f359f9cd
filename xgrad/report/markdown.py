"""The report as Markdown: the entry table, the layer table, divergences, diagnoses and
the verdict."""

from __future__ import annotations

from typing import TYPE_CHECKING

from xgrad.metrics import OK_STATUSES
from xgrad.report.format import fmt, fmt_cos, fmt_shape

if TYPE_CHECKING:
    from xgrad.report.data import Report

__all__ = ["to_markdown"]


def _status(status: str) -> str:
    return status if status in OK_STATUSES else f"**{status}**"


def to_markdown(report: Report) -> str:
    """The whole report as Markdown text."""
    lines = []
    if report.title:
        lines += [f"## {report.title}", ""]
    lines += [
        report.header(),
        "",
        "| entry | shape | framework | native name | max abs | max rel | rel norm "
        "| cosine | ULP | status |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for entry, fw, native, m in report.rows():
        ulp = "" if m.ulp_max is None else str(m.ulp_max)
        lines.append(
            f"| {entry.label} | {fmt_shape(entry.shape)} | {fw} | `{native}` | "
            f"{fmt(m.max_abs)} | {fmt(m.max_rel)} | {fmt(m.rel_norm)} | "
            f"{fmt_cos(m.cosine)} | {ulp} | {_status(m.status)} |"
        )
    lines.append("")
    if report.pairwise:
        lines.append(
            "Framework vs framework (max rel norm over entries): "
            + ", ".join(
                f"{a}~{b} {fmt(p.rel_norm)}" for p in report.pairwise for a, b in [p.frameworks]
            )
        )
        lines.append("")
    if report.layers:
        lines += [
            "| layer | shape | framework | forward rel norm | forward | backward rel norm "
            "| backward |",
            "|---|---|---|---:|---|---:|---|",
        ]
        for layer in report.layers:
            for fw in layer.forward:
                f, b = layer.forward[fw], layer.backward[fw]
                lines.append(
                    f"| {layer.label} | {fmt_shape(layer.shape)} | {fw} | {fmt(f.rel_norm)} | "
                    f"{_status(f.status)} | {fmt(b.rel_norm)} | {_status(b.status)} |"
                )
        lines.append("")
    extra = [f"note: {n}" for n in report.notes]
    extra += [d.text() for d in report.divergences]
    extra += report.diagnosis_lines()
    lines += [f"- {line}" for line in extra]
    if extra:
        lines.append("")
    lines.append(f"**{report.summary()}**")
    return "\n".join(lines) + "\n"
