"""Benchmark: does GRPO with the `korean_only` reward make a model answer Korean prompts in Korean?

    .venv/bin/python bench/align.py [--steps 30] [--model zoo:smollm2-135m-instruct]

SmolLM2-135M-Instruct (real weights, English-centric) is trained with LoRA by `llamak train grpo`'s
code path on the Korean prompts of `data/dpo/pref_ko.jsonl` (60), rewarded by `korean_only` only.
Before and after, it answers the Korean prompts of `data/grpo/prompts_ko.jsonl` (60, none seen in
training) greedily and by sampling (2 per prompt, temperature 1, as in training); we report the mean Korean-letter score of the answers and the share of
"Korean-script answers" (score ≥ 0.5). Goal from the issue: a clear rise. Also steps/s.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from train_step import StepTimer  # bench/ is on sys.path when run as a script

from llamak.train.grpo import GrpoConfig, make_trainer
from llamak.train.rewards import korean_letter_score
from llamak.zoo import resolve_model

ROOT = Path(__file__).resolve().parents[1]


def prompts(path: Path) -> list[list[dict]]:
    return [json.loads(line)["prompt"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@torch.no_grad()
def korean_scores(model, tokenizer, chats: list[list[dict]], max_new_tokens: int, sample: bool) -> list[float]:
    """Korean-letter score of each answer: greedy, or (sample=True) two samples per prompt at
    temperature 1 — what GRPO's groups see — seeded, so before/after use the same random stream."""
    model.eval()
    tokenizer.padding_side = "left"
    texts = [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in chats]
    inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    torch.manual_seed(0)
    kwargs = {"do_sample": True, "temperature": 1.0, "num_return_sequences": 2} if sample else {"do_sample": False}
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, **kwargs)
    answers = tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    return [korean_letter_score(a) for a in answers]


def summary(scores: list[float]) -> tuple[float, float]:
    return sum(scores) / len(scores), sum(s >= 0.5 for s in scores) / len(scores)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="zoo:smollm2-135m-instruct")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--learning-rate", type=float, default=5e-4)
    args = ap.parse_args()

    model_dir = resolve_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    evaluation = prompts(ROOT / "data/grpo/prompts_ko.jsonl")
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    before = {mode: summary(korean_scores(base, tokenizer, evaluation, args.max_new_tokens, mode == "sampled")) for mode in ("greedy", "sampled")}
    del base

    config = GrpoConfig(
        dataset=[str(ROOT / "data/dpo/pref_ko.jsonl")], rewards={"korean_only": 1.0}, trainable="lora",
        num_generations=4, batch_size=8, max_completion_length=args.max_new_tokens, temperature=1.0,
        max_steps=args.steps, learning_rate=args.learning_rate, save_steps=10_000, logging_steps=5,
    )
    with tempfile.TemporaryDirectory() as work:
        trainer, *_ = make_trainer(config, model_dir, Path(work) / "ck")
        timer = StepTimer()
        trainer.add_callback(timer)
        trainer.train()
    rewards = [h["rewards/korean_only/mean"] for h in trainer.state.log_history if "rewards/korean_only/mean" in h]
    policy = trainer.model.merge_and_unload()
    after = {mode: summary(korean_scores(policy, tokenizer, evaluation, args.max_new_tokens, mode == "sampled")) for mode in ("greedy", "sampled")}

    steps_per_s = len(timer.times[1:]) / sum(timer.times[1:])
    print(f"\nGRPO korean_only, {args.steps} steps, LoRA, {config.num_generations} generations × "
          f"{config.batch_size // config.num_generations} prompts/step, on {args.model}")
    print(f"training reward (korean_only, logged every 5 steps): {' → '.join(f'{r:.2f}' for r in rewards)}")
    print(f"{'answers':<10}{'':<8}{'mean Korean-letter score':>26}{'Korean-script answers':>24}")
    for mode in ("greedy", "sampled"):
        for when, result in (("before", before[mode]), ("after", after[mode])):
            print(f"{mode:<10}{when:<8}{result[0]:>26.3f}{result[1]:>24.1%}")
    print(f"steps/s: {steps_per_s:.3f} ({1 / steps_per_s:.1f} s/step, first step excluded)")


if __name__ == "__main__":
    main()
