"""The default run's numbers in the README and docs/, written from the committed reports/.

    make docs-numbers        (python -m cxrstn.docnumbers [--root DIR] [--machine TEXT])

Every number the README and docs/results.md quote from the default run sits between two
markers, `<!-- NUMBERS:<name>:BEGIN ... -->` and `<!-- NUMBERS:<name>:END -->`, and is
written here from one run's files: `reports/metrics.json` (Table II, the paired tests,
where each setting looks), `reports/table2.md` (the report's own rounding of the same
cells, and the CPU the run was made on), `reports/runs/<setting>/fold<k>/` (each run's
training) and `reports/report.html` (the ROC and ROI figures that
`docs/figures/overview.png`, the README's picture, is composed of). With Chromium installed
it also keeps the report's first screen as `docs/figures/report.png`. So the README's
figure, its Table II and docs/results.md's all come from the same run, and
`tests/test_numbers.py` checks each cell against `reports/metrics.json`.

Run it after a default `dvc repro` (or `make repro`) has written reports/, and commit the
refilled pages and figures with that run's reports/ (metrics and table2.md are in git;
report.html, 2.6 MB, is a DVC output like the figures). The sentences it writes are chosen
by the numbers (a difference with DeLong p >= 0.05 is "within chance"; a window whose
centre and height correlate with the lung box's at r < 0.5 is "no per-image window"), so
they stay true when the numbers move.
"""

from __future__ import annotations

import argparse
import base64
import html as html_lib
import io
import json
import math
import os
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import yaml

from cxrstn.browser import find_chromium, visit
from cxrstn.settings import SETTINGS, SHORT_NAMES

BLOCK = re.compile(
    r"(?P<open><!-- NUMBERS:(?P<name>[a-z0-9-]+):BEGIN\b[^>]*-->\n)"
    r"(?P<body>.*?)"
    r"(?P<close><!-- NUMBERS:(?P=name):END -->)",
    re.DOTALL,
)
"""A generated block of a Markdown page: its opening marker, its body and its closing marker."""

ALPHA = 0.05
"""A paired difference with DeLong p below this is called a difference; above, within chance."""

FOLLOWS = 0.5
"""A window follows the images when r with the lung box's centre or height reaches this
(the attention issue's target, docs/attention.md)."""

README_ROWS = (
    ("AUC", "auc", "percent"),
    ("PR-AUC", "pr_auc", "percent"),
    ("Precision at {recall} % recall", "precision", "percent"),
    ("window IoU with the lung box", "roi_iou", "share"),
)
"""Table II as the README shows it: (row title, metrics.json key, how it is printed)."""

FULL_ROWS = (
    *README_ROWS[:3],
    ("TP rate", "tp_rate", "percent"),
    ("FP rate", "fp_rate", "percent"),
    ("TN rate", "tn_rate", "percent"),
    ("FN rate", "fn_rate", "percent"),
    README_ROWS[3],
    ("share of the lung box inside the window", "roi_lung_coverage", "share"),
    ("r, window centre with the lung box's", "roi_r_centre", "r"),
    ("r, window height with the lung box's", "roi_r_height", "r"),
    ("spread of the window's centre, share of the lung boxes'", "roi_spread_centre", "r"),
)
"""docs/results.md's Table II: the paper's seven rows and every window measure."""


# Pages and their blocks --------------------------------------------------------------


def blocks(text: str) -> dict[str, str]:
    """Body of every generated block of a page, by name."""
    found = {}
    for match in BLOCK.finditer(text):
        if match["name"] in found:
            raise ValueError(f"block {match['name']} appears twice")
        found[match["name"]] = match["body"]
    opened = set(re.findall(r"<!-- NUMBERS:([a-z0-9-]+):BEGIN", text))
    if opened != set(found):
        raise ValueError(f"blocks without their END marker: {sorted(opened - set(found))}")
    return found


def replace_blocks(text: str, bodies: dict[str, str]) -> str:
    """The page with each named block's body replaced; every name must be on the page."""
    missing = set(bodies) - set(blocks(text))
    if missing:
        raise ValueError(f"no block named {sorted(missing)} on the page")

    def fill(match: re.Match) -> str:
        if match["name"] not in bodies:
            return match[0]
        body = bodies[match["name"]].rstrip("\n") + "\n"
        return match["open"] + body + match["close"]

    return BLOCK.sub(fill, text)


