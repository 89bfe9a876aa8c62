"""The console in a real browser (Chromium through Playwright) against the real local cluster.

Debian's ``chromium`` (``.ci/run`` installs it); never ``playwright install``. Without it the
tests skip, saying why, except in CI (``CI`` set), where they must run.

Each page is checked at 1280 px and 390 px wide (no horizontal scrolling), for labels on every
control, a skip link first in the tab order, and no Content-Security-Policy violation.
``EZT_CONSOLE_SCREENSHOTS=docs/console`` writes the screenshots docs/console.md shows.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from ezthrottle_server.common import apikeys
from ezthrottle_server.common.redisconn import connect
from ezthrottle_server.common.urls import domain_of
from ezthrottle_server.pacing.overrides import apply_overrides, parse_overrides
from support.cluster import local_cluster, pids
from support.published import offline
from support.redis_server import free_port

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
OPERATOR_TOKEN = "console-e2e-operator-token-0001"
WAIT_MS = 15_000  # every wait is bounded
SLOW_S = 3.0
STUCK_S = 300.0
WIDTHS = (1280, 390)
SHOTS = os.environ.get("EZT_CONSOLE_SCREENSHOTS")

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright

    expect.set_options(timeout=WAIT_MS)
except ImportError:  # pragma: no cover
    sync_playwright = None


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if sync_playwright is None or not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        offline("needs Debian's chromium (apt-get install chromium) and playwright (pip); .ci/run installs both")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium"), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, browser: Browser) -> Iterator[dict[str, Any]]:
    env = {
        "EZT_OPERATOR_TOKEN": OPERATOR_TOKEN,
        "EZT_DELIVERY_WINDOW_S": "1",  # a webhook to a closed port is dead-lettered within seconds
        "EZT_DELIVERY_BACKOFF_BASE_S": "0.2",
        "EZT_DELIVERY_BACKOFF_CAP_S": "0.4",
    }
    with local_cluster(tmp_path_factory.mktemp("console"), env) as info:
        with ThreadPoolExecutor(1) as pool:  # Playwright's sync API keeps an event loop running in this thread
            info["globex_key"] = pool.submit(asyncio.run, _new_key(info["redis_url"], "globex")).result(timeout=30)
            pool.submit(asyncio.run, _slow_domains(info["redis_url"], _slow(info), _stuck(info))).result(timeout=30)
        from ezthrottle import EZThrottle

        with (
            EZThrottle(api_key=info["api_key"], base_url=_edge(info)) as acme,
            EZThrottle(api_key=info["globex_key"], base_url=_edge(info)) as globex,
        ):
            info["clients"] = {"acme": acme, "globex": globex}
            yield info


def _slow(cluster: dict[str, Any]) -> str:
    """A target whose domain sends one job every SLOW_S: jobs behind one just sent wait, queued (which
    of the jobs waiting goes next is not their order of arrival)."""
    return f"{_edge(cluster, 'ord')}/healthz"


def _stuck(cluster: dict[str, Any]) -> str:
    """A target whose domain sends one job every STUCK_S: the second job waits, queued, all test long."""
    return f"{cluster['coordinator']}/healthz"


async def _slow_domains(redis_url: str, slow: str, stuck: str) -> None:
    r = connect(redis_url)
    try:
        domains = {domain_of(slow): 1 / SLOW_S, domain_of(stuck): 1 / STUCK_S}
        yaml = "domains:\n" + "".join(f"  {d}: {{rps: {rps}, max_concurrent: 1}}\n" for d, rps in domains.items())
        await apply_overrides(r, parse_overrides(yaml))
    finally:
        await r.aclose()


def _queued_one(client: Any, job_ids: list[str]) -> str:
    """Once one of the jobs has been sent, one that has not: the domain holds it a full interval now."""
    deadline = time.monotonic() + WAIT_MS / 1000
    while True:
        statuses = {j: client.get_job(j)["status"] for j in job_ids}
        waiting = [j for j, status in statuses.items() if status == "queued"]
        if len(waiting) < len(job_ids):
            assert waiting, statuses
            return waiting[0]
        assert time.monotonic() < deadline, statuses
        time.sleep(0.05)


async def _new_key(redis_url: str, customer: str) -> str:
    r = connect(redis_url)
    try:
        return (await apikeys.create_key(r, customer))[0]
    finally:
        await r.aclose()


def _edge(cluster: dict[str, Any], region: str = "iad") -> str:
    return str(cluster["regions"][region])


_SEQ = itertools.count()


def _submit(client: Any, url: str, **steps: Any) -> str:
    from ezthrottle import Step

    step = Step(client).url(f"{url}?n={next(_SEQ)}")  # a new URL each time: the default idempotent key hashes it
    for name, value in steps.items():
        step = getattr(step, name)(value)
    return str(step.execute()["job_id"])


def _page(browser: Browser, width: int = 1280) -> Page:
    context = browser.new_context(viewport={"width": width, "height": 800})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    violations: list[str] = []
    page.on("console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None)
    page.csp_violations = violations  # type: ignore[attr-defined]
    return page


def _sign_in(page: Page, base: str, secret: str) -> None:
    page.goto(f"{base}/console")
    expect(page).to_have_url(f"{base}/console/signin")
    page.get_by_label("API key").fill(secret)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def _check_layout(page: Page, name: str) -> None:
    """Every control labelled, the skip link first in tab order, no CSP violation, and no horizontal
    scroll at 1280 and 390 px (a screenshot of each at 1280)."""
    unlabelled = page.evaluate(
        """() => Array.from(document.querySelectorAll('input:not([type=hidden]), select, textarea, button'))
              .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label') && !el.textContent.trim())
              .map(el => el.outerHTML)"""
    )
    assert unlabelled == [], (name, unlabelled)
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 800})
        overflow = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert overflow[0] <= overflow[1], (name, width, overflow)
        if SHOTS and (width == 1280 or name == "jobs"):
            Path(SHOTS).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=f"{SHOTS}/{name}{'' if width == 1280 else f'-{width}'}.png")
    page.set_viewport_size({"width": 1280, "height": 800})
    page.keyboard.press("Tab")  # the keyboard's first stop skips to the content
    assert page.evaluate("document.activeElement.className") == "skip", name
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main", name
    assert page.csp_violations == [], page.csp_violations  # type: ignore[attr-defined]


def _open_job(page: Page, base: str, job_id: str) -> None:
    page.goto(f"{base}/console/jobs")
    page.get_by_role("link", name=job_id).click()
    expect(page.locator("h1")).to_contain_text(job_id)


def test_a_customer_signs_in_and_watches_jobs_live(browser: Browser, cluster: dict[str, Any]) -> None:
    base = _edge(cluster)
    client = cluster["clients"]["acme"]
    healthz = f"{_edge(cluster, 'lax')}/healthz"
    page = _page(browser)
    _sign_in(page, base, cluster["api_key"])
    done = _submit(client, healthz, headers={"Authorization": "Bearer sk-target-secret", "X-Request-Id": "r-1"}, metadata={"order": "A-1"})
    slow = [_submit(client, _slow(cluster)) for _ in range(3)]  # one at a time: two wait, queued
    # the list: the jobs, and those waiting turn success there without a reload
    page.goto(f"{base}/console/jobs")
    expect(page.get_by_role("link", name=done)).to_be_visible()
    page.evaluate("window.__not_reloaded = true")
    rows = {j: page.locator(f'tr[data-job-id="{j}"] [data-role=status]') for j in slow}
    queued = [j for j, row in rows.items() if row.inner_text() == "queued"]
    assert queued, {j: row.inner_text() for j, row in rows.items()}
    for job_id in queued:
        expect(rows[job_id]).to_have_text("success")
    assert page.evaluate("window.__not_reloaded") is True
    _check_layout(page, "jobs")
    # a job's page: its attempt, masked headers; then another, watched from waiting to success over SSE
    _open_job(page, base, done)
    expect(page.locator("#job-status")).to_have_text("success")
    expect(page.locator("table.attempts")).to_contain_text("success")
    expect(page.locator("section", has_text="Request").locator("table.headers")).to_contain_text("X-Request-Id")
    assert "sk-target-secret" not in page.content()
    _check_layout(page, "job")
    watched = _queued_one(client, [_submit(client, _slow(cluster)) for _ in range(2)])
    page.goto(f"{base}/console/jobs/{watched}")
    status = page.locator("#job-status")
    expect(status).to_have_text("queued")
    page.evaluate("window.__not_reloaded = true")
    expect(status).to_have_text("success")
    expect(page.locator("#job-events")).to_contain_text("completed")
    expect(page.locator("table.attempts")).to_contain_text("200")  # the details came back without a reload
    assert page.evaluate("window.__not_reloaded") is True


def test_a_customer_cancels_a_queued_job_and_replays_a_dead_letter(browser: Browser, cluster: dict[str, Any]) -> None:
    base = _edge(cluster)
    client = cluster["clients"]["acme"]
    healthz = f"{_edge(cluster, 'lax')}/healthz"
    page = _page(browser)
    _sign_in(page, base, cluster["api_key"])
    dead_hook = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens: dead-lettered after the 1 s window
    dead = _submit(client, healthz, webhooks=[{"url": dead_hook}])
    waiting = _queued_one(client, [_submit(client, _stuck(cluster)) for _ in range(2)])  # queued for minutes
    page.goto(f"{base}/console/jobs/{waiting}")
    expect(page.locator("#job-status")).to_have_text("queued")
    page.get_by_role("button", name="Cancel job").click()
    expect(page.locator(".notice")).to_have_text("Cancelled.")
    expect(page.locator("#job-status")).to_have_text("cancelled")
    expect(page.get_by_role("button", name="Cancel job")).to_have_count(0)
    deadline = time.monotonic() + WAIT_MS / 1000
    page.goto(f"{base}/console/dead")
    while page.locator(f'tr[data-job-id="{dead}"]').count() == 0:  # the delivery window runs out
        assert time.monotonic() < deadline, "no dead letter"
        page.wait_for_timeout(300)
        page.reload()
    page.get_by_label("Filter (job, URL, reason)").fill(dead)
    page.get_by_role("button", name="Filter").click()
    _check_layout(page, "dead")
    page.get_by_role("button", name=f"Replay {dead}").click()
    expect(page.locator(".notice")).to_have_text(f"Replayed 1 webhook(s) of {dead}.")
    nightly = {"cron": "0 3 * * *", "timezone": "Europe/Paris", "job": {"url": f"{healthz}?nightly=1"}}
    made = httpx.post(f"{base}/api/v1/schedules", json=nightly, headers={"Authorization": f"Bearer {cluster['api_key']}"}, timeout=10)
    assert made.status_code == 201, made.text
    for name in ("domains", "usage", "schedules", "secrets"):
        page.goto(f"{base}/console/{name}")
        _check_layout(page, name)
    page.goto(f"{base}/console/schedules")
    expect(page.locator(f'tr[data-schedule-id="{made.json()["schedule_id"]}"]')).to_contain_text("Europe/Paris")
    page.goto(f"{base}/console/secrets")
    expect(page.locator("meter")).to_have_count(0)  # on secrets now; usage had its bar:
    page.goto(f"{base}/console/usage")
    expect(page.locator("meter")).to_have_count(1)
    page.goto(f"{base}/console/domains")
    expect(page.locator("table")).to_contain_text(healthz.split("/")[2])


def test_a_second_customer_sees_none_of_the_first_ones_jobs(browser: Browser, cluster: dict[str, Any]) -> None:
    base = _edge(cluster, "lax")  # any edge serves the console
    acme_job = _submit(cluster["clients"]["acme"], f"{_edge(cluster, 'lax')}/healthz")
    globex_job = _submit(cluster["clients"]["globex"], f"{_edge(cluster, 'lax')}/healthz")
    page = _page(browser)
    _sign_in(page, base, cluster["globex_key"])
    expect(page.get_by_role("link", name=globex_job)).to_be_visible()
    assert page.locator("tr[data-job-id]").count() == 1 and acme_job not in page.content()
    page.goto(f"{base}/console/jobs/{acme_job}")
    assert acme_job not in page.locator("h1").all_inner_texts()  # a 404, as for an unknown id
    page.goto(f"{base}/console/regions")
    assert "not_found" in page.content()
    page.goto(f"{base}/console/jobs")
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{base}/console/signin")


def test_the_operator_sees_three_regions_up_then_one_down(browser: Browser, cluster: dict[str, Any]) -> None:
    base = _edge(cluster)
    page = _page(browser)
    _sign_in(page, base, OPERATOR_TOKEN)
    expect(page).to_have_url(f"{base}/console/regions")
    for region in ("iad", "lax", "ord"):
        expect(page.locator(f'tr[data-region="{region}"] [data-role=state]')).to_have_text("up")
    expect(page.locator("#leader")).not_to_have_text("none")
    _check_layout(page, "regions")
    for name in ("customers", "domains"):
        page.goto(f"{base}/console/{name}")
        _check_layout(page, f"operator-{name}")
    page.goto(f"{base}/console/jobs?customer=globex")
    expect(page.locator("tr[data-job-id]")).not_to_have_count(0)
    page.goto(f"{base}/console/regions")
    page.evaluate("window.__not_reloaded = true")
    os.kill(pids(cluster)["edge-ord"], signal.SIGKILL)
    expect(page.locator('tr[data-region="ord"] [data-role=state]')).to_have_text("down")  # the page updates itself
    expect(page.locator('tr[data-region="iad"] [data-role=state]')).to_have_text("up")
    assert page.evaluate("window.__not_reloaded") is True
