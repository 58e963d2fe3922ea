"""The sample gallery in a real browser (Debian's Chromium) against a running sidecar
whose store real traffic through the demo server filled: version v1, then v2 after a
rollout, the reference model shadow-running; and `lookout samples serve` over a store
of 1,000 samples."""

from __future__ import annotations

import dataclasses
import io
import json
import random
import subprocess
import sys
import time
import urllib.parse
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookout.sidecar.samples.query import SampleQuery
from lookout.sidecar.samples.store import SampleFile, SampleStore
from lookout.sidecar.samples.ui_session import COOKIE
from lookout.slo import catalog
from tests.support.browser import chromium, screenshot
from tests.support.processes import REPO, request, start_sidecar, wait_until
from tests.support.sample_writer import jpeg, sample
from tests.support.shadow_stack import shadow_options as shadow
from tests.support.shadow_stack import (
    start_demo_upstream,
    wait_for_reference_model,
)

TOKEN = "gallery-token-9d2e"
FRAMES = 10
TRACE_TEMPLATE = "http://127.0.0.1:16686/trace/{trace_id}"
HOSTILE = "<script>alert('lookout')</script>"
# one worker runs them all: they share one stack and one browser (and its session)
pytestmark = pytest.mark.xdist_group("gallery")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Two versions, one after the other, writing into one store; the second sidecar
    stays up and serves the gallery over everything."""
    store = tmp_path_factory.mktemp("gallery") / "store"
    token_file = tmp_path_factory.mktemp("secret") / "token"
    token_file.write_text(TOKEN)
    upstream, port = start_demo_upstream()
    options = [*shadow(), "--sample-dir", str(store), "--admin-token-file", str(token_file),
               "--trace-url-template", TRACE_TEMPLATE, "--sample-strategies",
               "disagreement below=0.8 per_minute=1000; random share=1 per_minute=1000"]
    stored = catalog.SAMPLES_STORED.sample_name
    sidecar = None
    from lookout.lookout_demo.scenes import generate_scene

    for version, seeds in (("v1", range(FRAMES)), ("v2", range(FRAMES, 2 * FRAMES))):
        if sidecar is not None:
            assert sidecar.stop() == 0
        sidecar = start_sidecar(f"http://127.0.0.1:{port}", *options, "--model-version",
                                version)
        wait_for_reference_model(sidecar)
        for seed in seeds:
            assert request(sidecar.port, "POST", "/predict", body=generate_scene(seed).jpeg(),
                           headers={"Content-Type": "image/jpeg"}).status == 200
        wait_until(lambda s=sidecar: s.metric(stored) >= FRAMES, 60, f"{version}'s samples")
    # one sample whose class name came from a hostile model's metadata
    writer = SampleStore(store, repair=False)
    rng, chooser = np.random.default_rng(7), random.Random(7)
    hostile = dataclasses.replace(sample(rng, chooser, time.time()), model="yolo-test",
                                  version="v2", strategy="random", classes=(HOSTILE,))
    hostile = dataclasses.replace(hostile, primary_detections=[
        {"box": [10.0, 10.0, 300.0, 200.0], "score": 0.7, "class_id": 3, "class": HOSTILE}])
    hostile_id = writer.add(hostile, SampleFile(jpeg(rng), "jpg")).id
    writer.close()
    yield {"sidecar": sidecar, "store": store, "hostile": hostile_id,
           "base": f"http://127.0.0.1:{sidecar.admin_port}"}
    assert sidecar.stop() == 0
    upstream.terminate()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    downloads = tmp_path_factory.mktemp("downloads")
    with chromium(downloads) as driver:
        driver.downloads = downloads
        yield driver


def _by_css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def _navigating(driver, element) -> None:
    """Click `element` and wait for the page it leads to, loaded: a click does not wait.
    The old document carries a mark the new one lacks (an element of the old page can
    also read as "not in the document" instead of stale while Chromium navigates)."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    driver.execute_script("window.lookoutOldPage = true")
    element.click()
    WebDriverWait(driver, 30, ignored_exceptions=(WebDriverException,)).until(
        lambda d: d.execute_script("return window.lookoutOldPage === undefined && "
                                   "document.readyState === 'complete'"))


def _sign_in(driver, base: str, token: str, next_path: str = "/ui/samples") -> None:
    driver.delete_all_cookies()
    driver.get(f"{base}{next_path}")
    assert urllib.parse.urlsplit(driver.current_url).path == "/ui/login"
    _by_css(driver, "#token")[0].send_keys(token)
    _navigating(driver, _by_css(driver, ".login button")[0])


