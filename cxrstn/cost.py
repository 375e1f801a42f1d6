"""Compute cost of the three settings: parameters, FLOPs and wall time, from the json files.

The paper claims the STN is cheaper than a thorax detector plus classifier; these tables
put the measured numbers side by side. The keys are those the training stage writes to each
run's metrics.json (`n_params`, `gflops_classifier`, `gflops_st`, `train_seconds`) and the
detector stage to reports/detector.json (`n_params`, `gflops`, `train_seconds`).
"""

from __future__ import annotations

import numpy as np

from cxrstn.settings import SHORT_NAMES, ST_SETTINGS, TITLES


def _get(record: dict | None, key: str):
    """`record[key]`, or None for a report that is absent (its stage was not run)."""
    return None if record is None else record.get(key)


def _fmt(value, unit: str = "", digits: int = 2) -> str:
    return "n/a" if value is None else f"{float(value):,.{digits}f}{unit}"


def _count(value) -> str:
    return "n/a" if value is None else f"{round(float(value)):,}"


def _mean_of(run_info: dict, setting: str, key: str):
    values = [info.get(key) for (s, _), info in run_info.items() if s == setting]
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _sum_of(run_info: dict, setting: str, key: str):
    values = [info.get(key) for (s, _), info in run_info.items() if s == setting]
    values = [v for v in values if v is not None]
    return float(np.sum(values)) if values else None


def cost_rows(run_info: dict, detector: dict | None, crop: dict | None) -> dict:
    """The compute-cost tables: per component, and per setting end to end.

    `run_info` maps (setting, fold) to the run's metrics.json. Per-run numbers are
    averaged over folds; training times are also summed over folds per setting.
    """
    settings = list(dict.fromkeys(s for s, _ in run_info))
    n_folds = {s: sum(1 for k, _ in run_info if k == s) for s in settings}
    classifier_gflops = {s: _mean_of(run_info, s, "gflops_classifier") for s in settings}
    params = {s: _mean_of(run_info, s, "n_params") for s in settings}
    seconds = {s: _sum_of(run_info, s, "train_seconds") for s in settings}
    st = next((s for s in ST_SETTINGS if s in settings), None)  # every ST module is alike
    st_gflops = _mean_of(run_info, st, "gflops_st") if st else None
    st_params = None
    if st and params.get(st) and params.get("baseline"):
        st_params = params[st] - params["baseline"]  # same classifier in both

    components = []
    if detector is None:
        components.append(
            ["YOLO thorax detector", "not run", "", "", "reports/detector.json missing"]
        )
    else:
        components.append(
            [
                "YOLO thorax detector",
                _count(detector.get("n_params")),
                _fmt(detector.get("gflops")),
                _fmt(detector.get("train_seconds"), " s", 0),
                f"mAP@0.5 {_fmt(_percent(detector.get('map50')))}%, "
                f"mAP@0.5:0.95 {_fmt(_percent(detector.get('map50_95')))}%",
            ]
        )
    if crop is None:
        components.append(
            ["Cropping (detector on every image)", "", "", "not run", "reports/crop.json missing"]
        )
    else:
        components.append(
            [
                "Cropping (detector on every image)",
                "",
                "",
                _fmt(_get(crop, "seconds"), " s", 0),
                f"{_count(_get(crop, 'images'))} images",
            ]
        )
    for setting in settings:
        title = f"{SHORT_NAMES[setting]}: ST module + VGG16" if setting in ST_SETTINGS else None
        title = title or f"VGG16 ({setting})"
        gflops = classifier_gflops[setting]
        if setting in ST_SETTINGS and gflops is not None and st_gflops is not None:
            gflops += st_gflops
        components.append(
            [
                title,
                _count(params[setting]),
                _fmt(gflops),
                f"{_fmt(seconds[setting], ' s', 0)} for {n_folds[setting]} folds",
                "training at "
                + _fmt(_mean_of(run_info, setting, "train_images_per_second"), " images/s", 1),
            ]
        )
    if st:
        components.append(
            [
                "of which the ST module",
                _count(st_params),
                _fmt(st_gflops),
                "trained with the classifier",
                f"n_params of the {st} runs minus the baseline's (same classifier)",
            ]
        )

    totals, rows = {}, []
    for setting in settings:
        n_params, gflops, train = params[setting], classifier_gflops[setting], seconds[setting]
        models = "VGG16"
        if setting == "yolo":
            models = "YOLO detector, then VGG16 on crops"
            n_params = _add(n_params, _get(detector, "n_params"))
            gflops = _add(gflops, _get(detector, "gflops"))
            train = _add(train, _get(detector, "train_seconds"), _get(crop, "seconds"))
        if setting in ST_SETTINGS:
            models = "ST module + VGG16, one network"
            gflops = _add(gflops, st_gflops)
        totals[setting] = (n_params, gflops, train)
        rows.append([TITLES[setting], models, _count(n_params), _fmt(gflops), _fmt(train, " s", 0)])
    return {
        "comparison": _extra_over_baseline(totals),
        "components": (
            ["Component", "Parameters", "GFLOPs per image", "Training time", "Note"],
            components,
        ),
        "totals": (
            [
                "Setting",
                "What is trained",
                "Parameters at inference",
                "GFLOPs per image at inference",
                "Training time, all folds",
            ],
            rows,
        ),
    }


def _extra_over_baseline(totals: dict) -> str:
    """A sentence with what the yolo and stn settings add to the baseline's cost."""
    if "baseline" not in totals:
        return "No baseline run to compare the costs with."
    parts = []
    for setting in ("yolo", *ST_SETTINGS):
        if setting not in totals:
            continue
        extra = [
            None if ours is None or base is None else ours - base
            for ours, base in zip(totals[setting], totals["baseline"], strict=True)
        ]
        parts.append(
            f"the {TITLES[setting]} setting adds {_count(extra[0])} parameters, "
            f"{_fmt(extra[1], ' GFLOPs', 3)} per image and {_fmt(extra[2], ' s', 0)} of training"
        )
    if not parts:
        return "Only the baseline was run."
    return "Over the baseline, " + "; ".join(parts) + " (all folds)."


def _percent(value):
    return None if value is None else 100 * float(value)


def _add(*values):
    """Sum, or None when any part is unknown (an unknown cost must not look like zero)."""
    return None if any(v is None for v in values) else float(sum(values))
