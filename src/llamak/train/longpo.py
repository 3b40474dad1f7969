"""LongPO (Chen et al., ICLR 2025, arXiv 2502.13922): short-to-long preference optimisation.

The model teaches itself long context: for a short chunk x_S of a long document x_L and a question
about it, the answer it gives seeing only x_S is *chosen* (y_w), the answer it gives seeing all of
x_L is *rejected* (y_l). The policy reads the long multi-turn sequence; the reference reads each
turn's short context — so the preference pulls long-context answers toward the quality of
short-context ones, while a KL to the short-context reference keeps short-context skill.

The loss, as the authors' code computes it (ALGORITHMS.md §3.3), per record (one long document
with several question/answer turns):

    π_w, π_l   = Σ over turns and answer tokens of log π_θ(y | long multi-turn context)
    ref_w, ref_l = Σ over turns of log π_ref(y_k | x_Sk, question_k)     (short contexts)
    L_pref = −log σ(β · ((π_w − π_l) − (ref_w − ref_l)))
    L_nll  = mean token cross-entropy of the policy on the whole chosen sequence
    loss   = nll_weight · L_nll + pref_weight · L_pref        (defaults β 0.01, pref 0.01, nll 1)

Pairs come from `llamak longpo synth` (`longpo_synth.py`) — `pairs:` — or are synthesised by the
stage's own input model first — `synth:` (self-evolution; cached in `OUT.synth/`). This module turns
them into token sequences, precomputes the short-context reference log-probs once (cached beside the
pairs) and trains with `LongPOTrainer` (`llamak train longpo CONFIG`, or a recipe `longpo` stage).
With `probes:`, the long-context probes run on the input and on the trained model
(`OUT/probes/{before,after}/long.json` + heat maps; accuracies in the stage metrics).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator

from llamak.train.common import Trainable, TrainSettings


@dataclass(frozen=True)
class LongPOWeights:
    beta: float = 0.01
    pref_weight: float = 0.01
    nll_weight: float = 1.0


def longpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    chosen_nll: torch.Tensor,
    weights: LongPOWeights = LongPOWeights(),
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The LongPO loss of a batch of records (each tensor: one value per record; `chosen_nll` is
    already the mean token NLL of each chosen sequence). Returns (loss, metrics)."""
    policy_margin = policy_chosen - policy_rejected
    ref_margin = ref_chosen - ref_rejected
    logits = weights.beta * (policy_margin - ref_margin)
    pref = -F.logsigmoid(logits)
    loss = weights.nll_weight * chosen_nll.mean() + weights.pref_weight * pref.mean()
    metrics = {
        "nll": chosen_nll.mean().detach(),
        "pref_loss": pref.mean().detach(),
        "rewards/chosen": (weights.beta * (policy_chosen - ref_chosen)).mean().detach(),
        "rewards/rejected": (weights.beta * (policy_rejected - ref_rejected)).mean().detach(),
        "rewards/margins": (logits).mean().detach(),
        "rewards/accuracies": (logits > 0).float().mean().detach(),
    }
    return loss, metrics


