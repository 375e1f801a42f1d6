"""Reports opened as a reader opens them: in a browser, offline.

Headless Chromium (Debian's `chromium`, which `.ci/run` installs) loads a report with
every request that would leave the file failed and recorded (`cxrstn.browser`); the test
checks that none was made, that every image decodes at the size of the PNG it embeds, and
that Table II's cells, as the browser renders them, are the run's `reports/metrics.json`.
It does so on a report the report stage writes for the made-up project of
tests/conftest.py (every setting; CI, on a fresh clone, runs it) and on the default run's
`reports/report.html`, a DVC output, where `dvc repro` or `dvc pull` has written it. It
saves the first screen as a PNG; `make docs-numbers` keeps a copy in docs/figures/report.png.

Without Chromium the tests skip with the reason on a developer's machine and fail in CI
(where `CI` is set), so CI can never pass them by skipping.
"""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from cxrstn.browser import find_chromium, image_problems, png_size, visit
from cxrstn.docnumbers import SCREENSHOT, report_table_mismatches
from cxrstn.page import image_tag, render_html

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "reports" / "report.html"
WIDTH, HEIGHT = 1280, 800


@pytest.fixture(scope="module")
def chromium() -> str:
    found = find_chromium()
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("no Chromium in CI: .ci/run installs Debian's chromium package")
        pytest.skip("no Chromium here: apt-get install chromium (CI installs it in .ci/run)")
    return found


def table2_rows(page) -> list[list[str]]:
    (table,) = [t for t in page.tables if "table2" in t["class"].split()]
    return table["rows"]


def check_opens_offline_whole_and_right(report: Path, shots: Path) -> None:
    """The report at `report` (its metrics.json beside it) as the browser shows it."""
    html = report.read_text()
    page = visit(report, screenshot=shots / "first_screen.png", width=WIDTH, height=HEIGHT)

    assert page.title.startswith("Chest X-ray triage")
    assert page.requests and page.requests[0] == report.resolve().as_uri()
    assert page.offsite() == [] and page.blocked == []
    assert len(page.images) >= 6
    assert image_problems(page, html) == []
    metrics = json.loads((report.parent / "metrics.json").read_text())
    assert report_table_mismatches(table2_rows(page), metrics) == []

    shot = page.screenshot.read_bytes()
    assert png_size(shot) == (WIDTH, HEIGHT)
    assert len(shot) < 1_000_000


def test_a_written_report_opens_offline_whole_and_right(
    chromium, tmp_path, make_project, run_stage
):
    project = tmp_path / "project"
    make_project(project)
    run_stage("evaluate", project)
    run_stage("report", project)
    check_opens_offline_whole_and_right(project / "reports" / "report.html", tmp_path)


def test_the_default_runs_report_opens_offline_whole_and_right(chromium, tmp_path):
    if not REPORT.is_file():
        pytest.skip("reports/report.html is a DVC output: `dvc repro` or `dvc pull` writes it")
    check_opens_offline_whole_and_right(REPORT, tmp_path)


def test_the_kept_screenshot_is_a_first_screen_under_a_megabyte():
    data = (ROOT / SCREENSHOT).read_bytes()
    assert png_size(data) == (WIDTH, HEIGHT)
    assert len(data) < 1_000_000


def png_file(path: Path, size: tuple[int, int]) -> Path:
    Image.new("RGB", size, "white").save(path)
    return path


def test_a_report_that_reaches_out_or_breaks_is_caught(chromium, tmp_path):
    """The same checks on a page made to fail each of them."""
    from cxrstn.settings import TITLES

    metrics = {"stn": {"auc": {"mean": 93.01, "std": 0.9}}}
    table = (
        '<table class="table2"><tr><th>Metric (%)</th>'
        f"<th>{TITLES['stn']}</th></tr><tr><td>AUC</td><td>93.10 ± 0.90</td></tr></table>"
    )
    good = image_tag(png_file(tmp_path / "a.png", (30, 20)), "fine")
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PNG")
    # A PNG whose header claims another size than its pixels: the browser decodes nothing.
    lying = bytearray(buffer.getvalue())
    lying[16:24] = (40).to_bytes(4, "big") + (40).to_bytes(4, "big")
    broken = f'<img alt="broken" src="data:image/png;base64,{base64.b64encode(lying).decode()}">'
    outside = '<img alt="outside" src="http://example.com/x.png">'
    style = '<link rel="stylesheet" href="https://cdn.example.org/x.css">'
    path = tmp_path / "bad.html"
    html = render_html("bad", [("t", good + broken + outside + style + table)])
    path.write_text(html)

    page = visit(path)
    assert sorted(page.offsite()) == ["http://example.com/x.png", "https://cdn.example.org/x.css"]
    assert sorted(page.blocked) == sorted(page.offsite())
    problems = image_problems(page, html)
    assert [p.split(":")[0] for p in problems] == ["image 2 (broken)", "image 3 (outside)"]
    mismatches = report_table_mismatches(table2_rows(page), metrics)
    assert len(mismatches) == 7 and mismatches[0].startswith("AUC / Proposed STN: '93.10")