def markdown_tables(text: str) -> list[list[list[str]]]:
    """Every pipe table of a Markdown text as rows of stripped cells (separator rows dropped)."""
    tables, current = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", cell) for cell in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


# Reading the run ----------------------------------------------------------------------


def load_metrics(root: Path) -> dict:
    return json.loads((root / "reports" / "metrics.json").read_text())


def settings_of(metrics: dict) -> list[str]:
    """The settings metrics.json holds: the paper's three in their order, then any other."""
    present = [key for key in metrics if key != "paired"]
    return [s for s in SETTINGS if s in present] + [s for s in present if s not in SETTINGS]


def short_name(setting: str) -> str:
    return SHORT_NAMES.get(setting, setting)


def runs_of(root: Path) -> dict[tuple[str, int], dict]:
    """(setting, fold) -> the run's metrics.json with its last epoch's logged values added
    (`last_train_loss`, `last_val_auc` from dvclive's live/metrics.json)."""
    runs = {}
    for path in sorted((root / "reports" / "runs").glob("*/fold*/metrics.json")):
        setting, fold = path.parent.parent.name, int(path.parent.name.removeprefix("fold"))
        record = json.loads(path.read_text())
        live = path.parent / "live" / "metrics.json"
        if live.is_file():
            logged = json.loads(live.read_text())
            record["last_train_loss"] = logged.get("train", {}).get("loss")
            record["last_val_auc"] = logged.get("val", {}).get("auc")
        runs[setting, fold] = record
    return runs


def machine(text: str) -> str | None:
    """'<CPU model>, <n> cores[, <GPU>]' from the line the report stage writes into
    reports/table2.md's notes and its HTML provenance, "this machine: <os>, <cpu>, <n> CPU
    cores, <GPU>" (None when absent)."""
    match = re.search(r"this machine: ([^<\n]*?)\.?(?:</td>|$)", text, re.MULTILINE)
    if not match:
        return None
    parts = [p.strip() for p in html_lib.unescape(match[1]).split(",")]
    if len(parts) < 4:
        return None
    cpu, cores, accelerator = parts[-3], parts[-2].replace(" CPU cores", " cores"), parts[-1]
    return f"{cpu}, {cores}" + ("" if accelerator == "no GPU" else f", {accelerator}")


def report_figure(report_html: str, alt: str) -> bytes:
    """The PNG the report embeds under `alt` (e.g. 'ROC curves', 'ROI examples')."""
    pattern = rf'<img alt="{re.escape(html_lib.escape(alt))}" src="data:image/png;base64,([^"]+)"'
    match = re.search(pattern, report_html)
    if not match:
        raise ValueError(f"the report has no figure '{alt}'")
    return base64.b64decode(match[1])


# Checking a table against metrics.json -----------------------------------------------------

TOLERANCE = {"percent": 0.0051, "share": 0.051, "r": 0.0051}
"""How far a printed cell may be from metrics.json: half its last printed digit, plus the
rounding of metrics.json's own 4 decimals."""


def parse_cell(text: str, kind: str) -> tuple[float, float | None]:
    """(mean, std) of a printed cell ('92.23 ± 1.03', '42.7', '-0.13'); std None without ±."""
    match = re.fullmatch(r"\s*([-+]?\d+(?:\.\d+)?)(?:\s*±\s*(\d+(?:\.\d+)?))?\s*", text)
    if not match:
        raise ValueError(f"not a number: {text!r}")
    mean = float(match[1]) / (100 if kind == "share" else 1)
    return mean, None if match[2] is None else float(match[2])


