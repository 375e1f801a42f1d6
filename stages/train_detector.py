"""Stage train_detector: train the YOLO thorax detector on data/thorax/.

Writes models/detector.pt (weights only, no date or paths, so identical training gives an
identical file) and reports/detector.json (validation mAP, precision, recall, size, time).
Ultralytics' run folder is `.cache/detector-runs/run-<host>-<pid>`, outside every DVC output
and dependency, removed afterwards; one left by a killed run is removed by the next.
"""

from cxrstn.runtime import configure_tools, run_stage

configure_tools()  # before the libraries below read their settings

from cxrstn.detector import export_weights, run_folder, train_detector
from cxrstn.io import atomic_path, load_params, write_json


def main() -> None:
    params = load_params()["detector"]
    with run_folder(".cache/detector-runs") as run_dir:
        run = run_dir / "train"
        metrics = train_detector("data/thorax/data.yaml", run, params)
        with atomic_path("models/detector.pt") as tmp:
            export_weights(run / "weights" / "best.pt", tmp)
    write_json("reports/detector.json", metrics)
    print(
        f"train_detector: mAP@0.5 {metrics['map50']:.3f}, mAP@0.5:0.95 {metrics['map50_95']:.3f} "
        f"after {metrics['epochs']} epochs in {metrics['train_seconds']:.0f} s"
    )


if __name__ == "__main__":
    run_stage(main)
