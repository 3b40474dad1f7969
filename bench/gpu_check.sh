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

# Issue 17: a launched 2-stage recipe (CPT → LongPO, ZeRO-3 on every visible GPU; LongPO with
# Ulysses sequence parallelism over the GPUs when their count divides the heads), then each rank's
# peak host memory while a ZeRO-3 stage sets up and takes one step.
if python -c "import deepspeed" 2>/dev/null; then
  gpus=$(python -c "import torch; print(max(torch.cuda.device_count(), 1))")
  work=$(mktemp -d)
  heads=$(python -c "import json, llamak.zoo as z; print(json.load(open(z.resolve_model('zoo:smollm2-135m-instruct') / 'config.json'))['num_attention_heads'])")
  sp=1; if [ "$gpus" -gt 1 ] && [ $((heads % gpus)) -eq 0 ]; then sp=$gpus; fi
  cat > "$work/launched.yaml" <<YAML
name: gpu-launched
base: zoo:smollm2-135m-instruct
sample: []
launch: {processes: $gpus, sharding: zero3}
stages:
  - expand: {blocks: 6}
  - cpt: {corpus: {ko: [data/ko/*.jsonl], en: [data/en/*.jsonl]}, seq_len: 2048, batch_size: 4, max_steps: 20, logging_steps: 5, save_steps: 100}
  - longpo:
      synth: {documents: [data/ko/kobill.jsonl], max_documents: 8, long_tokens: 4096, chunk_tokens: [256, 1024], turns: 2, question_source: template, max_new_tokens: 64}
      sequence_parallel: $sp
      max_steps: 8
      save_steps: 100
YAML
  python -m llamak.cli run "$work/launched.yaml" --out "$work/runs" --no-sample
  python - "$work/runs/gpu-launched/manifest.json" <<'PY'
import json, sys
for name, s in json.load(open(sys.argv[1]))["stages"].items():
    m, launch = s["metrics"], s.get("launch")
    if launch:
        print(f"launched {name}: {launch['world_size']} process(es), {launch['sharding']}: "
              f"{m['num_input_tokens_seen'] / m['train_seconds']:.0f} tokens/s over {m['global_step']} steps, {s['seconds']:.0f} s with start-up")
PY
  python bench/rank_memory.py --synthetic 600M --processes "$gpus" --sharding zero3
else
  echo "deepspeed: not installed here — launched ZeRO-3 recipe and rank memory skipped (pip install -e '.[deepspeed]')"
fi
