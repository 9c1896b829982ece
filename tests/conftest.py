"""Shared fixtures: a private cache, generated corpora and a tiny trained run."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

# Re-exported for modules not yet moved to tests.helpers; new code imports from there.
from tests.helpers import (  # noqa: F401
    CHROMEDRIVER,
    CHROMIUM,
    INSTALL,
    TINY_SETTINGS,
    WORDS,
    generated_text,
    tiny_config,
)

# Modules whose every test is slow (a subprocess, a real server, a browser, kill -9, a
# notebook kernel, a benchmark, or a training run end to end): `make test-fast`
# (-m "not slow") skips them. Mixed modules mark their slow tests with @pytest.mark.slow
# (also a test that trains, or compiles the sampler for many shapes, for seconds).
SLOW_MODULES = {
    "test_compare",
    "test_distribute",
    "test_engine",
    "test_finetune",
    "test_gradient_health",
    "test_hostile",
    "test_inspect_page",
    "test_inspect_serve",
    "test_keras_compat",
    "test_matrix",
    "test_notebook",
    "test_playground",
    "test_serve",
    "test_serve_clients",
    "test_serve_fuzz",
    "test_serve_hardening",
    "test_serve_openapi",
    "test_serve_protocol",
    "test_startup",
    "test_train",
}
# Modules that train in process over two logical CPU devices (MirroredStrategy).
TWO_DEVICE_MODULES = {"test_matrix"}


def pytest_collection_modifyitems(config, items):
    """Mark the slow modules' tests; split the CPU only when a test that needs two devices
    will run, so that a run of tests that need no TensorFlow never starts it."""
    for item in items:
        if item.module.__name__.rpartition(".")[2] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
    if any(item.module.__name__.rpartition(".")[2] in TWO_DEVICE_MODULES for item in items):
        from charlm.training.distribute import split_cpu

        # Two logical CPU devices, which must exist before TensorFlow starts its runtime:
        # collection only imports it, and no test has run yet.
        split_cpu(2)


MATRIX_CASES = []  # each case's outcome, from its report (which pytest-xdist's workers send)


def pytest_runtest_logreport(report):
    if report.when == "call" and report.passed:
        MATRIX_CASES.extend(value for name, value in report.user_properties if name == "matrix")


def pytest_terminal_summary(terminalreporter):
    """How many cases of the combination matrix (tests/test_matrix.py) ran."""
    cases = MATRIX_CASES
    if cases:
        terminalreporter.write_line(
            f"combination matrix: {len(cases)} cases ran ({cases.count('trained')} trained, "
            f"resumed, sampled and evaluated; {cases.count('refused')} refused in one line)"
        )


@pytest.fixture(autouse=True)
def float32_policy():
    """A test that trains in mixed precision leaves Keras's global policy float32 again."""
    yield
    keras = sys.modules.get("keras")  # a test that never imported Keras changed nothing
    if keras is not None:
        keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Every test gets a cache of its own: no test sees another's cached vocabulary."""
    monkeypatch.setenv("CHARLM_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def corpus_file(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(generated_text(20_000, extra="éλ"), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """One tiny run shared by the sampling, eval and info tests (they only read it)."""
    from charlm.training.loop import train

    root = tmp_path_factory.mktemp("trained")
    import os

    os.environ.setdefault("CHARLM_CACHE_DIR", str(root / "cache"))
    corpus = root / "corpus.txt"
    corpus.write_text(generated_text(20_000, extra="éλ"), encoding="utf-8")
    train(
        tiny_config(
            corpus,
            root / "run",
            "train.steps=30",
            "train.eval_interval=15",
            "train.timeline_length=200",
        )
    )
    return root / "run"


@pytest.fixture
def browser():
    """Headless Chromium through Selenium; skipped where it is not installed (failed in CI)."""
    if not (Path(CHROMIUM).exists() and shutil.which(CHROMEDRIVER)):
        if os.environ.get("CI") == "true":
            pytest.fail(f"Chromium is missing in CI; install it with: {INSTALL}")
        pytest.skip(f"Chromium is not installed; install it with: {INSTALL}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,900",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=DriverService(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()
