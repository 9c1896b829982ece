"""How large `charlm inspect`'s page is and how fast headless Chromium opens it.

For each length, the first characters of a text are inspected with the real command
(timed as a user's shell times it), then the page is opened from disk in headless
Chromium (Debian's chromium and chromium-driver, through Selenium) several times: load is
navigation start to the load event, by which the page's inline script has drawn every
character; recolour is one click on a find_units shortcut, which recolours every
character by that unit. A page of the same text in a bare <pre> is opened beside it for
scale. Medians are printed as one JSON object per length.

    python benchmarks/inspect_page.py --checkpoint RUN --text FILE [--chars 2000,20000,50000]
"""

from __future__ import annotations

import argparse
import html
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1300,900"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def load_ms(driver, page: Path) -> float:
    driver.get("about:blank")
    driver.get(page.resolve().as_uri())
    return driver.execute_script(
        "const t = performance.timing; return t.loadEventEnd - t.navigationStart;"
    )


def recolour_ms(driver) -> float:
    return driver.execute_script(
        "const button = document.querySelector('.ci-found button');"
        "if (!button) return null;"
        "const start = performance.now(); button.click(); return performance.now() - start;"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--text", required=True, type=Path)
    parser.add_argument("--chars", default="2000,20000,50000")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    source = args.text.read_text(encoding="utf-8")
    driver = browser()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for chars in (int(c) for c in args.chars.split(",")):
                text_file, page = Path(tmp) / f"{chars}.txt", Path(tmp) / f"{chars}.html"
                bare = Path(tmp) / f"{chars}-bare.html"
                text_file.write_text(source[:chars], encoding="utf-8")
                bare.write_text(f"<pre>{html.escape(source[:chars])}</pre>", encoding="utf-8")
                started = time.perf_counter()
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "charlm.cli",
                        "inspect",
                        "-c",
                        args.checkpoint,
                        str(text_file),
                        "--out",
                        str(page),
                    ],
                    check=True,
                    capture_output=True,
                )
                command_s = time.perf_counter() - started
                loads, recolours, bare_loads = [], [], []
                for _ in range(args.runs):
                    loads.append(load_ms(driver, page))
                    recolours.append(recolour_ms(driver))
                    bare_loads.append(load_ms(driver, bare))
                print(
                    json.dumps(
                        {
                            "chars": chars,
                            "charlm_inspect_s": round(command_s, 1),
                            "page_bytes": page.stat().st_size,
                            "load_ms": statistics.median(loads),
                            "recolour_ms": round(statistics.median(recolours)),
                            "bare_pre_load_ms": statistics.median(bare_loads),
                        }
                    ),
                    flush=True,
                )
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
