"""The numbers the README and docs/results.md quote come from the committed run's reports/.

The pages' generated blocks (`<!-- NUMBERS:<name>:BEGIN -->` ... `END`) are checked two
ways: cell by cell against `reports/metrics.json` (and each run's metrics), independently
of the code that writes them, and as a whole against what `make docs-numbers` would
write now, so that no sentence or figure is left from an older run. The README's figure
must be the one composed from the figures that `reports/report.html` embeds.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from cxrstn import docnumbers
from cxrstn.docnumbers import (
    FULL_ROWS,
    README_ROWS,
    Run,
    blocks,
    markdown_tables,
    replace_blocks,
    report_table_mismatches,
    table_mismatches,
)

ROOT = Path(__file__).resolve().parents[1]
METRICS = ROOT / "reports" / "metrics.json"
REPORT = ROOT / "reports" / "report.html"
TABLE2 = ROOT / "reports" / "table2.md"


def committed_metrics() -> dict:
    return json.loads(METRICS.read_text())


def recall() -> float:
    return float(yaml.safe_load((ROOT / "params.yaml").read_text())["eval"]["recall"])


def block_table(page: str, name: str) -> list[list[str]]:
    body = blocks((ROOT / page).read_text())[name]
    (first, *_) = markdown_tables(body)
    return first


@pytest.mark.parametrize(
    ("page", "name", "rows"),
    [("README.md", "table2", README_ROWS), ("docs/results.md", "table2-full", FULL_ROWS)],
)
def test_each_table_ii_cell_is_the_committed_metrics(page, name, rows):
    table = block_table(page, name)
    assert table_mismatches(table, committed_metrics(), rows, recall()) == []
    assert len(table) == len(rows) + 1


def test_each_run_row_is_that_runs_committed_metrics():
    runs = docnumbers.runs_of(ROOT)
    table = block_table("docs/results.md", "runs")
    assert len(table) == len(runs) + 1
    for row in table[1:]:
        setting, fold = row[0].split()
        run = runs[setting, int(fold)]
        loss, best_val, last_val, test_auc = (float(cell) for cell in row[1:5])
        assert loss == pytest.approx(run["last_train_loss"], abs=5e-4)
        assert best_val == pytest.approx(run["val_auc"], abs=5e-4)
        assert last_val == pytest.approx(run["last_val_auc"], abs=5e-4)
        assert test_auc == pytest.approx(run["test_auc"], abs=5e-4)
        assert row[5] == f"{run['best_epoch']} of {run['epochs']}"


def test_the_generated_blocks_are_what_the_committed_run_gives():
    """Every sentence of the blocks too (the machine's name is read from the report): run
    `make docs-numbers` after a new run."""
    run = docnumbers.load_run(ROOT)
    assert run.machine, "reports/table2.md names no machine: re-run the report stage"
    for page, make in docnumbers.PAGES.items():
        on_page = blocks((ROOT / page).read_text())
        for name, body in make(run).items():
            assert on_page[name].rstrip("\n") == body.rstrip("\n"), (
                f"{page}: block {name} is not the committed run's; run `make docs-numbers`"
            )


def test_the_readme_figure_is_composed_from_the_committed_report():
    if not REPORT.is_file():
        pytest.skip("reports/report.html is a DVC output: `dvc repro` or `dvc pull` writes it")
    expected = docnumbers.overview_from_report(REPORT.read_text()).convert("RGB")
    committed = Image.open(ROOT / docnumbers.OVERVIEW).convert("RGB")
    assert committed.size == expected.size
    assert np.array_equal(np.asarray(committed), np.asarray(expected)), (
        "docs/figures/overview.png is not the committed report's: run `make docs-numbers`"
    )
    assert (ROOT / docnumbers.OVERVIEW).stat().st_size < 1_000_000


def test_the_reports_table_ii_is_the_committed_metrics():
    assert TABLE2.is_file(), "reports/table2.md is tracked in git: commit it with the run"
    first = markdown_tables(TABLE2.read_text())[0]
    assert report_table_mismatches(first, committed_metrics()) == []


# The generator and the checks on made-up runs -----------------------------------------


def metrics_of(
    auc: dict, paired: dict, r_centre: float = 0.0, r_height: float = 0.0, st: str = "stn"
) -> dict:
    """A metrics.json with the given mean AUC per setting; every other value made up (the
    window's r as given for setting `st`, 0 for the others)."""
    record = {}
    for setting, mean in auc.items():
        record[setting] = {
            key: {"mean": value, "std": 0.5}
            for key, value in {
                "auc": mean,
                "pr_auc": mean + 4,
                "precision": mean - 3,
                "tp_rate": 75.0,
                "fp_rate": 9.0,
                "tn_rate": 12.0,
                "fn_rate": 4.0,
                "roi_iou": 0.4272,
                "roi_lung_coverage": 1.0,
                "roi_r_centre": r_centre if setting == st else 0.0,
                "roi_r_height": r_height if setting == st else 0.0,
            }.items()
        }
    record["paired"] = {
        f"baseline_vs_{s}": {"auc_diff": d, "z": 1.0, "p": p, "ci_low": d - 1, "ci_high": d + 1}
        for s, (d, p) in paired.items()
    }
    return record


def test_the_verdict_says_what_the_numbers_say():
    same = metrics_of(
        {"baseline": 92, "yolo": 95, "stn": 92.8}, {"yolo": (2.7, 0.004), "stn": (0.8, 0.2)}
    )
    assert docnumbers.verdict(same) == (
        "On the default run the paper's STN learns no per-image window and scores like the "
        "baseline (+0.8 AUC points, within chance), while the thorax crop is worth +2.7 points."
    )
    better = metrics_of(
        {"baseline": 92, "yolo": 93, "stn": 95},
        {"yolo": (0.9, 0.3), "stn": (3.1, 0.001)},
        r_centre=0.62,
    )
    assert docnumbers.verdict(better) == (
        "On the default run the paper's STN learns a window that follows each image's lungs "
        "and scores above the baseline (+3.1 AUC points), while the thorax crop's +0.9 points "
        "are within chance."
    )
    worse = metrics_of(
        {"baseline": 92, "yolo": 90, "stn": 88}, {"yolo": (-2.0, 0.01), "stn": (-4.0, 0.001)}
    )
    assert "scores below the baseline (-4.0 AUC points)" in docnumbers.verdict(worse)
    assert "the thorax crop costs 2.0 points" in docnumbers.verdict(worse)
    fourth = metrics_of(
        {"baseline": 92, "yolo": 95, "stn": 92.8, "stn_eq": 94.6},
        {"yolo": (2.7, 0.004), "stn": (0.8, 0.2), "stn_eq": (2.6, 0.001)},
        r_centre=0.93,
        st="stn_eq",
    )
    fourth["paired"]["yolo_vs_stn_eq"] = {"auc_diff": -0.4, "z": -0.5, "p": 0.6}
    assert docnumbers.verdict(fourth).endswith(
        " With an equivariant window (not in the paper), the ST module's window follows each "
        "image's lungs, and it scores +2.6 AUC points against the baseline and -0.4 against "
        "the thorax crop (within chance)."
    )


def test_a_fourth_setting_gets_its_own_column_and_difference():
    record = metrics_of(
        {"baseline": 92, "yolo": 95, "stn": 92.8, "stn_new": 94},
        {"yolo": (2.7, 0.004), "stn": (0.8, 0.2), "stn_new": (2.0, 0.03)},
    )
    table = docnumbers.table(record, README_ROWS, 0.95)
    assert table.splitlines()[0] == "| % | Baseline | YOLO crop | STN | stn_new |"
    assert table_mismatches(markdown_tables(table)[0], record, README_ROWS, 0.95) == []
    assert "stn_new +2.0 (p 0.03)" in docnumbers.differences(record, with_interval=False)


def test_a_wrong_or_missing_cell_is_caught():
    record = metrics_of({"baseline": 92.2324, "yolo": 94.9057}, {"yolo": (2.7, 0.004)})
    good = markdown_tables(docnumbers.table(record, README_ROWS, 0.95))[0]
    assert table_mismatches(good, record, README_ROWS, 0.95) == []
    wrong = [row[:] for row in good]
    wrong[1][2] = "94.92 ± 0.50"  # AUC of yolo one hundredth off
    wrong[4][1] = "43.7"  # the IoU a point off
    problems = table_mismatches(wrong, record, README_ROWS, 0.95)
    assert len(problems) == 2 and "AUC / YOLO crop" in problems[0]
    assert "window IoU" in problems[1]
    dropped = [row[:2] for row in good]  # the yolo column gone
    assert table_mismatches(dropped, record, README_ROWS, 0.95) == [
        "setting yolo of metrics.json has no column"
    ]
    assert table_mismatches(good[:-1], record, README_ROWS, 0.95) == [
        "row 'window IoU with the lung box' missing"
    ]


def test_the_reports_own_table_is_checked_the_same_way():
    from cxrstn.report import METRIC_TITLES
    from cxrstn.settings import TITLES

    record = metrics_of({"baseline": 92.2324, "stn": 93.01}, {"stn": (0.8, 0.2)})
    header = ["Metric (%)", TITLES["baseline"], "paper", TITLES["stn"], "paper"]
    rows = [header]
    for key in ("auc", "pr_auc", "precision", "tp_rate", "fp_rate", "tn_rate", "fn_rate"):
        cells = [f"{record[s][key]['mean']:.2f} ± 0.50" for s in ("baseline", "stn")]
        rows.append([METRIC_TITLES[key], cells[0], "83.21 ± 0.69", cells[1], "84.22 ± 0.70"])
    assert report_table_mismatches(rows, record) == []
    rows[1][3] = "93.10 ± 0.50"
    assert report_table_mismatches(rows, record) == [
        "AUC / Proposed STN: '93.10 ± 0.50', metrics.json {'mean': 93.01, 'std': 0.5}"
    ]


def test_blocks_are_found_and_replaced_by_name():
    page = (
        "intro\n<!-- NUMBERS:a:BEGIN note -->\nold a\n<!-- NUMBERS:a:END -->\n"
        "middle\n<!-- NUMBERS:b:BEGIN -->\n<!-- NUMBERS:b:END -->\nend\n"
    )
    assert blocks(page) == {"a": "old a\n", "b": ""}
    new = replace_blocks(page, {"b": "new b"})
    assert blocks(new) == {"a": "old a\n", "b": "new b\n"}
    assert new.startswith("intro\n") and new.endswith("end\n")
    with pytest.raises(ValueError, match="no block named"):
        replace_blocks(page, {"c": "x"})
    with pytest.raises(ValueError, match="without their END"):
        blocks("<!-- NUMBERS:a:BEGIN -->\nno end\n")


def png(width: int, height: int, colour: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, "PNG")
    return buffer.getvalue()


def report_page(machine_line: str) -> str:
    figures = "".join(
        f'<img alt="{alt}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'
        for alt, data in (
            ("ROC curves", png(60, 50, "red")),
            ("ROI examples", png(40, 100, "blue")),
        )
    )
    return (
        f'<html><body>{figures}<table class="kv"><tr><td>device</td>'
        f"<td>train.device: auto; this machine: {machine_line}</td></tr></table></body></html>"
    )


def test_the_machine_and_figures_are_read_from_the_report():
    page = report_page("Debian GNU/Linux 12 (bookworm) (x86_64), AMD EPYC, 2 CPU cores, no GPU")
    assert docnumbers.machine(page) == "AMD EPYC, 2 cores"
    gpu = report_page("Ubuntu 22.04, Intel Xeon Platinum, 16 CPU cores, CUDA: H100 (driver 550)")
    assert docnumbers.machine(gpu) == "Intel Xeon Platinum, 16 cores, CUDA: H100 (driver 550)"
    note = "- Made with train.device: auto; this machine: Linux, AMD EPYC, 2 CPU cores, no GPU.\n"
    assert docnumbers.machine("## Notes\n\n" + note) == "AMD EPYC, 2 cores"  # table2.md's line
    assert docnumbers.machine("## Notes\n") is None
    assert docnumbers.report_figure(page, "ROC curves") == png(60, 50, "red")
    with pytest.raises(ValueError, match="no figure 'PR curves'"):
        docnumbers.report_figure(page, "PR curves")
    overview = docnumbers.overview_from_report(page, width=700).convert("RGB")
    assert overview.size == (82, 50)  # both at the smaller height, side by side, a 2 px gap
    assert (
        overview.getpixel((5, 25))[0] > 200 and overview.getpixel((overview.width - 5, 25))[2] > 200
    )


def test_refresh_rewrites_the_pages_and_the_figure_from_one_run(tmp_path, monkeypatch):
    monkeypatch.setattr(docnumbers, "find_chromium", lambda: None)  # no screenshot here
    record = metrics_of(
        {"baseline": 90.0, "yolo": 93.5, "stn": 90.4}, {"yolo": (3.5, 1e-4), "stn": (0.4, 0.6)}
    )
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "metrics.json").write_text(json.dumps(record))
    for setting in ("baseline", "yolo", "stn"):
        for fold in range(3):
            run = tmp_path / "reports" / "runs" / setting / f"fold{fold}"
            (run / "live").mkdir(parents=True)
            (run / "metrics.json").write_text(
                json.dumps({"best_epoch": 7, "epochs": 7, "val_auc": 0.9, "test_auc": 0.91})
            )
            live = {"train": {"loss": 0.25}, "val": {"auc": 0.89}}
            (run / "live" / "metrics.json").write_text(json.dumps(live))
    # the figures from the report, the machine from table2.md's notes (the report's HTML
    # names another, which must not be read)
    page = report_page("Linux, Other CPU, 8 CPU cores, no GPU")
    (tmp_path / "reports" / "report.html").write_text(page)
    made = "- Made with train.device: auto; this machine: Linux, AMD EPYC, 2 CPU cores, no GPU.\n"
    (tmp_path / "reports" / "table2.md").write_text("## Notes\n\n" + made)
    (tmp_path / "params.yaml").write_text("eval:\n  recall: 0.9\n")
    (tmp_path / "docs").mkdir()
    empty = "<!-- NUMBERS:{0}:BEGIN -->\n<!-- NUMBERS:{0}:END -->\n"
    (tmp_path / "README.md").write_text("# x\n" + empty.format("verdict") + empty.format("table2"))
    (tmp_path / "docs" / "results.md").write_text(
        empty.format("table2-full") + empty.format("runs")
    )

    written = docnumbers.refresh(tmp_path)
    assert {p.relative_to(tmp_path).as_posix() for p in written} == {
        "README.md",
        "docs/results.md",
        "docs/figures/overview.png",
    }
    readme = (tmp_path / "README.md").read_text()
    assert "thorax crop is worth +3.5 points" in readme
    assert "Precision at 90 % recall" in readme and "(AMD EPYC, 2 cores)" in readme
    table = markdown_tables(blocks(readme)["table2"])[0]
    assert table_mismatches(table, record, README_ROWS, 0.9) == []
    results = (tmp_path / "docs" / "results.md").read_text()
    assert "| stn 2 | 0.250 | 0.900 | 0.890 | 0.910 | 7 of 7 |" in results
    assert "the last epoch in 9 of the 9 runs" in results
    assert docnumbers.refresh(tmp_path) == [tmp_path / "docs/figures/overview.png"]  # settled
    assert Run(record, docnumbers.runs_of(tmp_path), 0.9).n_folds == 3