def table_mismatches(rows: list[list[str]], metrics: dict, spec, recall: float) -> list[str]:
    """Every cell of a printed Table II (header row first, settings by their short names)
    that differs from metrics.json by more than its rounding; also a setting that
    metrics.json has and the table lacks, or the other way round. [] when all agree."""
    header, *body = rows
    by_name = {short_name(s): s for s in settings_of(metrics)}
    columns = [by_name.get(name) for name in header[1:]]
    problems = [
        f"column {name!r}: no such setting in metrics.json"
        for name, s in zip(header[1:], columns, strict=True)
        if s is None
    ]
    missing = set(settings_of(metrics)) - set(columns)
    problems += [f"setting {s} of metrics.json has no column" for s in sorted(missing)]
    titles = {title.format(recall=f"{100 * recall:g}"): (key, kind) for title, key, kind in spec}
    seen = set()
    for row in body:
        if row[0] not in titles:
            problems.append(f"row {row[0]!r}: not a Table II row")
            continue
        key, kind = titles[row[0]]
        seen.add(row[0])
        for setting, text in zip(columns, row[1:], strict=False):
            if setting is None:
                continue
            where = f"{row[0]} / {short_name(setting)}"
            value = metrics[setting].get(key)
            if text == "n/a" or value is None:
                if not (text == "n/a" and value is None):
                    problems.append(f"{where}: {text!r}, metrics.json {value}")
                continue
            mean, std = parse_cell(text, kind)
            if abs(mean - value["mean"]) > TOLERANCE[kind] / (100 if kind == "share" else 1):
                problems.append(f"{where}: mean {text!r}, metrics.json {value['mean']}")
            if kind == "percent" and (std is None or abs(std - value["std"]) > TOLERANCE[kind]):
                problems.append(f"{where}: std {text!r}, metrics.json {value['std']}")
    problems += [f"row {title!r} missing" for title in titles if title not in seen]
    return problems


def report_table_mismatches(rows: list[list[str]], metrics: dict) -> list[str]:
    """The report's Table II (reports/report.html's or reports/table2.md's first table:
    'Metric (%)', then each setting's full title, each followed by the paper's column)
    against metrics.json: every Table II metric of every setting, to its rounding."""
    from cxrstn.metrics import SUMMARY_METRICS
    from cxrstn.report import METRIC_TITLES
    from cxrstn.settings import TITLES

    title_to_key = {METRIC_TITLES[key]: key for key in SUMMARY_METRICS}
    title_to_setting = {TITLES.get(s, s): s for s in settings_of(metrics)}
    header, *body = rows
    printed = {}
    for row in body:
        if row[0] in title_to_key:
            for column, text in zip(header[1:], row[1:], strict=False):
                if column in title_to_setting:
                    printed[title_to_setting[column], title_to_key[row[0]]] = text
    problems = []
    for setting in settings_of(metrics):
        for key in SUMMARY_METRICS:
            text = printed.get((setting, key))
            value = metrics[setting].get(key)
            where = f"{METRIC_TITLES[key]} / {TITLES.get(setting, setting)}"
            if text is None:
                problems.append(f"{where}: not in the table")
                continue
            if value is None:
                problems.append(f"{where}: {text!r}, not in metrics.json")
                continue
            mean, std = parse_cell(text, "percent")
            if abs(mean - value["mean"]) > TOLERANCE["percent"] or (
                std is None or abs(std - value["std"]) > TOLERANCE["percent"]
            ):
                problems.append(f"{where}: {text!r}, metrics.json {value}")
    return problems


# Numbers as text ------------------------------------------------------------------------


def report_cells(table2_md: str) -> dict[tuple[str, str], str]:
    """(setting, metrics key) -> the cell of the report's own Table II (`reports/table2.md`,
    its first table: ours beside the paper's), as the report rounded it from the folds."""
    from cxrstn.report import METRIC_TITLES
    from cxrstn.settings import TITLES

    tables = markdown_tables(table2_md)
    if not tables:
        return {}
    header, *rows = tables[0]
    setting_of = {title: setting for setting, title in TITLES.items()}
    key_of = {title: key for key, title in METRIC_TITLES.items()}
    cells = {}
    for row in rows:
        for column, text in zip(header[1:], row[1:], strict=False):
            if column in setting_of and row[0] in key_of:
                cells[setting_of[column], key_of[row[0]]] = text
    return cells


def cell(metrics: dict, setting: str, key: str, kind: str, reported: dict | None = None) -> str:
    """One cell: percent as 'mean ± std' (2 decimals; the report's own rounding from
    `reported` when it has the cell), a share as a percent (1 decimal), r to 2 decimals;
    'n/a' for a value the setting lacks."""
    if kind == "percent" and reported and (setting, key) in reported:
        return reported[setting, key]
    value = metrics.get(setting, {}).get(key)
    if value is None or value["mean"] is None or math.isnan(value["mean"]):
        return "n/a"
    if kind == "percent":
        return f"{value['mean']:.2f} ± {value['std']:.2f}"
    if kind == "share":
        return f"{100 * value['mean']:.1f}"
    return f"{value['mean']:.2f}"


