"""`charlm compare`: train configs one after another (or take trained runs), then write a
report that sets them side by side.

    sources ──check──▶ train the configs ──▶ summarise each run ──▶ report.md, charts,
                                                                    report.html
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from charlm.compare.runs import RunSummary


@dataclass
class Comparison:
    summaries: list[RunSummary]
    report: Path  # report.md
    html: Path
    charts: list[Path]
    warning: str | None  # set when the runs were validated on different texts


def compare(
    sources: list[str | Path],
    out_dir: str | Path,
    overrides: list[str] = (),
    runs_dir: str | Path | None = None,
    prime: str = "",
    sample_length: int = 300,
    seed: int = 0,
    make_reporter=None,
) -> Comparison:
    """Compare the runs `sources` name (run directories, or YAML configs trained first
    into `runs_dir` with `overrides`); write the report into `out_dir`.
    `make_reporter(name)` gives each training's Reporter (default: silent)."""
    import time

    from charlm.compare.charts import draw_charts
    from charlm.compare.report import html_report, markdown_report
    from charlm.compare.runs import (
        check_sources,
        run_names,
        summarise,
        train_configs,
        validation_warning,
    )
    from charlm.training.reporter import SilentReporter

    sources = [Path(source) for source in sources]
    check_sources(sources)
    report_dir(out_dir)  # before any training: a refusal comes first
    names = run_names(sources)
    runs_dir = Path(runs_dir or f"runs/compare-{time.strftime('%Y%m%d-%H%M%S')}")
    paths = train_configs(
        sources, names, list(overrides), runs_dir, make_reporter or (lambda name: SilentReporter())
    )
    summaries = [
        summarise(name, path, prime, sample_length, seed) for name, path in zip(names, paths)
    ]
    warning = validation_warning(summaries)
    out_dir = report_dir(out_dir)
    charts = draw_charts(summaries, out_dir)
    report = out_dir / "report.md"
    report.write_text(markdown_report(summaries, charts, prime, seed, warning), encoding="utf-8")
    page = out_dir / "report.html"
    page.write_text(html_report(summaries, charts, prime, seed, warning), encoding="utf-8")
    return Comparison(summaries, report, page, charts, warning)


def report_dir(path: str | Path) -> Path:
    """The report directory, made if needed; one clear error if it cannot be."""
    from charlm.errors import RunError

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunError(
            f"report directory {path} cannot be created ({error.strerror}); choose another"
        ) from None
    return path
