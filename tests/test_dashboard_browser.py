"""The dashboard page in a real headless Chromium (Debian's), driven by
Playwright: an operator finds dead jobs by type and error, replays one from
the page and watches it finish in its timeline, deletes another, pauses and
resumes relaying; a job's error is shown as text, never run as markup; a
read-only page offers no buttons. Screenshots are kept in
build/screenshots/ (CONVEYOR_SCREENSHOTS) for a person to look at."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

import conveyor
from conveyor import _core, canaries
from conveyor.canaries import CanarySender
from conveyor.dashboard import Dashboard
from tests.helpers.relay import start_relay
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.servers

TOKEN = "browser-token-0123456789"
CHROMIUM = os.environ.get("CONVEYOR_CHROMIUM", "/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[1]
SHOTS = Path(os.environ.get("CONVEYOR_SCREENSHOTS", ROOT / "build/screenshots"))
# Chromium's background connections are refused on a closed network.
FLAGS = [
    *("--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"),
    *("--disable-background-networking", "--disable-component-update", "--disable-sync"),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()


def _open(page: Page, dashboard: Dashboard) -> None:
    page.goto(f"http://{dashboard.address}/#token={TOKEN}")
    page.wait_for_selector("#queues tbody tr")


def _rows(page: Page, table: str, count: int) -> None:
    """Waits until `table` shows `count` rows (locators: the page's CSP
    forbids the string evaluation `wait_for_function` needs)."""
    expect(page.locator(f"#{table} tbody tr")).to_have_count(count)


@pytest.mark.timeout(180)
def test_an_operator_replays_a_dead_job_from_the_page(app: conveyor.Conveyor, page: Page) -> None:
    healed = threading.Event()

    @app.job("web.flaky", max_attempts=1)
    def flaky(n: int) -> None:
        if not healed.is_set():
            raise ValueError(f"upstream down <img src=x onerror=window.pwned=1> #{n}")

    @app.job("web.ok")
    def ok() -> None:
        pass

    relay = start_relay(app)
    worker = conveyor.Worker(app, threads=2)
    worker.start()
    dashboard = Dashboard(
        app.settings, TOKEN, address=("127.0.0.1", 0), queues=["default"], sample_every_s=0.5
    )
    dashboard.start()
    store = _core.RedisStore(app.settings.redis_url)
    ns = app.settings.namespace
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        ok.enqueue_many([()] * 2000)
        ids = [flaky.enqueue(n).id for n in range(3)]
        app.flush()
        wait_until(lambda: store.depth(ns, "default")["dead"] == 3, 30, "three dead jobs")
        sender = CanarySender(app.settings, ["default"], every_s=0.2)

        def canaries_back() -> bool:
            sender.tick()
            return len(canaries.read(app.settings, "default")) == 3

        wait_until(canaries_back, 30, "a canary from each partition")
        _open(page, dashboard)
        assert page.evaluate("location.hash") == "", "the token leaves the address bar"
        expect(page.locator("#health")).to_contain_text("attention")
        # Every job came through Kafka and the relay: sent and relayed agree.
        hops = page.locator("#hops tbody tr").first
        expect(hops).to_contain_text("default")
        expect(hops.locator("td").nth(1)).not_to_have_text("0")
        _find_dead(page, dashboard)
        healed.set()  # the cause is fixed
        _replay_and_watch(page, ids[0])
        _delete(page, ids[1])
        dead = [_core.Envelope.decode(r).id for r, _, _ in store.dead_letters(ns, "default", 10)]
        assert dead == [ids[2]]
        _pause_and_resume(page, store, ns, app.settings.topic_for("default"))
    finally:
        dashboard.stop()
        worker.stop(grace_s=2)
        relay.stop()


def _find_dead(page: Page, dashboard: Dashboard) -> None:
    """Finds the dead jobs by type and a piece of their error."""
    page.fill("#search-type", "web.flaky")
    page.fill("#search-error", "upstream down")
    page.click("#search button")
    _rows(page, "jobs", 3)
    errors = page.locator("#jobs td.err").all_inner_texts()
    assert all("<img src=x onerror=window.pwned=1>" in e for e in errors), errors
    assert page.locator("#jobs img").count() == 0, "an error is text, not markup"
    assert page.evaluate("window.pwned") is None
    wait_until(
        lambda: len(dashboard.series.snapshot()["rates"].get("default", [])) >= 3,
        10,
        "samples for the charts",
    )
    page.wait_for_timeout(2500)  # the page's next refresh draws them
    page.screenshot(path=str(SHOTS / "dashboard-dead-letters.png"), full_page=True)


def _replay_and_watch(page: Page, job_id: str) -> None:
    """Replays one dead job from the page and watches it finish."""
    page.check(f"input.pick[value='{job_id}']")
    page.click("#replay")
    expect(page.locator("#message")).to_have_text("1 back in the queue")
    expect(page.locator("#message")).not_to_have_class("error")

    def finished() -> bool:
        page.fill("#job-id", job_id)
        page.click("#find button")
        page.wait_for_timeout(300)
        return page.get_attribute("#job-state", "data-state") == "done"

    wait_until(finished, 30, "the replayed job done, as the page shows")
    timeline = page.locator("#timeline li").all_inner_texts()
    stages = [line.split(" ", 1)[1] for line in timeline]
    # Its dead attempt, the replay, then its end (a done attempt adds no
    # stamp of its own: the settle does not rewrite the envelope).
    assert stages == [
        *("enqueued", "kafka", "relayed", "started", "failed", "dead_lettered"),
        *("replayed", "done"),
    ]
    page.screenshot(path=str(SHOTS / "dashboard-job-timeline.png"), full_page=True)


def _delete(page: Page, job_id: str) -> None:
    page.click("#search button")
    _rows(page, "jobs", 2)
    page.check(f"input.pick[value='{job_id}']")
    page.click("#delete")
    expect(page.locator("#message")).to_have_text("1 deleted")
    _rows(page, "jobs", 1)


def _pause_and_resume(page: Page, store: _core.RedisStore, ns: str, topic: str) -> None:
    page.click("#queues button:has-text('Pause')")
    wait_until(lambda: dict(store.relay_controls(ns)).get(f"paused:{topic}") == "1", 10, "paused")
    expect(page.locator("#queues td.relaying")).to_have_text("paused")
    page.click("#queues button:has-text('Resume')")
    wait_until(lambda: dict(store.relay_controls(ns)) == {}, 10, "resumed from the page")


def test_a_read_only_page_offers_no_changes(app: conveyor.Conveyor, page: Page) -> None:
    dashboard = Dashboard(
        app.settings, TOKEN, address=("127.0.0.1", 0), queues=["default"], read_only=True
    )
    dashboard.start()
    try:
        _open(page, dashboard)
        expect(page.locator("#mode")).to_be_visible()
        assert page.locator("#queues button").count() == 0
        assert not page.is_visible("#replay")
    finally:
        dashboard.stop()


def test_a_page_without_the_token_shows_the_refusal(app: conveyor.Conveyor, page: Page) -> None:
    dashboard = Dashboard(app.settings, TOKEN, address=("127.0.0.1", 0), queues=["default"])
    dashboard.start()
    try:
        page.goto(f"http://{dashboard.address}/#token=wrong")
        expect(page.locator("#message")).to_contain_text("token")
        expect(page.locator("#message")).to_have_class("error")
        assert page.locator("#queues tbody tr").count() == 0
    finally:
        dashboard.stop()
