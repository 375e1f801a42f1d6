"""Stage phantom: write the embedded default data in the four original formats.

Outputs `data/phantom/` (CheXpert-v1.0-small, JSRT + SCR, MontgomerySet, ChinaSet_AllFiles
and shenzhen_masks look-alikes, plus `truth.csv`: what was drawn on every image) and the
contact sheet `reports/figures/phantom_contact_sheet.png`.
"""

from cxrstn.runtime import configure_tools, run_stage

configure_tools()  # before the libraries below read their settings

import time

from cxrstn.io import atomic_path, load_params
from cxrstn.phantom import contact_sheet, generate

OUT = "data/phantom"
SHEET = "reports/figures/phantom_contact_sheet.png"


def main() -> None:
    params = load_params()["phantom"]
    start = time.perf_counter()
    with atomic_path(OUT) as tmp:
        truth = generate(params, tmp)
    contact_sheet(OUT, SHEET)
    chexpert = truth[truth["dataset"] == "chexpert"]
    pa = chexpert[chexpert["view"] == "PA"]
    print(
        f"phantom: {len(truth)} images in {time.perf_counter() - start:.1f} s; CheXpert "
        f"{len(chexpert)} ({len(pa)} PA: {int((pa['label'] == 0).sum())} normal, "
        f"{int((pa['label'] == 1).sum())} abnormal), "
        + ", ".join(
            f"{name} {int((truth['dataset'] == name).sum())}"
            for name in ("jsrt", "montgomery", "shenzhen")
        )
    )


if __name__ == "__main__":
    run_stage(main)
