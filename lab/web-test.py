#!/usr/bin/python3
"""Drives `bark web` in a real headless Chromium through WebDriver
(Debian's chromium, chromium-driver and python3-selenium): moves room A's
volume slider to 40 %, renames it, mutes room B, takes a screenshot; then
runs --then (a shell command: the lab sets room A's volume with pactl on
its host) and waits for the page to show that volume. Prints one line per
step and a JSON summary; exits 1 on the first failed step.

  web-test.py --url URL --room-a ID --room-b ID --screenshot FILE
              --check CMD --then CMD --expect-pct N [--within S]
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.support.ui import WebDriverWait

# The page redraws its rooms from every server-sent state (twice a
# second): an element found before a redraw is stale after it.
RETRY = (StaleElementReferenceException, NoSuchElementException)


def again(f, tries=20):
    """Runs `f` until no element of it went stale meanwhile."""
    for i in range(tries):
        try:
            return f()
        except RETRY:
            if i == tries - 1:
                raise
            time.sleep(0.05)


def browser(profile):
    o = webdriver.ChromeOptions()
    o.binary_location = "/usr/bin/chromium"
    # Root in a lab namespace: no sandbox; nothing reaches out (the lab
    # host has no route but its LAN; these flags stop the attempts).
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic",
                 f"--user-data-dir={profile}", "--window-size=1100,900"):
        o.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=o)


def card(d, node_id):
    return d.find_element(By.CSS_SELECTOR, f'.room[data-node-id="{node_id}"]')


def set_value(d, elem, value):
    # What moving the slider (or typing and leaving the field) does: the
    # value changes, then `input` and `change` fire.
    d.execute_script(
        "arguments[0].value = arguments[1];"
        "arguments[0].dispatchEvent(new Event('input', {bubbles: true}));"
        "arguments[0].dispatchEvent(new Event('change', {bubbles: true}));",
        elem, value)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--room-a", required=True)
    ap.add_argument("--room-b", required=True)
    ap.add_argument("--screenshot", required=True)
    ap.add_argument("--check", required=True)
    ap.add_argument("--then", required=True)
    ap.add_argument("--expect-pct", type=int, required=True)
    ap.add_argument("--within", type=float, default=2.0)
    a = ap.parse_args()
    summary = {}
    with tempfile.TemporaryDirectory() as profile:
        d = browser(profile)
        try:
            d.get(a.url)
            wait = WebDriverWait(d, 10, poll_frequency=0.1, ignored_exceptions=RETRY)
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".room")) >= 2)
            print("page: two rooms shown")
            again(lambda: set_value(d, card(d, a.room_a).find_element(By.CSS_SELECTOR, "input.volume"), "40"))
            print("room A: volume slider moved to 40")
            again(lambda: card(d, a.room_b).find_element(By.CSS_SELECTOR, "input.mute").click())
            print("room B: mute clicked")
            again(lambda: set_value(
                d, card(d, a.room_a).find_element(By.CSS_SELECTOR, "input.room-name"), "Kitchen"))
            print("room A: renamed Kitchen")
            # The page shows the acked state once the nodes report it.
            wait.until(lambda d: card(d, a.room_a).get_attribute("data-room") == "Kitchen"
                       and card(d, a.room_a).find_element(By.CSS_SELECTOR, "input.volume")
                       .get_attribute("value") == "40"
                       and card(d, a.room_b).find_element(By.CSS_SELECTOR, "input.mute").is_selected())
            print("page: shows Kitchen at 40 % and room B muted")
            # In the receivers' own PipeWire (the lab's pactl check).
            subprocess.run(a.check, shell=True, check=True)
            print("receivers: the changes are in their PipeWire")
            time.sleep(0.5)
            d.save_screenshot(a.screenshot)
            print(f"screenshot: {a.screenshot}")
            # The reverse: a change made on the receiver's host.
            t0 = time.monotonic()
            subprocess.run(a.then, shell=True, check=True)
            want = str(a.expect_pct)
            WebDriverWait(d, a.within + 5, poll_frequency=0.05, ignored_exceptions=RETRY).until(
                lambda d: card(d, a.room_a).find_element(By.CSS_SELECTOR, "input.volume")
                .get_attribute("value") == want)
            shown_s = time.monotonic() - t0
            summary["reverse_s"] = round(shown_s, 3)
            print(f"page: shows the host's volume {want} % after {shown_s:.2f} s")
            if shown_s > a.within:
                print(f"FAILED: more than {a.within} s")
                return 1
        finally:
            d.quit()
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # a failed wait: say which step, exit 1
        print(f"FAILED: {type(e).__name__}: {e}")
        sys.exit(1)
