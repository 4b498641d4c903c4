"""The web page at `/` in a real browser: Debian's headless Chromium driven by Selenium through
Debian's chromedriver, against the server with the CPU stand-in pipeline. A person enters the
API key once, submits a prompt, watches the queue's live progress and ETA, cancels a job and
plays the finished video.

WAN22CTL_SCREENSHOT=path.png saves the page as the test last sees it (docs/web-page.png is one).
"""

from __future__ import annotations

import os
import shutil
import time

import pytest

from tests.test_server import Server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
KEY = "web-page-key"

pytestmark = pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
                                reason="Debian's chromium and chromium-driver are missing: apt-get install chromium "
                                       "chromium-driver (.ci/run does)")


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1100,1300",
                 "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=DriverService(executable_path=CHROMEDRIVER), options=options)
    driver.set_script_timeout(20)
    yield driver
    driver.quit()


def wait_for(condition, timeout: float = 30, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_submit_watch_cancel_and_play(tmp_path, browser):
    from selenium.webdriver.common.by import By

    server = Server(tmp_path, env={"WAN22_API_KEY": KEY, "FAKE_WAN_STEP_S": "0.06"}).start()
    try:
        browser.get(server.api.base + "/")
        key_box = wait_for(lambda: browser.find_element(By.ID, "key").is_displayed() and browser.find_element(By.ID, "key"),
                           what="the API key box")
        key_box.send_keys(KEY)
        browser.find_element(By.CSS_SELECTOR, "#keyform button").click()
        wait_for(lambda: browser.find_element(By.ID, "create").is_displayed(), what="the prompt form")
        assert "t2v-A14B" in browser.find_element(By.ID, "server").text

        browser.find_element(By.ID, "prompt").send_keys("a paper boat on a rainy street")
        browser.find_element(By.ID, "steps").send_keys("40")
        browser.find_element(By.ID, "seed").send_keys("11")
        browser.find_element(By.ID, "submit").click()
        card = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "li.job"), what="the job card")[0]
        assert card.find_element(By.CSS_SELECTOR, ".prompt").text == "a paper boat on a rainy street"

        seen, details = [], []
        while card.get_attribute("data-state") != "succeeded":  # the progress bar, live over SSE
            value = int(card.find_element(By.CSS_SELECTOR, "progress").get_attribute("value"))
            if not seen or value != seen[-1]:
                seen.append(value)
                details.append(card.find_element(By.CSS_SELECTOR, ".detail").text)
            assert len(seen) < 500
            time.sleep(0.03)
        assert len([v for v in seen if 0 < v < 100]) >= 3 and seen == sorted(seen), seen
        assert any("ETA" in d and "step" in d for d in details), details
        assert "seed 11" in card.find_element(By.CSS_SELECTOR, ".settings").text
        assert "40 steps" in card.find_element(By.CSS_SELECTOR, ".settings").text

        video = wait_for(lambda: (v := card.find_element(By.TAG_NAME, "video")).is_displayed() and v, what="the video")
        played = browser.execute_async_script("""
            const [video, done] = arguments;
            video.muted = true;
            video.play().then(() => setTimeout(() => done({duration: video.duration, error: null,
                ready: video.readyState, width: video.videoWidth}), 500),
                e => done({error: String(e), code: video.error && video.error.code}));
        """, video)
        assert played["error"] is None and played["duration"] > 0 and played["width"] > 0, played

        # Cancel a long job from the page.
        browser.find_element(By.ID, "prompt").clear()
        browser.find_element(By.ID, "prompt").send_keys("a very long job")
        browser.find_element(By.ID, "steps").clear()
        browser.find_element(By.ID, "steps").send_keys("900")
        browser.find_element(By.ID, "submit").click()
        long = wait_for(lambda: [c for c in browser.find_elements(By.CSS_SELECTOR, "li.job")
                                 if c.find_element(By.CSS_SELECTOR, ".prompt").text == "a very long job"],
                        what="the second card")[0]
        wait_for(lambda: long.get_attribute("data-state") == "running", what="the long job to run")
        long.find_element(By.CSS_SELECTOR, "button.cancel").click()
        wait_for(lambda: long.get_attribute("data-state") == "cancelled", what="the cancel")

        # The key was asked once: a reload goes straight to the page.
        browser.refresh()
        wait_for(lambda: browser.find_element(By.ID, "create").is_displayed(), what="the page after a reload")
        assert not browser.find_element(By.ID, "keyform").is_displayed()
        wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "li.job video")) == 2, what="the cards")
        shot = os.environ.get("WAN22CTL_SCREENSHOT")
        if shot:
            time.sleep(0.5)
            browser.save_screenshot(shot)
    finally:
        server.stop()


def test_s2v_page_takes_an_image_and_the_speech(tmp_path, browser):
    """A speech-to-video server: the page asks for an image and the speech (no seconds: the audio
    sets the length) and shows the clips as they run."""
    from selenium.webdriver.common.by import By

    from tests.test_server import image_bytes
    from tests.test_server_s2v import wav_bytes

    face, talk = tmp_path / "face.png", tmp_path / "talk.wav"
    face.write_bytes(image_bytes(64, 48, "PNG"))
    talk.write_bytes(wav_bytes(7.0))  # two clips of 80 frames
    server = Server(tmp_path, task="s2v-14B", env={"FAKE_WAN_STEP_S": "0.06"}).start()
    try:
        browser.get(server.api.base + "/")
        wait_for(lambda: browser.find_element(By.ID, "create").is_displayed(), what="the prompt form")
        assert browser.find_element(By.ID, "audio").is_displayed() and browser.find_element(By.ID, "image").is_displayed()
        assert not browser.find_element(By.ID, "seconds").is_displayed()
        browser.find_element(By.ID, "prompt").send_keys("she reads the news")
        browser.find_element(By.ID, "steps").send_keys("6")
        browser.find_element(By.ID, "image").send_keys(str(face))
        browser.find_element(By.ID, "audio").send_keys(str(talk))
        browser.find_element(By.ID, "submit").click()
        card = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "li.job"), what="the job card")[0]
        details = set()
        while card.get_attribute("data-state") not in ("succeeded", "failed"):
            details.add(card.find_element(By.CSS_SELECTOR, ".detail").text)
            time.sleep(0.03)
        assert card.get_attribute("data-state") == "succeeded", card.find_element(By.CSS_SELECTOR, ".error").text
        assert any("clip 2 of 2" in d and "/12" in d for d in details), details  # steps count on across clips
        assert "2 clip(s) of 80 frames" in card.find_element(By.CSS_SELECTOR, ".settings").text
        call = next(c for c in server.calls_made() if c["input_prompt"] == "she reads the news")
        assert call["audio_path"].endswith(".wav") and call["clips"] == 2
    finally:
        server.stop()


def test_docs_page_renders_the_schema(tmp_path, browser):
    from selenium.webdriver.common.by import By

    server = Server(tmp_path).start()
    try:
        browser.get(server.api.base + "/docs")
        ops = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "section.op h2"), what="the docs")
        titles = [o.text for o in ops]
        assert "POST /v1/videos" in titles and "GET /v1/videos/{video_id}/content" in titles, titles
    finally:
        server.stop()