def table(metrics: dict, rows, recall: float, reported: dict | None = None) -> str:
    settings = settings_of(metrics)
    lines = ["| % | " + " | ".join(short_name(s) for s in settings) + " |"]
    lines.append("|---|" + "---|" * len(settings))
    for title, key, kind in rows:
        title = title.format(recall=f"{100 * recall:g}")
        lines.append(
            f"| {title} | "
            + " | ".join(cell(metrics, s, key, kind, reported) for s in settings)
            + " |"
        )
    return "\n".join(lines)


def paired(metrics: dict, a: str, b: str) -> dict | None:
    """The paired test of b against a (difference b - a), whichever order it was stored in."""
    tests = metrics.get("paired", {})
    if f"{a}_vs_{b}" in tests:
        return tests[f"{a}_vs_{b}"]
    if f"{b}_vs_{a}" in tests:
        test = tests[f"{b}_vs_{a}"]
        return test | {
            "auc_diff": -test["auc_diff"],
            "ci_low": -test["ci_high"],
            "ci_high": -test["ci_low"],
        }
    return None


def p_text(p: float) -> str:
    if p is None or math.isnan(p):
        return "p n/a"
    return f"p {p:.2g}" if p >= 0.001 else f"p {p:.0e}".replace("e-0", "e-")


def differences(metrics: dict, with_interval: bool) -> str:
    """Each setting against the baseline: the AUC difference and its test, one clause each."""
    clauses = []
    for setting in settings_of(metrics):
        test = paired(metrics, "baseline", setting) if setting != "baseline" else None
        if test is None:
            continue
        clause = f"{short_name(setting)} {test['auc_diff']:+.1f} ({p_text(test['p'])}"
        if with_interval:
            clause += f", interval [{test['ci_low']:+.1f}, {test['ci_high']:+.1f}]"
        clauses.append(clause + ")")
    return "; ".join(clauses)


def follows(metrics: dict, setting: str) -> bool:
    values = [metrics[setting].get(k, {}).get("mean") for k in ("roi_r_centre", "roi_r_height")]
    return any(v is not None and v >= FOLLOWS for v in values)


def verdict(metrics: dict) -> str:
    """The one-sentence result: what the paper's STN does against the baseline, and what the
    thorax crop is worth. The words follow the numbers (ALPHA, FOLLOWS)."""
    parts = []
    if "stn" in metrics:
        window = (
            "learns a window that follows each image's lungs"
            if follows(metrics, "stn")
            else "learns no per-image window"
        )
        test = paired(metrics, "baseline", "stn")
        if test is None:
            parts.append(f"the paper's STN {window}")
        else:
            diff = test["auc_diff"]
            if test["p"] >= ALPHA:
                score = f"scores like the baseline ({diff:+.1f} AUC points, within chance)"
            else:
                side = "above" if diff > 0 else "below"
                score = f"scores {side} the baseline ({diff:+.1f} AUC points)"
            parts.append(f"the paper's STN {window} and {score}")
    crop = paired(metrics, "baseline", "yolo")
    if crop is not None:
        diff = crop["auc_diff"]
        if crop["p"] >= ALPHA:
            parts.append(f"the thorax crop's {diff:+.1f} points are within chance")
        elif diff > 0:
            parts.append(f"the thorax crop is worth {diff:+.1f} points")
        else:
            parts.append(f"the thorax crop costs {-diff:.1f} points")
    if not parts:
        raise ValueError("reports/metrics.json holds neither an stn nor a yolo comparison")
    return "On the default run " + ", while ".join(parts) + "." + _equivariant_clause(metrics)


def _equivariant_clause(metrics: dict) -> str:
    """What the fourth setting (stn_eq, not in the paper) adds, when it ran: whether its
    window follows the lungs, and its AUC against the baseline and the thorax crop."""
    if "stn_eq" not in metrics:
        return ""
    window = "follows each image's lungs" if follows(metrics, "stn_eq") else "follows no image"
    scores = []
    for other, name in (("baseline", "the baseline"), ("yolo", "the thorax crop")):
        test = paired(metrics, other, "stn_eq")
        if test is not None:
            chance = " (within chance)" if test["p"] >= ALPHA else ""
            unit = "" if scores else " AUC points"
            scores.append(f"{test['auc_diff']:+.1f}{unit} against {name}{chance}")
    score = f", and it scores {' and '.join(scores)}" if scores else ""
    return (
        f" With an equivariant window (not in the paper), the ST module's window {window}{score}."
    )


