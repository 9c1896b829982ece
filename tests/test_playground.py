"""The playground page in a real browser: headless Chromium (Debian's chromium and
chromium-driver) driven by Selenium opens the page a `charlm serve` process serves,
types a prompt, presses Generate, and sees the text stream in and the loss curve drawn.

Where Chromium is missing the test is skipped with the command that installs it; in CI
(CI=true) a missing browser is a failure."""

from __future__ import annotations

import os

from charlm.run.rundir import RunDir
from tests.helpers import SCREENSHOT_ENV, Server


def test_the_page_streams_text_and_draws_the_loss_curve(browser, trained_run, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server = Server(trained_run, "--lanes", 2)
    try:
        browser.get(server.url + "/")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda b: b.find_element(By.ID, "curve").get_attribute("data-points") == "2")
        assert "gru" in browser.find_element(By.ID, "facts").text
        # The timeline: each evaluation's sample, latest first, as history.jsonl holds it.
        timeline = [r for r in RunDir(trained_run).history() if "timeline" in r][::-1]
        assert browser.find_element(By.ID, "timeline").get_attribute("data-points") == "2"
        shown = browser.find_elements(By.CSS_SELECTOR, "#timeline li")
        assert [item.find_element(By.TAG_NAME, "strong").text for item in shown] == [
            f"step {r['step']}" for r in timeline
        ]
        assert [
            item.find_element(By.TAG_NAME, "pre").get_attribute("textContent") for item in shown
        ] == [r["timeline"] for r in timeline]
        browser.find_element(By.ID, "prompt").send_keys("the cat")
        browser.find_element(By.ID, "length").clear()
        browser.find_element(By.ID, "length").send_keys("300")
        browser.find_element(By.ID, "seed").send_keys("5")
        browser.find_element(By.ID, "generate").click()
        generated = browser.find_element(By.ID, "generated")
        wait.until(lambda b: len(generated.text) > 0)
        first_seen = len(generated.text)
        wait.until(lambda b: b.find_element(By.ID, "generate").is_enabled())
        # Streaming: text was on the page before all of it had arrived.
        assert 0 < first_seen <= len(generated.get_attribute("textContent")) == 300
        assert "chars/s" in browser.find_element(By.ID, "speed").text
        assert browser.find_element(By.ID, "error").text == ""
        browser.save_screenshot(str(os.environ.get(SCREENSHOT_ENV) or tmp_path / "page.png"))
    finally:
        server.stop()


def test_with_an_api_key_the_page_asks_for_it_and_sends_it(browser, trained_run):
    """The page of a server with --api-key says the key is needed; once it is typed in,
    the run's facts load and Generate streams text (the key kept in session storage)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    server = Server(trained_run, "--lanes", 2, "--api-key", "sesame")
    try:
        browser.get(server.url + "/")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda b: "API key" in b.find_element(By.ID, "error").text)
        browser.find_element(By.ID, "api-key").send_keys("sesame", Keys.TAB)
        wait.until(lambda b: b.find_element(By.ID, "curve").get_attribute("data-points") == "2")
        assert browser.find_element(By.ID, "error").text == ""
        assert browser.execute_script("return sessionStorage.getItem('charlm-api-key')") == "sesame"
        browser.find_element(By.ID, "length").clear()
        browser.find_element(By.ID, "length").send_keys("50")
        browser.find_element(By.ID, "generate").click()
        generated = browser.find_element(By.ID, "generated")
        wait.until(lambda b: len(generated.get_attribute("textContent")) == 50)
        assert browser.find_element(By.ID, "error").text == ""
    finally:
        server.stop()
