"""Peak memory of each rank while a launched training stage sets up and takes one step.

    python bench/rank_memory.py --model DIR --processes 2 --sharding zero3
    python bench/rank_memory.py --synthetic 600M --processes 2 --sharding ddp     # a random bf16 Llama

It runs `llamak train cpt` (trainable: inserted, 1 step, 64-token rows) on the model — expanded by one
LLaMA-Pro block first if it has none — and, as the import/runtime baseline, the same command on a
2-layer, 64-wide model with the same tokenizer. Memory is each worker's peak anonymous memory
(RssAnon, polled): safetensors are memory-mapped, so VmRSS would count page-cache pages a rank only
read. The last line is JSON:

    {"sharding": …, "model_bytes": …, "rank_peak_bytes": […], "baseline_peak_bytes": […], …}

Goal (issue 17): with 2 ranks, Σ(rank peak − baseline peak) ≤ 1.5 × the model's bf16 bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml

LLAMAK = [sys.executable, "-m", "llamak.cli"]
# Checkpoint shards of ~1/12 of the 600M model, as 5 GB shards are of a 70B one: transformers'
# ZeRO-3 loading reads one shard file at a time on every rank.
SHARD = "100MB"
TEXT = "대한민국은 민주공화국이다. 대한민국의 주권은 국민에게 있다. The Han River flows through Seoul. "


def synthetic_model(path: Path, params: str) -> Path:
    """A random bf16 Llama of about `params` parameters (hidden 1024, 16 heads, 4 KV heads) with a
    small byte-level BPE tokenizer trained on the bench text: an 8K vocabulary keeps the embeddings a
    few percent of the model, as at 70B (where they are 1.5 %), so the largest module gathered
    whole by ZeRO-3 is one layer, not a 128K-row embedding."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from llamak.units import parse_count

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator([TEXT] * 100, trainers.BpeTrainer(vocab_size=1000, special_tokens=["<s>", "</s>"],
                                                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="</s>")
    hidden, vocab = 1024, 8192
    per_layer = int(2.5 * hidden * hidden) + 3 * hidden * 4 * hidden  # attention (q, o + GQA k, v: 2.5 h²) + MLP (12 h²)
    layers = max(2, round((parse_count(params, "--synthetic") - 2 * vocab * hidden) / per_layer))
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                         num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=2048, bos_token_id=0, eos_token_id=1)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(path, max_shard_size=SHARD)
    tokenizer.save_pretrained(path)
    return path


def tiny_like(model: Path, path: Path) -> Path:
    """The baseline: 2 layers, hidden 64, the model's tokenizer and dtype."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    source = AutoConfig.from_pretrained(model)
    config = LlamaConfig(vocab_size=source.vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=1, num_key_value_heads=1, max_position_embeddings=2048, dtype=str(source.dtype).removeprefix("torch."))
    LlamaForCausalLM(config).to(source.dtype or torch.float32).save_pretrained(path)
    AutoTokenizer.from_pretrained(model).save_pretrained(path)
    return path


def with_inserted_block(model: Path, work: Path) -> Path:
    from llamak.checkpoint import ModelDir
    from llamak.surgery.expand import expand
    from llamak.units import parse_size

    source = ModelDir.open(model)
    if source.is_expanded:
        return model
    out = work / f"{model.name}-expanded"
    expand(model, out, after=[source.num_layers - 1], max_shard_bytes=parse_size(SHARD, "shard"), progress=False)
    return out


def model_bytes(model: Path) -> int:
    from llamak.checkpoint import ModelDir

    return sum(f.stat().st_size for f in ModelDir.open(model).path.glob("*.safetensors"))


def bf16_bytes(model: Path) -> int:
    """The model's size in bf16 (2 bytes a parameter), whatever dtype it is stored in."""
    from safetensors import safe_open

    total = 0
    for f in Path(model).glob("*.safetensors"):
        with safe_open(f, "pt") as st:
            total += sum(2 * _numel(st.get_slice(key).get_shape()) for key in st.keys())
    return total


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def measure(model: Path, work: Path, processes: int, sharding: str, tag: str) -> list[int]:
    """Peak RssAnon of each worker rank of one launched 1-step CPT stage."""
    corpus = work / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": TEXT * (1 + i % 4)}, ensure_ascii=False) + "\n" for i in range(64)))
    config = work / f"{tag}.yaml"
    config.write_text(yaml.safe_dump({"model": str(model), "out": str(work / tag), "trainable": "inserted", "corpus": {"ko": [str(corpus)]},
                                      "max_steps": 1, "seq_len": 64, "batch_size": 1, "save_steps": 100, "logging_steps": 1}))
    proc = subprocess.Popen([*LLAMAK, "train", "cpt", str(config), "--processes", str(processes), "--sharding", sharding],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peaks: dict[int, int] = {}
    done = threading.Event()

    def poll():
        parent = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                children = parent.children(recursive=True)
            except psutil.NoSuchProcess:
                return
            for child in children:
                try:
                    if "llamak.worker" not in " ".join(child.cmdline()):
                        continue
                    rank = int(child.environ().get("RANK", "-1"))
                    status = Path(f"/proc/{child.pid}/status").read_text()
                    anon = next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("RssAnon:"))
                    peaks[rank] = max(peaks.get(rank, 0), anon)
                except (psutil.Error, OSError, StopIteration, ValueError):
                    continue
            time.sleep(0.05)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    _, err = proc.communicate()
    done.set()
    poller.join()
    if proc.returncode != 0:
        sys.exit(f"{tag}: llamak train failed ({proc.returncode}): {err.strip().splitlines()[-1] if err.strip() else ''}")
    return [peaks.get(rank, 0) for rank in range(processes)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=Path, help="a Hugging Face model directory (with tokenizer)")
    source.add_argument("--synthetic", help="build a random bf16 Llama of about this many parameters, e.g. 600M")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--sharding", default="zero3", choices=["none", "ddp", "zero3", "zero3_offload"])
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        model = args.model or synthetic_model(work / f"synthetic-{args.synthetic}", args.synthetic)
        model = with_inserted_block(model, work)
        baseline = with_inserted_block(tiny_like(model, work / "baseline"), work)
        base_peaks = measure(baseline, work, args.processes, args.sharding, "baseline")
        peaks = measure(model, work, args.processes, args.sharding, "model")
    size, bf16 = model_bytes(model), bf16_bytes(model)
    above = sum(max(0, p - b) for p, b in zip(peaks, base_peaks))
    print(f"{args.sharding}, {args.processes} ranks: model {size / 1e9:.2f} GB on disk ({bf16 / 1e9:.2f} GB in bf16); "
          f"rank peaks {[round(p / 1e9, 2) for p in peaks]} GB, baseline {[round(p / 1e9, 2) for p in base_peaks]} GB; "
          f"summed above baseline {above / 1e9:.2f} GB = {above / bf16:.2f} × bf16 size (goal ≤ 1.5)")
    print(json.dumps({"sharding": args.sharding, "processes": args.processes, "model_bytes": size, "model_bf16_bytes": bf16,
                      "rank_peak_bytes": peaks, "baseline_peak_bytes": base_peaks, "above_baseline_over_bf16": round(above / bf16, 3)}))


if __name__ == "__main__":
    main()
