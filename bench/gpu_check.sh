#!/usr/bin/env bash
# GPU check (issue 10): a short script for a GPU machine, run from the repository root with llamak
# importable (pip install -e . or PYTHONPATH=src). Prints the GPU, CPT tokens/s and peak memory
# (trainable inserted vs all, bf16), HF generation tokens/s, and a GRPO step with vLLM when vLLM
# is installed. Arguments go to bench/gpu_check.py (e.g. --steps 10 --seq-len 1024).
set -euo pipefail
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "nvidia-smi: not found"
python -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, '| transformers', transformers.__version__)"
python bench/gpu_check.py "$@"
if python -c "import vllm" 2>/dev/null; then
  work=$(mktemp -d)
  cat > "$work/grpo.yaml" <<YAML
model: zoo:smollm2-135m-instruct
out: $work/grpo
dataset: [data/grpo/*.jsonl]
rewards: {korean_only: 1.0, no_repetition: 0.3}
num_generations: 4
max_completion_length: 64
max_steps: 2
batch_size: 8
use_vllm: true
vllm_mode: colocate
YAML
  start=$(date +%s.%N)
  python -m llamak.cli train grpo "$work/grpo.yaml" -q
  echo "GRPO with vLLM (colocate): 2 steps in $(echo "$(date +%s.%N) - $start" | bc) s (model load included)"
else
  echo "vLLM: not installed here — GRPO with vLLM skipped (pip install vllm on a CUDA machine)"
fi