def answer_logps(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Σ log p(label) over the labelled (answer) tokens of each sequence; logits predict the next token."""
    return shifted_logps(logits[:, :-1], labels[:, 1:], ignore_index)


def shifted_logps(logits: torch.Tensor, next_labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Σ log p(next label) per sequence, labels already aligned with the logits that predict them
    (what a sequence-parallel rank holds: a slice of logits and of the shifted labels)."""
    mask = next_labels != ignore_index
    picked = torch.gather(logits.log_softmax(-1), 2, next_labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(-1)


def shifted_nll(logits: torch.Tensor, next_labels: torch.Tensor, ignore_index: int = -100) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ token NLL, token count) per sequence over aligned next-token labels."""
    nll = F.cross_entropy(logits.transpose(1, 2), next_labels, ignore_index=ignore_index, reduction="none")
    return nll.sum(-1), (next_labels != ignore_index).sum(-1)


# --------------------------------------------------------------------------- data → token sequences


def turn_messages(record: dict, side: str) -> list[dict]:
    """The long multi-turn conversation of one record: long context + question 1, answer 1, question 2, …"""
    messages = []
    for k, turn in enumerate(record["turns"]):
        question = f"{record['long_context']}\n\n{turn['question']}" if k == 0 else turn["question"]
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": turn[side]}]
    return messages


def short_messages(turn: dict, side: str) -> list[dict]:
    """One turn as the reference sees it: the short chunk + question, then the answer."""
    return [{"role": "user", "content": f"{turn['chunk']}\n\n{turn['question']}"}, {"role": "assistant", "content": turn[side]}]


def encode(tokenizer, messages: list[dict], template: str) -> tuple[list[int], list[int]]:
    """Token ids and labels (-100 outside assistant answers) of a conversation."""
    out = tokenizer.apply_chat_template(messages, chat_template=template, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids = list(out["input_ids"])
    return ids, [t if m else -100 for t, m in zip(ids, out["assistant_masks"])]


@torch.no_grad()
def reference_logps(model, tokenizer, records: list[dict], template: str) -> list[tuple[float, float]]:
    """Σ over turns of log π_ref(answer | short chunk + question), chosen and rejected, per record —
    computed once, before training, by the model the stage starts from (the short-context reference)."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for record in records:
        sums = []
        for side in ("chosen", "rejected"):
            total = 0.0
            for turn in record["turns"]:
                ids, labels = encode(tokenizer, short_messages(turn, side), template)
                logits = model(torch.tensor([ids], device=device)).logits.float()
                total += answer_logps(logits, torch.tensor([labels], device=device)).item()
            sums.append(total)
        out.append((sums[0], sums[1]))
    return out


def examples(tokenizer, records: list[dict], refs: list[tuple[float, float]], template: str) -> list[dict]:
    rows = []
    for record, (ref_w, ref_l) in zip(records, refs):
        chosen_ids, chosen_labels = encode(tokenizer, turn_messages(record, "chosen"), template)
        rejected_ids, rejected_labels = encode(tokenizer, turn_messages(record, "rejected"), template)
        rows.append({"chosen_ids": chosen_ids, "chosen_labels": chosen_labels, "rejected_ids": rejected_ids,
                     "rejected_labels": rejected_labels, "ref_chosen_logps": ref_w, "ref_rejected_logps": ref_l})
    return rows


def collate(rows: list[dict], pad_id: int, sequence_parallel: int = 1) -> dict[str, torch.Tensor]:
    """Chosen and rejected sequences of the batch stacked (chosen first), right-padded.

    For sequence parallelism (Ulysses) the batch is what DeepSpeed's SP data loader shards along
    the sequence: [batch, seq] tensors only, width a multiple of the SP size, `position_ids`,
    `labels` (it shifts them into `shift_labels`) and the NLL targets already shifted; the
    short-context reference log-probs travel as plain lists, which it copies whole to every rank."""
    seqs = [r["chosen_ids"] for r in rows] + [r["rejected_ids"] for r in rows]
    labels = [r["chosen_labels"] for r in rows] + [r["rejected_labels"] for r in rows]
    width = max(len(s) for s in seqs)
    width += -width % sequence_parallel
    pad = lambda xs, v: [x + [v] * (width - len(x)) for x in xs]  # noqa: E731
    refs = {"ref_chosen_logps": [r["ref_chosen_logps"] for r in rows], "ref_rejected_logps": [r["ref_rejected_logps"] for r in rows]}
    if sequence_parallel > 1:
        return {
            "input_ids": torch.tensor(pad(seqs, pad_id)),
            "position_ids": torch.arange(width).repeat(len(seqs), 1),
            "labels": torch.tensor(pad(labels, -100)),
            # NLL over the whole chosen sequence: its next tokens, padding ignored
            "nll_shift_labels": torch.tensor(pad([s[1:] + [-100] for s in seqs], -100)),
            **refs,
        }
    return {
        "input_ids": torch.tensor(pad(seqs, pad_id)),
        "attention_mask": torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs]),
        "labels": torch.tensor(pad(labels, -100)),
        **{k: torch.tensor(v) for k, v in refs.items()},
    }


