"""The settings the study compares, and the names tables and figures give them."""

SETTINGS = ("baseline", "yolo", "stn", "stn_eq")
"""In the paper's order: whole image, YOLO thorax crop, ST module before the classifier; then
`stn_eq`, the same ST module whose window follows each image by an equivariance term (not in
the paper; docs/attention.md)."""

ST_SETTINGS = ("stn", "stn_eq")
"""The settings whose model is an STN. Each reads its ST module's parameters from the
params.yaml section of its own name (`stn:`, `stn_eq:`), so that changing one re-runs only
its own training stages."""

TITLES = {
    "baseline": "Baseline",
    "yolo": "Baseline with thorax detection (YOLO)",
    "stn": "Proposed STN",
    "stn_eq": "STN with an equivariant window (not in the paper)",
}
"""Row names of Table II, as the paper names its settings."""

SHORT_NAMES = {
    "baseline": "Baseline",
    "yolo": "YOLO crop",
    "stn": "STN",
    "stn_eq": "STN, equivariant",
}
"""Names in figure legends and titles."""


def run_settings(params: dict) -> list[str]:
    """The settings a run with these params trains and compares, in `SETTINGS` order: the
    paper's three always, stn_eq only on the folds `split.stn_eq_fold_ids` lists (none by
    default, every fold in params.attention.yaml). Read from the params, not from the runs
    on disk: the runs of an earlier experiment stay there after its params are gone."""
    return [s for s in SETTINGS if s != "stn_eq" or params["split"]["stn_eq_fold_ids"]]
