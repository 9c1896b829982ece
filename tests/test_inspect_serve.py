"""`POST /v1/inspect` on a real `charlm serve` process, and the playground's inspect tab in
headless Chromium (the `browser` fixture is in tests/conftest.py)."""

from __future__ import annotations

import os

import httpx
import pytest

from tests.helpers import Server

KEY = "inspect-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
# Where the inspect tab's screenshot for the docs is written when asked (docs/inspect.png).
INSPECT_SCREENSHOT_ENV = "CHARLM_INSPECT_SCREENSHOT"


@pytest.fixture(scope="module")
def server(trained_run):
    running = Server(trained_run, "--lanes", 2, "--max-prompt-chars", 200, "--api-key", KEY)
    yield running
    running.stop()


def inspect(server, body=None, headers=AUTH, **kwargs) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/inspect", json=body, headers=headers, timeout=120, **kwargs)


def test_the_endpoint_answers_with_the_inspection_of_the_text(server):
    text = 'the cat said "hi"\n(a dog)'
    response = inspect(server, {"text": text})
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["text"] == text and len(data["bits"]) == len(data["top"]) == len(text)
    assert data["layers"][0]["cell"] == "GRU"
    assert set(data["found"]) >= {"inside quotes", "position in line"}


@pytest.mark.parametrize(
    "body, status, param, message",
    [
        ({"text": ""}, 400, "text", "empty"),
        ({"text": "a" * 201}, 400, "text", "more than the 200"),
        ({"text": 5}, 400, "text", "must be a string"),
        ({"prompt": "abc"}, 400, "prompt", "unknown field"),
        (["abc"], 400, None, "JSON object"),
    ],
)
def test_bad_input_gets_an_error_object(server, body, status, param, message):
    response = inspect(server, body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["param"] == param and message in error["message"]
    assert error["type"] == "invalid_request_error"


def test_the_endpoint_checks_the_key_the_media_type_and_the_body_cap(server):
    assert inspect(server, {"text": "abc"}, headers={}).status_code == 401
    plain = httpx.post(
        f"{server.url}/v1/inspect", content=b'{"text": "abc"}', headers=AUTH, timeout=30
    )
    assert plain.status_code == 415 and plain.json()["error"]["code"] == "unsupported_media_type"
    huge = inspect(server, {"text": "a" * 2_000_000})
    assert huge.status_code == 413 and "error" in huge.json()


def test_an_inspection_beside_a_completion_leaves_its_text_as_it_is(server):
    """The inspection runs in its own thread beside the engine's: a seeded completion
    made meanwhile is the same text as made alone."""
    from concurrent.futures import ThreadPoolExecutor

    body = {"prompt": "the cat", "max_tokens": 400, "seed": 7, "temperature": 1.0}

    def complete():
        response = httpx.post(f"{server.url}/v1/completions", json=body, headers=AUTH, timeout=120)
        return response.json()["choices"][0]["text"]

    alone = complete()
    with ThreadPoolExecutor(2) as pool:
        beside = pool.submit(complete)
        inspected = inspect(server, {"text": "a dog came by (and sat)\n" * 8})
    assert inspected.status_code == 200 and beside.result() == alone


def test_the_playground_s_inspect_tab_colours_the_text_by_a_unit(browser, trained_run, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    server = Server(trained_run, "--lanes", 2)
    try:
        browser.get(server.url + "/")
        wait = WebDriverWait(browser, 60)
        browser.find_element(By.ID, "tab-inspect").click()
        text = browser.find_element(By.ID, "inspect-text")
        text.clear()
        text.send_keys('the cat said "hi" (to the dog)\nand ran')
        browser.find_element(By.ID, "inspect-run").click()
        spans = "#inspect-view .ci-text span"
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, spans)) == 38)

        def colours():
            return [
                s.value_of_css_property("background-color")
                for s in browser.find_elements(By.CSS_SELECTOR, spans)
            ]

        by_surprise = colours()
        assert len(set(by_surprise)) > 5  # coloured by surprise, character by character
        Select(
            browser.find_element(By.CSS_SELECTOR, "#inspect-view .ci-colour-by")
        ).select_by_value("unit")
        Select(browser.find_element(By.CSS_SELECTOR, "#inspect-view .ci-unit")).select_by_value("3")
        by_unit = colours()
        assert by_unit != by_surprise and len(set(by_unit)) > 3
        Select(browser.find_element(By.CSS_SELECTOR, "#inspect-view .ci-quantity")).select_by_value(
            "update_gate"
        )
        assert colours() != by_unit
        # A shortcut of find_units picks its unit.
        browser.find_elements(By.CSS_SELECTOR, "#inspect-view .ci-found button")[0].click()
        assert browser.find_element(By.ID, "inspect-error").text == ""
        browser.save_screenshot(
            str(os.environ.get(INSPECT_SCREENSHOT_ENV) or tmp_path / "inspect.png")
        )
    finally:
        server.stop()