# --------------------------------------------------------------------------- trainer

class SynthOptions(BaseModel):
    """`llamak longpo synth`'s settings, for a stage that synthesises its own pairs."""

    model_config = ConfigDict(extra="forbid")
    documents: list[str]  # .txt files or .jsonl with `text` (globs ok)
    max_documents: int | None = Field(None, gt=0)  # a seeded sample of that many
    chunk_tokens: tuple[int, int] = (64, 256)
    long_tokens: int = Field(1024, gt=0)
    turns: int = Field(2, gt=0)
    questions: int = Field(4, gt=0)
    question_source: Literal["model", "template", "auto"] = "model"
    min_answer_chars: int = Field(10, ge=0)
    min_distinct_4grams: float = Field(0.5, ge=0, le=1)
    max_new_tokens: int = Field(128, gt=0)
    engine: Literal["auto", "hf", "vllm"] = "auto"
    batch_size: int = Field(8, gt=0)  # hf engine
    seed: int = 0

    def settings(self):
        from llamak.train.longpo_synth import SynthSettings

        return SynthSettings(**self.model_dump(exclude={"documents", "max_documents", "engine", "batch_size"}))


class ProbeOptions(BaseModel):
    """Long-context probes (`llamak eval --suite long`) before and after the stage."""

    model_config = ConfigDict(extra="forbid")
    lengths: list[int] = Field(min_length=1)
    depths: list[float] = [0.0, 0.5, 1.0]
    samples: int = Field(2, gt=0)
    langs: list[Literal["ko", "en"]] = ["ko", "en"]
    tasks: list[Literal["niah", "multikey"]] = ["niah", "multikey"]
    max_new_tokens: int = Field(64, gt=0)
    engine: Literal["auto", "hf", "vllm"] = "auto"
    batch_size: int = Field(8, gt=0)  # hf engine
    seed: int = 0

    def run(self, model_dir: Path, out_dir: Path, progress: bool = True) -> dict:
        from llamak.evaluate.long import run_long_suite
        from llamak.generation import make_generator

        with make_generator(model_dir, self.engine, self.batch_size) as generator:
            return run_long_suite(generator, self.lengths, self.depths, self.samples, self.langs, self.tasks, out_dir, self.seed, progress, self.max_new_tokens)


class LongpoConfig(TrainSettings):
    """A LongPO training stage on `llamak longpo synth` output (`pairs.jsonl` or its folder)."""

    trainable: Trainable = "all"
    pairs: str | None = None  # a `llamak longpo synth` folder or its pairs.jsonl
    synth: SynthOptions | None = None  # or: synthesise pairs with the input model first
    probes: ProbeOptions | None = None
    beta: float = Field(0.01, ge=0)
    pref_weight: float = Field(0.01, ge=0)
    nll_weight: float = Field(1.0, ge=0)
    learning_rate: float = Field(5e-7, gt=0)
    batch_size: int = Field(1, gt=0)
    # RoPE of the policy (the reference keeps the model's own): e.g. rope_theta 1e7 as the authors
    # did for Mistral-7B at 128K; Llama-3.1 is natively 128K, beyond it set
    # rope_parameters {rope_type: llama3, factor: …}.
    rope_theta: float | None = Field(None, gt=0)
    rope_parameters: dict | None = None
    # Ulysses sequence parallelism (DeepSpeed ALST, through accelerate): each long sequence is split
    # over this many GPUs, attention heads over the same GPUs. Needs sharding zero3; must divide the
    # world size and the attention (and key/value) heads.
    sequence_parallel: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _one_source(self):
        if (self.pairs is None) == (self.synth is None):
            raise ValueError("give `pairs:` (a `llamak longpo synth` folder) or `synth:` (documents the model makes pairs from), exactly one")
        return self

    def pairs_file(self) -> Path:
        path = Path(self.pairs)
        return path / "pairs.jsonl" if path.is_dir() else path

    def data_files(self) -> list[Path]:
        from llamak.errors import LlamakError
        from llamak.train.common import expand_globs

        if self.synth is not None:
            return expand_globs(self.synth.documents, "synth.documents")
        if not self.pairs_file().is_file():
            raise LlamakError(f"pairs: {self.pairs_file()}: no such file (make it with `llamak longpo synth`)")
        return [self.pairs_file()]


