"""bench/attention_table.py: issue 33's table from `dvc exp show --json`."""

import json
from pathlib import Path

from conftest import load_bench

ROOT = Path(__file__).resolve().parents[1]
attention_table = load_bench("attention_table")


def _data(auc: float, slopes: list[float], with_eq: bool = True) -> dict:
    def summary(value):
        return {"mean": value, "std": 0.5}

    settings = {"baseline": 92.0, "yolo": 95.0, "stn": auc} | ({"stn_eq": 95.2} if with_eq else {})
    metrics = {
        s: {
            "auc": summary(v),
            "roi_iou": summary(0.43 if s != "stn_eq" else 0.75),
            "roi_lung_coverage": summary(1.0),
            "roi_r_centre": summary(0.0 if s != "stn_eq" else 0.95),
            "roi_r_height": summary(0.0 if s != "stn_eq" else 0.84),
            "roi_spread_centre": summary(0.0 if s != "stn_eq" else 0.77),
        }
        for s, v in settings.items()
    }
    metrics["paired"] = {
        "baseline_vs_stn": {"auc_diff": auc - 92.0, "p": 0.5},
        "yolo_vs_stn": {"auc_diff": auc - 95.0, "p": 0.01},
    }
    files = {"reports/metrics.json": {"data": metrics}}
    for k, slope in enumerate(slopes):
        files[f"reports/runs/stn/fold{k}/metrics.json"] = {
            "data": {"test_equivariance_slope": slope}
        }
    return {"metrics": files}


def test_one_row_per_run_and_st_setting_with_the_slope_averaged_over_folds(tmp_path):
    shown = [
        {"rev": "workspace", "data": _data(90.0, [])},
        {
            "rev": "63662a99b0",
            "name": None,
            "data": _data(92.5, [0.0, 0.0]),
            "experiments": [
                {"revs": [{"rev": "754d716", "name": "eq-alone", "data": _data(91.0, [0.2, 0.4])}]},
                {"revs": [{"rev": "9c47ffd", "name": "queued", "data": None}]},
            ],
        },
    ]
    table = attention_table.rows(shown)
    assert [(r["run"], r["setting"]) for r in table] == [
        ("63662a9", "stn"),
        ("63662a9", "stn_eq"),
        ("eq-alone", "stn"),
        ("eq-alone", "stn_eq"),
    ]
    alone = table[2]
    assert alone["AUC"] == "91.00 ± 0.50" and alone["slope"] == "0.30"
    assert alone["vs baseline (p)"] == "-1.00 (0.5)" and alone["vs yolo (p)"] == "-4.00 (0.01)"
    assert table[1]["r centre / height"] == "0.95 / 0.84" and table[1]["slope"] == ""
    lines = attention_table.markdown(table).splitlines()
    assert len(lines) == 2 + 4 and lines[0].startswith("| run | setting | AUC |")
    path = tmp_path / "exps.json"
    path.write_text(json.dumps(shown))
    assert attention_table.main(["--json", str(path), "--settings", "stn"]) == 0


def test_a_docs_only_commit_shows_its_experiments_and_not_the_same_run_twice(tmp_path):
    """Experiments queued on a commit that changed only docs hang off that commit: its own
    row is the earlier commit's run, shown once; a commit with other metrics keeps its row."""
    run = {"rev": "5e79430aaa", "data": _data(92.5, []), "experiments": []}
    docs_only = {
        "rev": "ff1e833bbb",
        "data": _data(92.5, []),
        "experiments": [{"revs": [{"rev": "45b7a68", "name": "nosc", "data": _data(90.0, [])}]}],
    }
    other = {"rev": "abcdef0ccc", "data": _data(93.0, []), "experiments": []}
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps([run]))
    second.write_text(json.dumps([docs_only, other]))
    shown = json.loads(first.read_text()) + json.loads(second.read_text())
    names = [r["run"] for r in attention_table.rows(shown, ["stn"])]
    assert names == ["5e79430", "nosc", "abcdef0"]
    assert attention_table.main(["--json", str(first), str(second), "--settings", "stn"]) == 0
