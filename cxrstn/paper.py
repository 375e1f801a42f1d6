"""The published numbers of the paper this pipeline reproduces, in one place.

Table I (label counts of the PA CheXpert subset) drives the phantom's label frequencies
and stands beside ours in the report; Table II (mean ± std over five folds, percent)
stands beside our Table II.
"""

# Table I: 5,508 normal and 22,146 abnormal PA images; images per finding (U-Ones).
TABLE_I_NORMAL = 5508
TABLE_I_ABNORMAL = 22146
TABLE_I = {
    "Enlarged Cardiomediastinum": 3297,
    "Cardiomegaly": 4044,
    "Lung Opacity": 10794,
    "Lung Lesion": 2482,
    "Edema": 2547,
    "Consolidation": 4312,
    "Pneumonia": 3469,
    "Atelectasis": 6440,
    "Pneumothorax": 2223,
    "Pleural Effusion": 9880,
    "Pleural Other": 1776,
    "Fracture": 1540,
}

# Table II of the paper, percent, (mean, std) over five folds. The extracted text prints
# "±" as "4", "+", "1" or "40" ("83.2140.69" = 83.21 ± 0.69); see report.PAPER_NOTE.
PAPER_TABLE2 = {
    "baseline": {
        "auc": (83.21, 0.69),
        "pr_auc": (94.78, 0.29),
        "precision": (84.33, 0.39),
        "tp_rate": (76.06, 0.04),
        "fp_rate": (14.14, 0.50),
        "tn_rate": (5.78, 0.96),
        "fn_rate": (4.02, 0.05),
    },
    "yolo": {
        "auc": (83.98, 0.75),
        "pr_auc": (95.12, 0.28),
        "precision": (85.00, 0.42),
        "tp_rate": (76.05, 0.01),
        "fp_rate": (13.43, 0.44),
        "tn_rate": (6.49, 0.44),
        "fn_rate": (4.03, 0.02),
    },
    "stn": {
        "auc": (84.22, 0.70),
        "pr_auc": (95.23, 0.29),
        "precision": (85.25, 0.49),
        "tp_rate": (76.08, 0.01),
        "fp_rate": (13.17, 0.42),
        "tn_rate": (6.74, 0.42),
        "fn_rate": (4.01, 0.02),
    },
}


PAPER_PREVALENCE = 100 * TABLE_I_ABNORMAL / (TABLE_I_NORMAL + TABLE_I_ABNORMAL)
"""Share of abnormal images in percent (22,146 of 27,654)."""