def trainer_class():
    """`transformers.Trainer` with the LongPO loss. Not TRL's `DPOTrainer`: its data model is one
    prompt shared by one chosen and one rejected completion, while a LongPO record's chosen and
    rejected conversations differ in every turn and its reference reads other (short) inputs."""
    from collections import defaultdict

    from transformers import Trainer

    class LongPOTrainer(Trainer):
        def __init__(self, *args, weights: LongPOWeights, **kwargs):
            super().__init__(*args, **kwargs)
            self.weights = weights
            self._logged = defaultdict(list)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if "shift_labels" in inputs:  # sequence parallel: this rank holds a slice of every sequence
                logits, logps, nll = self.sequence_parallel_terms(model, inputs)
            else:
                logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits.float()
                n = len(inputs["ref_chosen_logps"])
                logps = answer_logps(logits, inputs["labels"])
                # NLL over the whole chosen sequence (context, questions and answers), as the authors' code
                targets = inputs["input_ids"][:n].masked_fill(inputs["attention_mask"][:n] == 0, -100)[:, 1:]
                nll_sum, count = shifted_nll(logits[:n, :-1], targets)
                nll = nll_sum / count.clamp(min=1)
            refs = [torch.as_tensor(inputs[k], dtype=logps.dtype, device=logps.device) for k in ("ref_chosen_logps", "ref_rejected_logps")]
            n = len(refs[0])
            loss, metrics = longpo_loss(logps[:n], logps[n:], refs[0], refs[1], nll, self.weights)
            for key, value in metrics.items():
                self._logged[key].append(value.item())
            return (loss, logits) if return_outputs else loss

        def sequence_parallel_terms(self, model, inputs):
            """Per-sequence answer log-probs and chosen NLL of sequences split over the SP group:
            each rank sums over its slice, one all-reduce adds the slices, and every rank then
            computes the same global loss. The all-reduce is differentiable (its backward sums the
            group's gradients, which DeepSpeed divides by the group size again, as the HF
            Trainer's own SP loss does); ranks never exchange logits."""
            import torch.distributed.nn.functional as dist_fn
            from deepspeed.utils import groups

            n = len(inputs["ref_chosen_logps"])
            # chosen, then rejected: Ulysses expects micro-batches of the configured size (and at
            # 128K two half-size passes also halve the activation peak)
            logits = torch.cat([model(input_ids=inputs["input_ids"][part], position_ids=inputs["position_ids"][part]).logits.float()
                                for part in (slice(0, n), slice(n, 2 * n))])
            nll_sum, count = shifted_nll(logits[:n], inputs["nll_shift_labels"][:n])
            local = torch.cat([shifted_logps(logits, inputs["shift_labels"]), nll_sum, count.to(logits.dtype)])
            total = dist_fn.all_reduce(local, group=groups._get_sequence_parallel_group())
            logps, nll_sum, count = total[: 2 * n], total[2 * n : 3 * n], total[3 * n :]
            return logits, logps, nll_sum / count.clamp(min=1)

        def log(self, logs, start_time=None):
            logs.update({key: sum(v) / len(v) for key, v in self._logged.items()})
            self._logged.clear()
            super().log(logs, start_time)

    return LongPOTrainer