def source_line(machine_text: str | None, n_folds: int) -> str:
    where = f" ({machine_text})" if machine_text else ""
    return (
        f"Mean ± standard deviation over the {n_folds} test folds, from the committed "
        f"`reports/metrics.json`, written by `make docs-numbers` from that run{where}."
    )


def runs_block(runs: dict[tuple[str, int], dict]) -> str:
    """The per-run table (training loss, validation and test AUC, best epoch) and a summary."""
    lines = [
        "| run | last training loss | best val AUC | val AUC, last epoch | test AUC "
        "| best epoch of |",
        "|---|---|---|---|---|---|",
    ]
    order = {s: k for k, s in enumerate(SETTINGS)}
    keys = sorted(runs, key=lambda key: (order.get(key[0], len(order)), key[0], key[1]))
    for setting, fold in keys:
        run = runs[setting, fold]

        def number(name: str, digits: int, run=run) -> str:
            value = run.get(name)
            return "n/a" if value is None else f"{value:.{digits}f}"

        lines.append(
            f"| {setting} {fold} | {number('last_train_loss', 3)} | {number('val_auc', 3)} "
            f"| {number('last_val_auc', 3)} | {number('test_auc', 3)} "
            f"| {run.get('best_epoch', 'n/a')} of {run.get('epochs', 'n/a')} |"
        )
    losses = [r["last_train_loss"] for r in runs.values() if r.get("last_train_loss") is not None]
    best_val = [r["val_auc"] for r in runs.values() if r.get("val_auc") is not None]
    last = sum(1 for r in runs.values() if r.get("best_epoch") == r.get("epochs"))
    near_last = sum(1 for r in runs.values() if r.get("best_epoch", 0) >= r.get("epochs", 0) - 1)
    coin = math.log(2)
    stalled = [r for r in losses if r > coin - 0.1]
    summary = [
        f"{len(runs)} runs. Last training losses {min(losses):.2f}-{max(losses):.2f}"
        + (
            f", every one well below the coin-toss loss ln 2 = {coin:.3f}"
            if not stalled
            else f"; {len(stalled)} within 0.1 of the coin-toss loss ln 2 = {coin:.3f} (stalled)"
        )
        + f"; best validation AUC {min(best_val):.3f}-{max(best_val):.3f}. The model kept is "
        f"the epoch of best validation AUC: the last epoch in {last} of the {len(runs)} runs, "
        f"the last or the one before in {near_last}."
    ]
    return "\n".join(lines) + "\n\n" + wrap(" ".join(summary))


@dataclass
class Run:
    """One run's files, as the generated blocks quote them."""

    metrics: dict  # reports/metrics.json
    runs: dict  # runs_of(): (setting, fold) -> the run's metrics
    recall: float  # eval.recall of params.yaml: the operating point
    machine: str | None = None  # 'CPU, n cores' from the report's provenance
    reported: dict | None = None  # report_cells() of reports/table2.md, when present

    @property
    def n_folds(self) -> int:
        return len({fold for _, fold in self.runs})

    def table(self, rows) -> str:
        return table(self.metrics, rows, self.recall, self.reported)


def wrap(text: str) -> str:
    """A generated paragraph as the pages write prose: lines of at most 90 characters."""
    return textwrap.fill(text, width=90, break_long_words=False, break_on_hyphens=False)


def readme_bodies(run: Run) -> dict[str, str]:
    return {
        "verdict": wrap(f"**{verdict(run.metrics)}**"),
        "table2": "\n".join(
            [
                run.table(README_ROWS),
                "",
                wrap(
                    source_line(run.machine, run.n_folds)
                    + " AUC differences from the baseline, in points, with DeLong's paired "
                    "test over the folds: " + differences(run.metrics, with_interval=False) + "."
                ),
            ]
        ),
    }


def results_bodies(run: Run) -> dict[str, str]:
    return {
        "table2-full": "\n".join(
            [
                run.table(FULL_ROWS),
                "",
                wrap(
                    source_line(run.machine, run.n_folds)
                    + " The window rows: IoU and the lung box's share inside the window in "
                    "percent, r as a correlation across test images (0 for a window that "
                    "never moves)."
                ),
                "",
                wrap(
                    "AUC differences from the baseline in points, DeLong's paired test over "
                    "the folds and a 95 % patient-bootstrap interval: "
                    + differences(run.metrics, with_interval=True)
                    + "."
                ),
            ]
        ),
        "runs": runs_block(run.runs),
    }


# The README's figure ---------------------------------------------------------------------