@pytest.fixture
def signed_in(stack, browser):
    """The browser with a fresh session of this sidecar's, whichever test ran before (a
    cookie of another server on 127.0.0.1 would be another's)."""
    _sign_in(browser, stack["base"], TOKEN)
    return browser


def _cards(driver) -> list[dict[str, str]]:
    """Each card's facts as the page shows them."""
    out = []
    for card in _by_css(driver, ".card"):
        terms = [t.text for t in card.find_elements("css selector", "dt")]
        values = [v.text for v in card.find_elements("css selector", "dd")]
        out.append(dict(zip(terms, values, strict=True)))
    return out


def test_wrong_token_and_no_cookie_are_refused_then_the_token_opens_it(stack, browser) -> None:
    base = stack["base"]
    _sign_in(browser, base, "not-the-token")
    assert "token not accepted" in browser.page_source
    assert urllib.parse.urlsplit(browser.current_url).path == "/ui/login"
    any_id = stack["hostile"]
    # no cookie: pages send to the login form, images and exports are refused
    for path in (f"/ui/samples/{any_id}/thumbnail", "/ui/export?format=coco"):
        assert request(stack["sidecar"].admin_port, "GET", path).status == 401
    forged = request(stack["sidecar"].admin_port, "GET", f"/ui/samples/{any_id}/thumbnail",
                     headers={"Cookie": f"{COOKIE}=9999999999.00.00"})
    assert forged.status == 401
    _sign_in(browser, base, TOKEN)
    assert urllib.parse.urlsplit(browser.current_url).path == "/ui/samples"
    cookie = browser.get_cookie(COOKIE)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"
    assert TOKEN not in cookie["value"] and cookie["expiry"] > time.time() + 3600
    assert len(_cards(browser)) == 2 * FRAMES + 1
    headers = request(stack["sidecar"].admin_port, "GET", "/ui/login").headers
    assert "script-src" not in headers["Content-Security-Policy"]  # default-src 'none'
    assert headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert headers["X-Content-Type-Options"] == "nosniff"
    screenshot(browser, "gallery")


def test_filters_by_strategy_and_version_are_the_url(stack, signed_in) -> None:
    browser = signed_in
    browser.get(f"{stack['base']}/ui/samples")
    for name, value in (("version", "v2"), ("strategy", "random")):
        _by_css(browser, f'.filters input[name="{name}"]')[0].send_keys(value)
    _navigating(browser, _by_css(browser, ".filters button")[0])
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(browser.current_url).query)
    assert query["version"] == ["v2"] and query["strategy"] == ["random"]
    cards = _cards(browser)
    assert cards and all(c["model"].endswith(" v2") and c["strategy"] == "random"
                         for c in cards)
    stored = SampleStore(stack["store"], repair=False)
    expected = stored.query(SampleQuery(version="v2", strategy="random", limit=1000)).samples
    assert len(cards) == len(expected)
    # the URL alone reproduces the view
    browser.get(browser.current_url)
    assert len(_cards(browser)) == len(expected)


def test_a_sample_page_toggles_boxes_and_links_the_trace(stack, signed_in) -> None:
    browser = signed_in
    browser.get(f"{stack['base']}/ui/samples?version=v1")
    _navigating(browser, _by_css(browser, ".card")[0])
    primary, reference = _by_css(browser, ".frame.large .box.primary"), \
        _by_css(browser, ".frame.large .box.reference")
    assert primary and reference  # both models ran on the demo's scenes
    assert all(box.is_displayed() for box in primary)
    screenshot(browser, "sample")
    browser.find_element("css selector", 'label[for="show-primary"]').click()
    assert not any(box.is_displayed() for box in primary)
    assert all(box.is_displayed() for box in reference)
    browser.find_element("css selector", 'label[for="show-labels"]').click()
    assert not any(label.is_displayed() for label in _by_css(browser, ".frame.large .label"))
    browser.find_element("css selector", 'label[for="show-primary"]').click()
    assert all(box.is_displayed() for box in primary)
    # the trace link is the template with this sample's trace id
    sample_id = urllib.parse.urlsplit(browser.current_url).path.rsplit("/", 1)[-1]
    stored = SampleStore(stack["store"], repair=False).get(sample_id)
    link = browser.find_element("css selector", "a.trace")
    assert link.get_attribute("href") == TRACE_TEMPLATE.replace("{trace_id}", stored.trace_id)
    tables = {t.get_attribute("class"): t for t in _by_css(browser, "section.detections")}
    rows = tables["detections primary"].find_elements("css selector", "tbody tr")
    assert len(rows) == len(stored.primary_detections)
    assert _by_css(browser, ".features tbody tr")  # its drift features, ranked