def make_trainer(config: LongpoConfig, model_dir: Path, checkpoints: Path, pairs: Path | None = None):
    import json

    from datasets import Dataset
    from transformers import TrainingArguments

    from llamak.checkpoint import ModelDir
    from llamak.train.common import build_config, build_model, load_model, load_tokenizer
    from llamak.train.sft import assistant_mask_template

    source, tokenizer = ModelDir.open(model_dir), load_tokenizer(model_dir)
    template = assistant_mask_template(tokenizer)
    pairs = pairs or config.pairs_file()
    records = [json.loads(line) for line in pairs.read_text(encoding="utf-8").splitlines() if line.strip()]
    extra = {"parallelism_config": sequence_parallel_config(config.sequence_parallel, source)} if config.sequence_parallel > 1 else {}
    args = build_config(TrainingArguments, config, checkpoints, source, remove_unused_columns=False, **extra)
    rope = rope_config(model_dir, config.rope_theta, config.rope_parameters)
    model, params = build_model(source, args, config.trainable, config, rope)
    trainer = trainer_class()(
        model=model, args=args, train_dataset=None, processing_class=tokenizer,
        data_collator=lambda batch: collate(batch, tokenizer.pad_token_id, config.sequence_parallel),
        weights=LongPOWeights(config.beta, config.pref_weight, config.nll_weight),
    )

    def compute_refs():
        # the short-context reference is the input model with its own RoPE: the policy itself
        # before any step, or a second frozen copy when the policy's RoPE was changed
        reference = model if rope is None else load_model(source, args).requires_grad_(False)
        return reference_logps(inference_engine(trainer, reference), tokenizer, records, template)

    refs = cached_reference_logps(pairs, model_dir, compute_refs)
    trainer.train_dataset = Dataset.from_list(examples(tokenizer, records, refs, template))
    return trainer, tokenizer, source, {**params, "records": len(records), "pairs": sum(len(r["turns"]) for r in records)}


def sequence_parallel_config(size: int, source):
    """accelerate's ParallelismConfig for Ulysses SP of `size` on DeepSpeed (the remaining factor
    of the world is data parallel); errors name what does not fit."""
    import os

    from accelerate.parallelism_config import ParallelismConfig
    from accelerate.utils import DeepSpeedSequenceParallelConfig

    from llamak.shape import Shape
    from llamak.train.sharding import check_sequence_parallel, current_sharding

    world = int(os.environ.get("WORLD_SIZE", "1"))
    check_sequence_parallel(size, Shape.from_config(source.config), world, current_sharding(), "")
    handler = DeepSpeedSequenceParallelConfig(sp_seq_length_is_variable=True, sp_attn_implementation="sdpa")
    return ParallelismConfig(dp_shard_size=world // size, sp_size=size, sp_backend="deepspeed", sp_handler=handler)


def inference_engine(trainer, model):
    """A model that can run forward passes before training starts. Under ZeRO-3 the weights are
    partitioned at load: wrap them in a DeepSpeed inference engine that gathers each layer's
    weights in turn (TRL's `prepare_deepspeed`, what its DPOTrainer does for precomputed
    reference log-probs). Elsewhere the model as it is."""
    if not trainer.is_deepspeed_enabled:
        return model
    from trl.models import prepare_deepspeed

    return prepare_deepspeed(model, trainer.accelerator)


def rope_config(model_dir: Path, rope_theta: float | None, rope_parameters: dict | None):
    """The policy's model config with changed RoPE settings (the rotary tables are built from the
    config at load), or None to keep the model's own."""
    if not rope_theta and not rope_parameters:
        return None
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir)
    rope = dict(getattr(config, "rope_parameters", None) or {})
    rope.update(rope_parameters or {})
    if rope_theta:
        rope["rope_theta"] = rope_theta
    config.rope_parameters = rope
    return config


