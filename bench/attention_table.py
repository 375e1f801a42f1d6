"""Issue 33's table: how each ST setting of each DVC experiment frames the lungs and scores.

    python bench/attention_table.py [--rev HEAD ...] [--json exps.json ...] [--settings stn stn_eq]

Reads `dvc exp show --json` for each commit (or files it wrote) and prints one markdown row
per experiment and ST setting: AUC (mean ± std over the folds) with its DeLong difference
from the baseline and p, the difference from yolo, the window's IoU with the lung box and
the share of the lung box it holds, Pearson r of its vertical centre and height with the
lung box's, how far its centre spreads across test images as a share of the lung boxes'
spread, and the equivariance slope (each run's `test_equivariance_slope`, mean over the
folds: 1 when the window moves with the image's content, 0 when it stays put). The
committed run is the row named after the commit; each experiment keeps the name given to
`dvc exp run --name`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cxrstn.settings import ST_SETTINGS  # noqa: E402

COLUMNS = (
    "run",
    "setting",
    "AUC",
    "vs baseline (p)",
    "vs yolo (p)",
    "IoU",
    "lung coverage",
    "r centre / height",
    "centre spread",
    "slope",
)


def _mean(metrics: dict, setting: str, key: str) -> float | None:
    return metrics.get(setting, {}).get(key, {}).get("mean")


def _paired(metrics: dict, a: str, b: str) -> str:
    test = metrics.get("paired", {}).get(f"{a}_vs_{b}")
    return "" if test is None else f"{test['auc_diff']:+.2f} ({test['p']:.2g})"


def row(name: str, data: dict, setting: str) -> dict | None:
    """One table row from an experiment's `data` (as `dvc exp show --json` gives it), or
    None when the setting did not run there."""
    files = data.get("metrics") or {}
    metrics = (files.get("reports/metrics.json") or {}).get("data") or {}
    if setting not in metrics:
        return None
    slopes = [
        (files.get(f"reports/runs/{setting}/fold{k}/metrics.json") or {})
        .get("data", {})
        .get("test_equivariance_slope")
        for k in range(100)
    ]
    slopes = [s for s in slopes if s is not None]
    auc = metrics[setting]["auc"]
    values = {key: _mean(metrics, setting, key) for key in ("roi_iou", "roi_lung_coverage")}
    r = [_mean(metrics, setting, key) for key in ("roi_r_centre", "roi_r_height")]
    spread = _mean(metrics, setting, "roi_spread_centre")
    return {
        "run": name,
        "setting": setting,
        "AUC": f"{auc['mean']:.2f} ± {auc['std']:.2f}",
        "vs baseline (p)": _paired(metrics, "baseline", setting),
        "vs yolo (p)": _paired(metrics, "yolo", setting),
        "IoU": f"{values['roi_iou']:.2f}",
        "lung coverage": f"{values['roi_lung_coverage']:.2f}",
        "r centre / height": f"{r[0]:.2f} / {r[1]:.2f}",
        "centre spread": "" if spread is None else f"{spread:.2f}",
        "slope": f"{sum(slopes) / len(slopes):.2f}" if slopes else "",
    }


def _metrics(data: dict) -> dict | None:
    return ((data.get("metrics") or {}).get("reports/metrics.json") or {}).get("data")


def rows(shown: list, settings=ST_SETTINGS) -> list[dict]:
    """Rows for the committed runs and each of their experiments, in `dvc exp show` order.
    A commit whose metrics equal an earlier one's (a commit that changed only docs) is the
    same run: its experiments are shown, its own row once."""
    found, seen = [], []
    for commit in shown:
        if commit["rev"] == "workspace":
            continue
        runs = []
        if _metrics(commit["data"]) not in seen:
            seen.append(_metrics(commit["data"]))
            runs.append((commit.get("name") or commit["rev"][:7], commit["data"]))
        for experiment in commit.get("experiments") or []:
            revision = experiment["revs"][0]
            if revision.get("data"):
                runs.append((revision.get("name") or revision["rev"][:7], revision["data"]))
        for name, data in runs:
            found += [r for s in settings if (r := row(name, data, s)) is not None]
    return found


def markdown(table: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(r[c] for c in COLUMNS) + " |" for r in table]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rev", nargs="+", default=["HEAD"], help="the commits whose experiments to show"
    )
    parser.add_argument(
        "--json", nargs="+", type=Path, help="read these `dvc exp show --json` outputs instead"
    )
    parser.add_argument("--settings", nargs="+", default=list(ST_SETTINGS))
    args = parser.parse_args(argv)
    shown = []
    if args.json:
        for path in args.json:
            shown += json.loads(path.read_text())
    else:
        for rev in args.rev:
            command = ["dvc", "exp", "show", "--json", "--rev", rev]
            output = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
            shown += json.loads(output.stdout)
    print(markdown(rows(shown, args.settings)))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    sys.exit(main())
