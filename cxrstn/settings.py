"""The three settings the study compares, and the names tables and figures give them."""

SETTINGS = ("baseline", "yolo", "stn")
"""In the paper's order: whole image, YOLO thorax crop, ST module before the classifier."""

TITLES = {
    "baseline": "Baseline",
    "yolo": "Baseline with thorax detection (YOLO)",
    "stn": "Proposed STN",
}
"""Row names of Table II, as the paper names the settings."""

SHORT_NAMES = {"baseline": "Baseline", "yolo": "YOLO crop", "stn": "STN"}
"""Names in figure legends and titles."""
