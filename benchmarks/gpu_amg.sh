#!/usr/bin/env bash
# The GPU measurement of the automatic mask generator, in one go (a few minutes on one H100 / H200):
#   1. EfficientSAM-Ti and SAM ViT-H, 32 x 32 grid, no crops: our exact mode and our fast mode
#      (bf16 autocast) on the bundled photos -> the per-image times to compare with the targets
#      (EfficientSAM-Ti <= 30 ms, SAM ViT-H <= 150 ms, fast mode);
#   2. SAM ViT-B against the official generator, 32 x 32, crop_n_layers 0 and 1, same weights.
# Writes amg_gpu*.json / .md / .png into $OUT (or benchmarks/results). Run from the repository root:
#   bash benchmarks/gpu_amg.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
photos=(assets/photos/dogs.jpg assets/photos/truck.jpg assets/photos/groceries.jpg)
nvidia-smi --query-gpu=name,memory.total --format=csv || true
python -m benchmarks.bench --amg --device cuda --models efficient_sam_vitt sam_vit_h --points-per-side 32 \
    --crop-n-layers 0 --fast --points-per-batch 256 --images "${photos[@]}" --warmup 1 --repeats 3 --no-progress \
    --json "$out/amg_gpu.json" --markdown "$out/amg_gpu.md" --plot "$out/amg_gpu.png"
python -m benchmarks.bench --amg --device cuda --models sam_vit_b --points-per-side 32 --crop-n-layers 0 1 \
    --reference --fast --images "${photos[0]}" --warmup 1 --repeats 2 --no-progress \
    --json "$out/amg_gpu_vs_official.json" --markdown "$out/amg_gpu_vs_official.md" --plot "$out/amg_gpu_vs_official.png"