GAP = 16  # white pixels between the two panels, at the output's scale


def compose_overview(roc, roi, width: int = 1200):
    """The ROC figure and the ROI examples side by side at one height, `width` pixels wide
    in all, with a 256-colour palette (a small PNG). `roc`, `roi`: paths or PNG bytes."""
    from PIL import Image

    panels = []
    for source in (roc, roi):
        if isinstance(source, bytes | bytearray):
            panels.append(Image.open(io.BytesIO(source)).convert("RGB"))
        else:
            if not Path(source).is_file():
                raise FileNotFoundError(f"{source}: figure not found (run `dvc repro` first)")
            panels.append(Image.open(source).convert("RGB"))
    height = min(panel.height for panel in panels)
    scaled = [
        panel.resize((round(panel.width * height / panel.height), height), Image.LANCZOS)
        for panel in panels
    ]
    gap = round(GAP * sum(p.width for p in scaled) / width)
    canvas = Image.new("RGB", (sum(p.width for p in scaled) + gap, height), "white")
    canvas.paste(scaled[0], (0, 0))
    canvas.paste(scaled[1], (scaled[0].width + gap, 0))
    if canvas.width > width:
        canvas = canvas.resize((width, round(height * width / canvas.width)), Image.LANCZOS)
    return canvas.quantize(colors=256, method=Image.Quantize.MEDIANCUT)


def overview_from_report(report_html: str, width: int = 1200):
    return compose_overview(
        report_figure(report_html, "ROC curves"), report_figure(report_html, "ROI examples"), width
    )


# All of it ----------------------------------------------------------------------------------

PAGES = {"README.md": readme_bodies, "docs/results.md": results_bodies}
OVERVIEW = Path("docs/figures/overview.png")
SCREENSHOT = Path("docs/figures/report.png")
REPORT = Path("reports/report.html")
TABLE2 = Path("reports/table2.md")


def load_run(root: str | os.PathLike = ".", machine_text: str | None = None) -> Run:
    """The run whose files are under `root`/reports (and its params.yaml)."""
    root = Path(root)
    runs = runs_of(root)
    if not runs:
        raise FileNotFoundError(f"{root / 'reports/runs'}: no run's metrics.json")
    params = yaml.safe_load((root / "params.yaml").read_text())
    table2 = root / TABLE2
    if table2.is_file():  # in git, unlike report.html (a DVC output): a fresh clone has it
        machine_text = machine(table2.read_text()) or machine_text
    return Run(
        metrics=load_metrics(root),
        runs=runs,
        recall=float(params["eval"]["recall"]),
        machine=machine_text,
        reported=report_cells(table2.read_text()) if table2.is_file() else None,
    )


def refresh(root: str | os.PathLike = ".", machine_text: str | None = None) -> list[Path]:
    """Refill every generated block and the README's figure from `root`/reports; returns
    the files written. Without reports/report.html the figure is left as it is and
    `machine_text` (if any) names the machine."""
    root = Path(root)
    run = load_run(root, machine_text)
    written = []
    for page, make in PAGES.items():
        path = root / page
        text = path.read_text()
        new = replace_blocks(text, make(run))
        if new != text:
            path.write_text(new)
            written.append(path)
    report = root / REPORT
    if report.is_file():
        out = root / OVERVIEW
        out.parent.mkdir(parents=True, exist_ok=True)
        overview_from_report(report.read_text()).save(out, optimize=True)
        written.append(out)
        if find_chromium() is not None:  # the report's first screen, as a reader opens it
            visit(report, screenshot=root / SCREENSHOT)
            written.append(root / SCREENSHOT)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(), help="the project folder")
    parser.add_argument(
        "--machine",
        help="the CPU the run was made on, when reports/table2.md (which records it) does not",
    )
    args = parser.parse_args(argv)
    try:
        written = refresh(args.root, args.machine)
    except (FileNotFoundError, ValueError, KeyError) as error:
        sys.exit(f"error: {error}")
    if not (args.root / REPORT).is_file():
        print(
            f"note: {REPORT} absent: {OVERVIEW} and {SCREENSHOT} left as they are", file=sys.stderr
        )
    elif find_chromium() is None:
        print(
            f"note: no Chromium (apt-get install chromium): {SCREENSHOT} left as it is",
            file=sys.stderr,
        )
    for path in written:
        print(f"wrote {path}")
    if not written:
        print("nothing changed")


if __name__ == "__main__":
    main()
