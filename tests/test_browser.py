"""A person's view of TensorBoard: headless Chromium opens the dashboard of a short run and finds its
scalar charts drawn, with the last logged point in the chart's table. Saves a screenshot in tmp_path.

Needs Debian's `chromium` (.ci/run installs it) driven by Playwright (in the test extra); no browser
is downloaded. Without Chromium the test is skipped, saying so.
"""
import io
import re
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tensorboard_server import TensorBoardServer
from test_tensorboard import logged, short_run, tags_of, wait_until  # noqa: F401 (logged is a fixture)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip("Chromium not installed (/usr/bin/chromium, Debian package chromium; .ci/run installs it)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed: pip install -e '.[test]'")

# No GPU, no sandbox (CI runs as root), and nothing that would reach beyond 127.0.0.1.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 60_000  # every browser wait is bounded


def run_colour(card) -> np.ndarray:
    """The colour TensorBoard gave the run: its dot in the chart's table."""
    style = card.locator("tb-data-table-content-row .row-circle span").first.get_attribute("style")
    return np.array([int(c) for c in re.search(r"rgb\((\d+), *(\d+), *(\d+)\)", style).groups()])


def test_tensorboard_page_shows_the_runs_charts(tmp_path, logged):  # noqa: F811
    logdir = tmp_path / "runs"
    run = short_run(logdir, "--seed", "1")
    tags = tags_of(logged, run.name)
    returns = logged[(run.name, "charts/episodic_return")]
    last_step, last_return = returns[-1][2], returns[-1][3]
    assert last_return == int(last_return)  # CartPole: +1 per step, so the table shows it as an integer

    with TensorBoardServer(logdir) as tb:
        tb.wait_for_runs([run.name])
        wait_until(lambda: tb.scalar_tags().get(run.name) == tags, 60, "the run's tags")
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=FLAGS,
                viewport={"width": 1400, "height": 1000}, timeout=TIMEOUT_MS)
            try:
                page = browser.new_page()
                page.set_default_timeout(TIMEOUT_MS)
                page.goto(f"{tb.url}/#timeseries")
                assert page.title() == "TensorBoard"
                page.get_by_text(run.name, exact=True).first.wait_for()  # the run selector lists it

                # One group per tag prefix, each with a card per tag: "charts 5 cards", "losses 3 cards".
                groups = page.locator("metrics-card-group-toolbar")
                groups.first.wait_for()
                per_prefix = Counter(tag.split("/")[0] for tag in tags)
                expected = sorted(f"{prefix}{n}cards" for prefix, n in per_prefix.items())
                sync_api.expect(groups).to_have_count(len(expected))
                assert sorted(re.sub(r"\s+", "", t) for t in groups.all_inner_texts()) == expected
                # The first group's cards are on screen, titled with the tags.
                titles = page.locator("scalar-card .tag").evaluate_all("els => els.map(e => e.title)")
                assert set(titles) >= {t for t in tags if t.startswith("charts/")}

                card = page.locator("scalar-card", has=page.locator('.tag[title="charts/episodic_return"]'))
                card.scroll_into_view_if_needed()
                # The chart's table stands at the last step: the run's last logged episode, to the digit.
                row = card.locator("tb-data-table-content-row", has_text=run.name)
                sync_api.expect(row).to_have_count(1)
                for text in (f"{last_step:,}", f"{last_return:.0f}"):  # TensorBoard writes 1,200 for 1200
                    sync_api.expect(row.get_by_text(text, exact=True).first).to_be_visible()
                # And the curve is drawn: the chart holds a line in the run's colour.
                # The chart draws asynchronously, so look again until the line is there (bounded).
                canvas = card.locator("line-chart canvas")
                colour = run_colour(card)
                deadline = time.monotonic() + 20
                while True:
                    pixels = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("RGB")).astype(int)
                    drawn = int((np.abs(pixels - colour).sum(axis=-1) < 40).sum())
                    if drawn > 100 or time.monotonic() > deadline:
                        break
                    time.sleep(0.5)
                assert drawn > 100, f"{drawn} pixels of the run's colour in the chart"

                shot = tmp_path / "tensorboard.png"
                page.screenshot(path=str(shot), full_page=True)
                assert Image.open(shot).size[0] >= 1000
                print(f"screenshot: {shot}")
            finally:
                browser.close()
