"""`charlm compare` through the real CLI: three tiny configs trained one after another,
then the same three runs compared again without training; the report's table, charts,
self-contained HTML and samples; refusals in one line."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.helpers import TINY_SETTINGS, generated_text, invoke, one_clean_error, sets

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHARTS = ("val_loss_by_step.png", "val_loss_by_time.png", "grad_norm_by_step.png")


def write_config(path, cell: str, corpus, **train):
    """A tiny config file: TINY_SETTINGS with `cell` and the corpus."""
    config: dict = {}
    for setting in TINY_SETTINGS + [f"model.cell={cell}", f"data.corpus={corpus}"]:
        key, value = setting.split("=", 1)
        section, name = key.split(".")
        config.setdefault(section, {})[name] = yaml.safe_load(value)
    config["train"].update(train)
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """Three tiny configs compared (and so trained) by `charlm compare`; the third is
    validated on another text."""
    root = tmp_path_factory.mktemp("compare")
    corpus, other = root / "corpus.txt", root / "other.txt"
    corpus.write_text(generated_text(20_000), encoding="utf-8")
    other.write_text(generated_text(3_000, seed=7), encoding="utf-8")
    configs = [
        write_config(root / "rnn.yaml", "simple_rnn", corpus),
        write_config(root / "lstm.yaml", "lstm", corpus),
        write_config(root / "gru.yaml", "gru", corpus),
    ]
    yaml_text = yaml.safe_load(configs[2].read_text())
    yaml_text["data"]["val_corpus"] = str(other)
    configs[2].write_text(yaml.safe_dump(yaml_text))
    result = invoke(
        "compare",
        *configs,
        "--out",
        root / "report",
        "--runs-dir",
        root / "runs",
        *sets("train.steps=6", "train.timeline_length=40"),
        "--length",
        50,
    )
    assert result.exit_code == 0, result.output
    return root, result


def best_loss_as_info_prints_it(run) -> str:
    result = invoke("info", "--checkpoint", run)
    assert result.exit_code == 0, result.output
    return re.search(r"best validation loss: ([0-9.]+) nats/char", result.output).group(1)


def test_compare_trains_configs_and_reports_each_run(compared):
    root, result = compared
    report = (root / "report" / "report.md").read_text()
    rows = {
        line.split(" | ")[0].strip("| "): line
        for line in report.splitlines()
        if "×" in line and not line.startswith("| run |")
    }
    assert set(rows) == {"rnn", "lstm", "gru"}
    for name in rows:
        run = root / "runs" / name
        assert (run / "history.jsonl").exists()  # trained into --runs-dir
        assert f"| {best_loss_as_info_prints_it(run)} |" in rows[name]
        assert "| 6 |" in rows[name]  # the --set overrides reached every config
    assert report.count("```text") >= 3 + 3  # each run's sample and its timeline
    assert rows["lstm"] in result.stdout  # the table is printed too


def test_charts_are_png_and_the_html_references_nothing_outside(compared):
    root, _ = compared
    for chart in CHARTS:
        data = (root / "report" / chart).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 5_000
    page = (root / "report" / "report.html").read_text()
    assert page.count("src='data:image/png;base64,") == len(CHARTS)
    sources = re.findall(r"""(?:src|href)\s*=\s*['"]?([^'" >]*)""", page)
    assert sources and all(source.startswith("data:") for source in sources)
    assert "http" not in page.replace("http-equiv", "") and "<link" not in page


def test_different_validation_texts_are_compared_with_a_warning(compared):
    root, result = compared
    assert "charlm: warning: the runs were not validated on the same text" in result.stderr
    assert "not validated on the same text" in (root / "report" / "report.md").read_text()


def test_existing_runs_are_compared_without_training_again(compared):
    root, _ = compared
    runs = [root / "runs" / name for name in ("rnn", "lstm", "gru")]
    before = [(run / "history.jsonl").read_text() for run in runs]
    result = invoke("compare", *runs, "--out", root / "again", "--length", 50)
    assert result.exit_code == 0, result.output
    assert [(run / "history.jsonl").read_text() for run in runs] == before
    first = (root / "report" / "report.md").read_text()
    again = (root / "again" / "report.md").read_text()
    assert again.split("![")[0] == first.split("![")[0]  # the same table
    samples = lambda text: text.split("## Samples")[1]  # noqa: E731
    assert samples(again) == samples(first)  # the same prime and seed: the same texts
    same_text = invoke("compare", *runs[:2], "--out", root / "two", "--length", 0)
    assert same_text.exit_code == 0 and "warning" not in same_text.stderr


def test_a_missing_run_is_refused_in_one_line(tmp_path, compared):
    root, _ = compared
    missing = tmp_path / "nowhere"
    result = invoke("compare", root / "runs" / "rnn", missing, "--out", tmp_path / "out")
    one_clean_error(result, f"{missing}: no such run directory or config file")
    assert not (tmp_path / "out").exists()
    (tmp_path / "empty").mkdir()
    result = invoke("compare", tmp_path / "empty", "--out", tmp_path / "out")
    one_clean_error(result, "is not a trained charlm run")
