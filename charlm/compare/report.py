"""The comparison written out: report.md (a table, the charts, each run's sample and
timeline) and report.html, the same with the charts embedded, so that it opens from disk
or as an attachment without anything else."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from charlm.compare.runs import RunSummary

COLUMNS = (
    "run",
    "cell",
    "layers × units",
    "parameters",
    "steps",
    "training chars/s",
    "wall time (s)",
    "best val loss (nats/char)",
    "bits/char",
    "at step",
)
TIMELINE_SHOWN = 5  # timeline samples shown per run: the first, the last, evenly between


def table_rows(summaries: list[RunSummary]) -> list[list[str]]:
    """The table's cells; the best loss printed as `charlm info` prints it."""
    return [
        [
            summary.name,
            summary.cell,
            f"{summary.layers} × {summary.units}",
            f"{summary.parameters:,}",
            f"{summary.steps:,}",
            f"{summary.train_chars_per_s:,.0f}" if summary.train_chars_per_s else "n/a",
            f"{summary.wall_s:.0f}",
            f"{summary.best_val_loss:.4f}" if summary.best_val_loss is not None else "n/a",
            f"{summary.best_bits:.4f}" if summary.best_bits is not None else "n/a",
            str(summary.best_step) if summary.best_step is not None else "n/a",
        ]
        for summary in summaries
    ]


def shown_timeline(summary: RunSummary) -> list[tuple[int, str]]:
    timeline = summary.timeline
    if len(timeline) <= TIMELINE_SHOWN:
        return timeline
    picks = sorted({round(i * (len(timeline) - 1) / (TIMELINE_SHOWN - 1)) for i in range(5)})
    return [timeline[i] for i in picks]


def fenced(text: str) -> str:
    fence = "````" if "```" in text else "```"
    return f"{fence}text\n{text}\n{fence}"


def markdown_report(
    summaries: list[RunSummary], charts: list[Path], prime: str, seed: int, warning: str | None
) -> str:
    """report.md: the warning if any, the table, the charts (linked beside it), each run's
    sample and timeline."""
    lines = ["# Comparison", ""]
    if warning:
        lines += [f"**Warning:** {warning}", ""]
    lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(summaries)]
    lines += [""]
    lines += [f"![{chart.stem}]({chart.name})" for chart in charts]
    lines += ["", f"## Samples (prime {prime!r}, seed {seed}, the same for every run)", ""]
    for summary in summaries:
        lines += [f"### {summary.name}", "", fenced(summary.sample), ""]
    lines += ["## Timelines (the sample at each evaluation, same prime and seed)", ""]
    for summary in summaries:
        lines += [f"### {summary.name}", ""]
        if not summary.timeline:
            lines += ["(no timeline: trained with train.timeline_length 0 or before it)", ""]
        for step, text in shown_timeline(summary):
            lines += [f"step {step}:", "", fenced(text), ""]
    return "\n".join(lines)


def html_report(
    summaries: list[RunSummary], charts: list[Path], prime: str, seed: int, warning: str | None
) -> str:
    """report.html, what markdown_report holds as one self-contained page: inline style,
    charts as data: URIs, no external reference."""
    escape = html.escape
    head = "".join(f"<th>{escape(column)}</th>" for column in COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>"
        for row in table_rows(summaries)
    )
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>charlm compare</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:.3em .6em}"
        "td{text-align:right}pre{background:#f4f4f4;padding:.6em;white-space:pre-wrap}"
        ".warning{color:#a40}</style></head><body><h1>Comparison</h1>",
    ]
    if warning:
        parts.append(f"<p class='warning'><b>Warning:</b> {escape(warning)}</p>")
    parts.append(f"<table><tr>{head}</tr>{body}</table>")
    for chart in charts:
        data = base64.b64encode(chart.read_bytes()).decode("ascii")
        parts.append(f"<p><img alt='{escape(chart.stem)}' src='data:image/png;base64,{data}'></p>")
    parts.append(
        f"<h2>Samples (prime {escape(repr(prime))}, seed {seed}, the same for every run)</h2>"
    )
    for summary in summaries:
        parts.append(f"<h3>{escape(summary.name)}</h3><pre>{escape(summary.sample)}</pre>")
    parts.append("<h2>Timelines (the sample at each evaluation, same prime and seed)</h2>")
    for summary in summaries:
        parts.append(f"<h3>{escape(summary.name)}</h3>")
        for step, text in shown_timeline(summary):
            parts.append(f"<p>step {step}:</p><pre>{escape(text)}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)