def test_the_export_is_a_zip_of_the_filtered_samples(stack, signed_in) -> None:
    browser = signed_in
    browser.get(f"{stack['base']}/ui/samples?version=v1")
    shown = {card.get_attribute("data-sample") for card in _by_css(browser, ".card")}
    for old in browser.downloads.glob("*"):
        old.unlink()
    browser.find_element("css selector", "a.export").click()  # COCO first
    path = wait_until(lambda: next((p for p in browser.downloads.glob("*.zip")), None), 30,
                      "the export to download")
    wait_until(lambda: not list(browser.downloads.glob("*.crdownload")), 30, "it to finish")
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        coco = json.loads(archive.read("annotations.json"))
        assert {image["sample_id"] for image in coco["images"]} == shown
        assert all(image["file_name"] in archive.namelist()
                   for image in coco["images"])


def test_two_versions_side_by_side_with_their_agreement(stack, signed_in) -> None:
    browser = signed_in
    browser.get(f"{stack['base']}/ui/compare?baseline=v1&canary=v2")
    sides = {side.get_attribute("data-version"): side for side in _by_css(browser, ".side")}
    assert set(sides) == {"v1", "v2"}
    stored = SampleStore(stack["store"], repair=False)
    for version, side in sides.items():
        counts = side.find_element("css selector", ".counts").get_attribute("data-counts")
        expected, _ = stored.agreement_counts(SampleQuery(version=version))
        assert [int(c) for c in counts.split(",")] == expected and sum(expected) >= FRAMES
        assert side.find_elements("css selector", ".card")
    screenshot(browser, "compare")


def test_a_class_name_from_traffic_is_shown_as_text(stack, signed_in) -> None:
    browser = signed_in
    browser.get(f"{stack['base']}/ui/samples/{stack['hostile']}")
    cell = browser.find_element("css selector", ".detections.primary tbody td")
    assert cell.text == HOSTILE
    assert not _by_css(browser, "script")  # not one script element on the page
    assert HOSTILE not in browser.page_source  # only its escaped form
    browser.get(f"{stack['base']}/ui/samples?class={urllib.parse.quote(HOSTILE)}")
    assert [c.get_attribute("data-sample") for c in _by_css(browser, ".card")] == \
        [stack["hostile"]]


def test_without_a_token_the_gallery_is_off_and_says_why(tmp_path) -> None:
    from tests.support.processes import start_upstream

    upstream, port = start_upstream()
    sidecar = start_sidecar(f"http://127.0.0.1:{port}", "--sample-dir", str(tmp_path / "s"))
    try:
        for path in ("/ui/samples", "/ui/login"):
            response = request(sidecar.admin_port, "GET", path)
            assert response.status == 404 and b"No admin token is configured" in response.body
    finally:
        sidecar.stop()
        upstream.terminate()


@pytest.fixture(scope="module")
def big_store(tmp_path_factory) -> Path:
    store_dir = tmp_path_factory.mktemp("big") / "store"
    store = SampleStore(store_dir)
    rng, chooser = np.random.default_rng(3), random.Random(3)
    # the size each sample says its thumbnail has (96x72): no layout shift as they load
    encoded = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (72, 96, 3), np.uint8)).save(encoded, "JPEG")
    thumbnail = SampleFile(encoded.getvalue(), "jpg")
    start = time.time() - 1000
    for index in range(1000):
        store.add(sample(rng, chooser, start + index), thumbnail)
    store.close()
    return store_dir


def test_a_thousand_samples_load_one_page_of_thumbnails(big_store, browser) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "lookout", "samples", "serve", "--store", str(big_store),
         "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, cwd=REPO)
    try:
        lines = [process.stdout.readline() for _ in range(2)]
        link = lines[1].split("with: ", 1)[1].strip()
        browser.get(link)
        assert urllib.parse.urlsplit(browser.current_url).path == "/ui/samples"
        cards = _by_css(browser, ".card")
        requested = browser.execute_script(
            "return performance.getEntriesByType('resource')"
            ".filter(e => e.name.includes('/thumbnail')).length")
        assert len(cards) == 48 and 0 < requested <= 48  # one page; lazy below the fold
        assert "1000 matching" in browser.page_source
        newest = cards[0].get_attribute("data-sample")
        _navigating(browser, browser.find_element("css selector", "a.older"))
        assert newest not in {c.get_attribute("data-sample") for c in _by_css(browser, ".card")}
        browser.get(link)  # a one-time link
        assert "used already or has expired" in browser.page_source
    finally:
        process.terminate()
        process.wait(timeout=30)
