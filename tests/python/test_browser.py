"""The playground page in headless Chromium (Debian's chromium + chromium-driver, driven by
selenium) against a real `epas serve`: a prompt at a chosen ratio streams text and shows
tokens/s, chat mode answers, a JSON Schema box constrains the answer and offered tools show
their calls, a compare runs three ratios side by side, the API-key field appears when the
server needs a key. Screenshots go to target/test-artifacts/."""

import json
import re

import pytest

from epas_testing import ARTIFACTS, epas_server, http, require_module, require_tool

webdriver = require_module("selenium.webdriver")
jsonschema = require_module("jsonschema")
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

NUMBER = re.compile(r"^\d+(\.\d+)?$")


@pytest.fixture(scope="module")
def browser():
    chromium = require_tool("chromium", "chromium-browser", "google-chrome")
    driver_path = require_tool("chromedriver")
    options = Options()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--window-size=1280,1100",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def server():
    with epas_server("--allow-untrained-sharing") as base:
        yield base


def by_id(driver, id_):
    return driver.find_element(By.ID, id_)


def wait(driver, condition, timeout=60):
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)


def severe_console_errors(driver):
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def save_full_page(driver, name):
    """A screenshot of the whole page (the window grows to its height for the shot)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    size = driver.get_window_size()
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(size["width"], min(height + 150, 4000))
    driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(str(ARTIFACTS / name))
    driver.set_window_size(size["width"], size["height"])


def open_page(driver, base):
    driver.get(base + "/")
    wait(driver, lambda d: by_id(d, "status").text.startswith("Ready"), 30)


def test_page_is_served_from_the_binary(server):
    status, html = http("GET", server + "/")
    assert status == 200 and "<title>EPAS Serve playground</title>" in html
    for path in ("/static/playground.js", "/static/playground.css"):
        assert http("GET", server + path)[0] == 200
    status, info = http("GET", server + "/info")
    assert status == 200 and info["status"] == "ok" and not info["api_key_required"]
    model = info["model"]
    assert model["num_layers"] == 30 and model["max_sharing_layers"] == 29
    plan = model["plans"][15]
    assert (plan["sharing_layers"], plan["source_layer"], plan["first_sharing_layer"]) == (15, 14, 15)
    assert plan["kv_cache_bytes_per_token"] < model["plans"][0]["kv_cache_bytes_per_token"]


def test_prompt_ratio_stream_and_speed(browser, server):
    d = browser
    open_page(d, server)
    assert by_id(d, "model-layers").text == "30"
    assert "not EPAS-trained" in by_id(d, "model-trained").text

    # Change the ratio with the keyboard: Home, then 15 steps right = 15 of 30 layers share.
    slider = by_id(d, "ratio")
    slider.send_keys(Keys.HOME)
    for _ in range(15):
        slider.send_keys(Keys.ARROW_RIGHT)
    assert by_id(d, "ratio-value").text.startswith("15 of 30")
    modes = [e.get_attribute("data-mode") for e in d.find_elements(By.CSS_SELECTOR, "#layers .layer")]
    assert modes == ["compute"] * 14 + ["source"] + ["share"] * 15
    assert "source layer 14" in by_id(d, "plan-text").text

    prompt = by_id(d, "prompt")
    prompt.clear()
    prompt.send_keys("The State of the Union is")
    max_tokens = by_id(d, "max-tokens")
    max_tokens.clear()
    max_tokens.send_keys("48")
    # Count every change of the output area: streamed text arrives piece by piece.
    d.execute_script(
        "window.__updates = 0; new MutationObserver((m) => { window.__updates += m.length; })"
        ".observe(document.getElementById('output'), {childList: true, subtree: true, characterData: true});"
    )
    prompt.send_keys(Keys.CONTROL, Keys.ENTER)  # the keyboard shortcut submits
    wait(d, lambda d: by_id(d, "tps").get_attribute("data-done") == "true")
    generated = d.find_element(By.CSS_SELECTOR, "#output .generated").text
    assert generated.strip(), "no text streamed"
    assert d.execute_script("return window.__updates") >= 5, "output was not updated incrementally"
    tps = by_id(d, "tps").text
    assert NUMBER.match(tps) and float(tps) > 0, tps
    assert by_id(d, "ttft").text.endswith(" ms")
    assert 1 < int(by_id(d, "tokens").text) <= 48
    assert by_id(d, "used-ratio").text == "0.50 (15 share)"
    assert "tokens/s at ratio 0.50" in by_id(d, "status").text
    assert not severe_console_errors(d)


def test_chat_mode(browser, server):
    d = browser
    open_page(d, server)
    by_id(d, "mode-chat").click()
    assert by_id(d, "prompt-label").text == "Message"
    by_id(d, "max-tokens").clear()
    by_id(d, "max-tokens").send_keys("16")
    prompt = by_id(d, "prompt")
    prompt.clear()
    prompt.send_keys("What is the capital of France?", Keys.ENTER)  # Enter sends in chat
    wait(d, lambda d: by_id(d, "tps").get_attribute("data-done") == "true")
    turns = d.find_elements(By.CSS_SELECTOR, "#output .turn")
    assert [t.get_attribute("class") for t in turns] == ["turn user", "turn assistant"]
    assert turns[1].find_element(By.CSS_SELECTOR, ".generated").text.strip()
    assert prompt.get_attribute("value") == ""


def send_chat(d, text):
    prompt = by_id(d, "prompt")
    prompt.clear()
    prompt.send_keys(text, Keys.ENTER)
    wait(d, lambda d: by_id(d, "tps").get_attribute("data-done") == "true"
         and by_id(d, "generate").is_enabled())


def test_json_schema_box_constrains_the_answer_and_tool_calls_are_shown(browser, server):
    d = browser
    open_page(d, server)
    by_id(d, "mode-chat").click()
    by_id(d, "max-tokens").clear()
    by_id(d, "max-tokens").send_keys("80")
    assert not by_id(d, "schema-row").is_displayed()
    Select(by_id(d, "output-format")).select_by_value("json_schema")
    assert by_id(d, "schema-row").is_displayed()
    schema = json.loads(by_id(d, "json-schema").get_attribute("value"))

    send_chat(d, "Name a large city and its population.")
    answer = d.find_elements(By.CSS_SELECTOR, "#output .turn.assistant .generated")[-1].text
    jsonschema.validate(json.loads(answer), schema)

    # A schema that is not JSON is refused in the page, naming the box.
    by_id(d, "json-schema").send_keys("}")
    by_id(d, "prompt").send_keys("Again.", Keys.ENTER)
    wait(d, lambda d: "not valid JSON" in by_id(d, "request-message").text)
    assert "JSON Schema" in by_id(d, "request-message").text

    Select(by_id(d, "output-format")).select_by_value("text")
    assert by_id(d, "tools-row").is_displayed()
    by_id(d, "use-tools").click()
    assert by_id(d, "tools-options").is_displayed()
    Select(by_id(d, "tool-choice")).select_by_value("required")
    tools = json.loads(by_id(d, "tools").get_attribute("value"))
    send_chat(d, "What is the weather in Paris?")
    calls = d.find_elements(By.CSS_SELECTOR, "#output .turn.assistant:last-child .tool-call")
    assert calls, by_id(d, "output").text
    parameters = tools[0]["function"]["parameters"]
    for call in calls:
        assert call.get_attribute("data-name") == "get_weather"
        jsonschema.validate(json.loads(call.get_attribute("data-arguments")), parameters)
        assert call.text.startswith("get_weather(")
    save_full_page(d, "playground-tools.png")
    assert not severe_console_errors(d)


def test_escape_stops_a_stream_and_the_server_cancels_it(browser, server):
    d = browser
    open_page(d, server)
    by_id(d, "max-tokens").clear()
    by_id(d, "max-tokens").send_keys("1000")
    prompt = by_id(d, "prompt")
    prompt.send_keys(Keys.CONTROL, Keys.ENTER)
    wait(d, lambda d: d.find_element(By.CSS_SELECTOR, "#output .generated").text.strip())
    assert by_id(d, "stop").is_enabled()
    prompt.send_keys(Keys.ESCAPE)
    wait(d, lambda d: by_id(d, "status").text.startswith("Stopped"), 30)
    assert by_id(d, "generate").is_enabled() and not by_id(d, "stop").is_enabled()

    def cancelled():
        text = http("GET", server + "/metrics")[1]
        line = next(
            l for l in text.splitlines()
            if l.startswith('epas_requests_cancelled_total{sharing_ratio="0.00"}')
        )
        return float(line.split()[-1]) >= 1

    wait(d, lambda d: cancelled(), 30)


def test_compare_three_ratios_side_by_side(browser, server):
    d = browser
    open_page(d, server)
    prompt = by_id(d, "prompt")
    prompt.clear()
    prompt.send_keys("Mr. Speaker, Mr. Vice President, Members of Congress,")
    by_id(d, "max-tokens").clear()
    by_id(d, "max-tokens").send_keys("32")
    half = d.find_element(By.CSS_SELECTOR, '#presets button[data-k="15"]')
    half.click()  # the 0.5 preset: the diagram shows 15 sharing layers in the screenshot
    assert half.get_attribute("aria-pressed") == "true"
    assert by_id(d, "ratio").get_attribute("value") == "15"
    compare = by_id(d, "compare")
    compare.send_keys(Keys.SPACE)  # a checkbox toggled from the keyboard
    assert compare.is_selected()
    assert by_id(d, "compare-options").is_displayed()
    Select(by_id(d, "compare-a")).select_by_value("0")
    Select(by_id(d, "compare-b")).select_by_value("7")
    Select(by_id(d, "compare-c")).select_by_value("15")
    by_id(d, "generate").click()
    wait(
        d,
        lambda d: len(d.find_elements(By.CSS_SELECTOR, ".compare-col")) == 3
        and all(
            e.get_attribute("data-done") == "true"
            for e in d.find_elements(By.CSS_SELECTOR, ".compare-col .stats div:nth-child(2) dd")
        ),
        120,
    )
    cols = d.find_elements(By.CSS_SELECTOR, ".compare-col")
    assert [c.get_attribute("data-k") for c in cols] == ["0", "7", "15"]
    speeds = []
    for col in cols:
        assert col.find_element(By.CSS_SELECTOR, ".generated").text.strip()
        tps = col.find_element(By.CSS_SELECTOR, ".stats div:nth-child(2) dd").text
        assert NUMBER.match(tps), tps
        speeds.append(float(tps))
    assert all(s > 0 for s in speeds)
    assert cols[1].find_element(By.CSS_SELECTOR, ".relative").text.startswith("×")
    assert by_id(d, "status").text.startswith("Compared: 0.00 → ")
    save_full_page(d, "playground.png")
    assert not severe_console_errors(d)


def test_phone_width_has_no_horizontal_scroll(browser, server):
    d = browser
    d.set_window_size(390, 844)
    try:
        open_page(d, server)
        width = d.execute_script("return document.documentElement.scrollWidth")
        assert width <= d.execute_script("return window.innerWidth"), width
        save_full_page(d, "playground-phone.png")
    finally:
        d.set_window_size(1280, 1100)


def test_api_key_field(browser):
    d = browser
    with epas_server("--api-key", "sk-playground") as base:
        status, info = http("GET", base + "/info")
        assert status == 200 and info == {
            "status": "ok",
            "api_key_required": True,
            "authorized": False,
        }
        d.get(base + "/")
        d.execute_script("sessionStorage.clear()")
        d.get(base + "/")
        wait(d, lambda d: by_id(d, "key-panel").is_displayed(), 30)
        assert by_id(d, "generate").get_attribute("disabled") is not None
        key = by_id(d, "api-key")
        key.send_keys("wrong", Keys.ENTER)
        wait(d, lambda d: "refused" in by_id(d, "key-message").text)
        key.clear()
        key.send_keys("sk-playground", Keys.ENTER)
        wait(d, lambda d: by_id(d, "status").text.startswith("Ready"))
        assert by_id(d, "generate").get_attribute("disabled") is None
        by_id(d, "max-tokens").clear()
        by_id(d, "max-tokens").send_keys("4")
        by_id(d, "generate").click()
        wait(d, lambda d: by_id(d, "tps").get_attribute("data-done") == "true")
        assert 0 < int(by_id(d, "tokens").text) <= 4
        d.execute_script("sessionStorage.clear()")
