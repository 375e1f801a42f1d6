"""Stage binarize: CheXpert train.csv -> data/labels.csv and reports/labels.json (Table I)."""

from cxrstn.runtime import configure_tools, run_stage

configure_tools()  # before the libraries below read their settings

from cxrstn.io import load_params, write_csv, write_json
from cxrstn.labels import binarize, summary
from cxrstn.sources import chexpert


def main() -> None:
    params = load_params()
    csv_path = chexpert.find_csv(params["data"]["chexpert"])
    table = chexpert.read_csv(csv_path)
    labels, exclusions = binarize(table, params["labels"]["uncertain"], params["labels"]["views"])
    write_csv("data/labels.csv", labels)
    report = summary(labels, exclusions, len(table))
    write_json("reports/labels.json", report)
    print(
        f"binarize: {report['normal']} normal, {report['abnormal']} abnormal, "
        f"{report['excluded_total']} of {report['rows']} rows excluded: {report['excluded']}"
    )


if __name__ == "__main__":
    run_stage(main)