def cached_reference_logps(pairs: Path, model_dir: Path, compute) -> list[tuple[float, float]]:
    """Reference log-probs stored beside the pairs, keyed by the reference model's content hash and
    the pairs' fingerprint: computed once, reused by reruns and resumes."""
    import json
    import os

    from llamak.lineage import content_hash, file_fingerprint

    key = f"{content_hash(model_dir)[:16]}-{file_fingerprint(pairs)[:16]}"
    cache = pairs.with_name(f"ref_logps.{key}.json")
    if cache.is_file():
        return [tuple(x) for x in json.loads(cache.read_text())]
    refs = compute()  # on every rank: under ZeRO-3 the forward passes are collective
    if int(os.environ.get("RANK", "0")) == 0:
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps(refs))
        tmp.replace(cache)
    return refs


def synthesize_pairs(options: SynthOptions, model_dir: Path, folder: Path, progress: bool = True) -> Path:
    """Pairs made by the model in `model_dir` (self-evolution), cached in `folder` under a key of the
    model's content, the settings and the documents: a rerun or resume does not generate again."""
    import hashlib
    import json

    from llamak.errors import LlamakError
    from llamak.generation import make_generator
    from llamak.lineage import content_hash, file_fingerprint
    from llamak.train.common import expand_globs
    from llamak.train.longpo_synth import pick_documents, read_documents, synthesize, write_synthesis

    files = expand_globs(options.documents, "synth.documents")
    key = hashlib.sha256(json.dumps([content_hash(model_dir), options.model_dump(mode="json"),
                                     [file_fingerprint(f) for f in files]]).encode()).hexdigest()[:16]
    summary = folder / "synth.json"
    if summary.is_file() and json.loads(summary.read_text()).get("key") == key:
        return folder / "pairs.jsonl"
    settings = options.settings()
    documents = pick_documents(read_documents(options.documents), options.max_documents, options.seed)
    with make_generator(model_dir, options.engine, options.batch_size) as generator:
        records, stats = synthesize(documents, generator, settings, progress)
    if not records:
        dropped = ", ".join(f"{k} {v}" for k, v in stats.dropped.items()) or "none"
        raise LlamakError(f"longpo synth: no pairs from {stats.documents} documents (dropped: {dropped}); "
                          "try question_source: auto, longer documents or a lower min_distinct_4grams")
    write_synthesis(records, stats, settings, folder, extra={"key": key})
    return folder / "pairs.jsonl"


def run_longpo(config: LongpoConfig, model_dir: Path, out: Path, progress: bool = True) -> dict:
    """Synthesise (with `synth:`), probe the input (with `probes:`), train, probe the output."""
    import functools
    import os
    import shutil

    from llamak.train.common import run_training, wait_for_everyone

    out = Path(out)
    main = int(os.environ.get("RANK", "0")) == 0
    pairs = None
    if config.synth is not None:
        folder = Path(str(out) + ".synth")
        if main:
            synthesize_pairs(config.synth, model_dir, folder, progress)
        wait_for_everyone()
        pairs = folder / "pairs.jsonl"
    before = None
    if config.probes is not None and main:
        before_dir = Path(str(out) + ".probes") / "before"
        before = config.probes.run(model_dir, before_dir, progress)
    metrics = run_training("longpo", functools.partial(make_trainer, pairs=pairs), config, model_dir, out)
    if pairs is not None and main:
        shutil.copy(pairs.with_name("synth.json"), out / "synth.json")
    if config.probes is not None and main:
        probes_dir = out / "probes"
        probes_dir.mkdir(exist_ok=True)
        shutil.move(before_dir, probes_dir / "before")
        after = config.probes.run(out, probes_dir / "after", progress)
        metrics["probes"] = {"before": before["accuracy"], "after": after["accuracy"]}
        shutil.rmtree(before_dir.parent, ignore_errors=True)
    return metrics
