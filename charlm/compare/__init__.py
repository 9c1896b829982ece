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
    """What `compare` made: the runs' summaries and the files it wrote."""

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
    """Set runs side by side: train the configs among `sources`, then write a report.

    Args:
        sources: run directories, or YAML configs trained first, one after another.
        out_dir: where report.md, report.html and the charts go (made if needed).
        overrides: `section.key=value` strings applied to every config trained.
        runs_dir: where the configs' runs go; default runs/compare-<date-time>.
        prime, sample_length, seed: the sample every run generates for the report.
        make_reporter: name -> the Reporter of that training (default: silent).

    Returns:
        Comparison: a RunSummary per source, in order, and the paths written.

    Raises:
        charlm.errors.RunError: a source is neither a config nor a trained run, or
            `out_dir` cannot be made; checked before any training.
        charlm.errors.ConfigError: a config or an override is invalid.
    """
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
    """Make the report directory if needed.

    Args:
        path: the directory.

    Returns:
        `path`, as a Path.

    Raises:
        charlm.errors.RunError: it cannot be made.
    """
    from charlm.errors import RunError

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunError(
            f"report directory {path} cannot be created ({error.strerror}); choose another"
        ) from None
    return path
