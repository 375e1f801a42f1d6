#!/usr/bin/env bash
# Training throughput and model FLOP utilisation (MFU) of the paper's classifier on a GPU.
#
#   bench/gpu.sh [--batch 32] [--steps 20]     on a machine with a CUDA GPU
#   bench/gpu.sh --dry-run                     on the CPU, tiny sizes: checks the script only
#
# Measures full-width VGG16 at 512x512 (the paper's input) and the paper's STN (ST module +
# VGG16), trained as the pipeline trains on CUDA: bf16 autocast, channels_last, fused
# Adam, cudnn.benchmark. FLOPs come from cxrstn.models.gflops (forward, FLOPs = 2 x MACs); a
# training step counts 3x the forward pass. MFU = achieved FLOP/s / the GPU's peak dense
# bf16 FLOP/s (table below, by device name). Prints the estimated wall time of the paper
# protocol (15 runs of 20 epochs on CheXpert's 27,654 PA images) on 1 and on 8 such GPUs.
set -euo pipefail
cd "$(dirname "$0")/.."
exec env PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" python - "$@" <<'PY'
import argparse
import math
import time

import torch
import yaml

from cxrstn.models import build_model, gflops
from cxrstn.train import adam

PEAK_BF16_TFLOPS = {  # dense (no sparsity), from the vendors' data sheets
    "B200": 2250, "H200": 989, "H100 SXM": 989, "H100 NVL": 835, "H100 PCIe": 756,
    "H100": 756, "GH200": 989, "A100": 312, "L40S": 362, "L40": 181, "RTX 6000 Ada": 364,
    "L4": 121, "A10": 125, "RTX 4090": 165, "RTX 3090": 71,
}  # fmt: skip
IMAGE_STEPS = 5.5e6  # paper protocol: 15 runs x 20 epochs x ~18,400 training images (3 folds)

parser = argparse.ArgumentParser()
parser.add_argument("--dry-run", action="store_true", help="CPU, tiny model: test the script")
parser.add_argument("--batch", type=int, default=32)
parser.add_argument("--steps", type=int, default=20)
args = parser.parse_args()

paper = yaml.safe_load(open("params.paper.yaml"))
classifier, stn = dict(paper["classifier"]), dict(paper["stn"])
size = paper["resize"]["size"]
if args.dry_run:
    device, name, peak = torch.device("cpu"), "CPU (dry run)", None
    classifier |= {"width": 0.0625, "input_size": 128}  # the authors' loc net needs > 64 px
    stn["loc_size"] = 32
    size, args.batch, args.steps = 128, 2, 2
elif not torch.cuda.is_available():
    raise SystemExit("gpu.sh: no CUDA GPU visible (use --dry-run to test the script on a CPU)")
else:
    device, name = torch.device("cuda"), torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    torch.backends.cudnn.benchmark = True
classifier["weights"] = None
print(f"device: {name}; peak bf16: {peak or 'unknown'} TFLOP/s; batch {args.batch}, "
      f"{args.steps} timed steps; torch {torch.__version__}")


def measure(setting: str, part=None) -> tuple[float, float]:
    """Training images/s of `setting` (or of its `part`, fed the stored image) and the
    training GFLOP per image."""
    torch.manual_seed(0)
    model = build_model(setting, classifier, stn)
    module = getattr(model, part) if part else model
    example = torch.zeros(1, 1, size, size)
    train_gflop = 3 * gflops(module, example)
    module = module.to(device, memory_format=torch.channels_last)
    optimizer = adam([{"params": module.parameters(), "lr": 1e-5}], device)
    images = torch.rand(args.batch, 1, size, size, device=device)
    images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 2, (args.batch,), device=device).float()

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = module(images)
            if isinstance(out, tuple):  # the ST module: (window, params)
                out = out[0].mean(dim=(1, 2, 3)) + out[1].sum(dim=1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(2 if args.dry_run else 5):  # warm-up (cudnn autotuning)
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return args.batch * args.steps / (time.perf_counter() - started), train_gflop


results = {}
for label, setting, part in [
    (f"VGG16 x{classifier['width']} at {classifier['input_size']} px", "baseline", None),
    ("STN (ST module + VGG16)", "stn", None),
    ("ST module alone", "stn", "st"),
]:
    rate, train_gflop = measure(setting, part)
    tflops = rate * train_gflop / 1e3
    mfu = f"{100 * tflops / peak:5.1f} %" if peak else "  n/a"
    print(f"  {label:32s} {rate:9.1f} img/s  {train_gflop:8.2f} GFLOP/img (train)  "
          f"{tflops:7.2f} TFLOP/s  MFU {mfu}")
    results[setting if part is None else part] = rate

vgg = results["baseline"]
runs, gpus = 15, 8
one = IMAGE_STEPS / vgg / 3600
rounds = math.ceil(runs / gpus)
print(f"paper protocol at the VGG16 rate ({IMAGE_STEPS:.1e} image-steps, excluding the "
      f"detector and evaluation): {one:.2f} h on 1 GPU; {one * rounds / runs:.2f} h on {gpus} "
      f"({runs} runs as {rounds} rounds of one run per GPU)")
PY
