"""The comparison's charts, drawn with matplotlib (imported here only, Agg backend: no
display needed), every run on one chart."""

from __future__ import annotations

from pathlib import Path

from charlm.compare.runs import RunSummary

CHARTS = {
    # file name: (x field, x label, y field, y label, log y)
    "val_loss_by_step.png": ("step", "step", "val_loss", "validation loss (nats/char)", False),
    "val_loss_by_time.png": (
        "elapsed_s",
        "training time (s)",
        "val_loss",
        "validation loss (nats/char)",
        False,
    ),
    "grad_norm_by_step.png": (
        "step",
        "step",
        "grad_norm_mean",
        "gradient norm before clipping (mean over the interval)",
        True,
    ),
}


def draw_charts(summaries: list[RunSummary], out_dir: Path) -> list[Path]:
    """Draw one PNG per chart of CHARTS into `out_dir`, one curve per run.

    Args:
        summaries: the runs, in the report's order.
        out_dir: where the PNG files go.

    Returns:
        The PNG files' paths, in CHARTS' order.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    paths = []
    for file_name, (x_field, x_label, y_field, y_label, log_y) in CHARTS.items():
        figure, axes = pyplot.subplots(figsize=(7, 4.2), dpi=110)
        for summary in summaries:
            points = [
                (record[x_field], record[y_field])
                for record in summary.history
                if record.get(x_field) is not None and record.get(y_field) is not None
            ]
            if points:
                xs, ys = zip(*points)
                axes.plot(xs, ys, marker="o", markersize=3, label=summary.name)
        if log_y and axes.has_data():
            axes.set_yscale("log")
        axes.set_xlabel(x_label)
        axes.set_ylabel(y_label)
        axes.grid(alpha=0.3)
        if axes.has_data():
            axes.legend()
        figure.tight_layout()
        path = out_dir / file_name
        figure.savefig(path, format="png")
        pyplot.close(figure)
        paths.append(path)
    return paths
