"""`llamak generate`: the card's use cases from the command line — one text (a file or stdin), or a
JSONL batch whose lines all go to the engine at once (it batches them)."""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from llamak.errors import LlamakError
from llamak.serve.engine import Request
from llamak.serve.guard import Guard, refusal
from llamak.serve.tasks import TaskInput, best_label, label_continuations, messages


def chat_prompt_ids(tokenizer, chat: list[dict]) -> list[int]:
    if not getattr(tokenizer, "chat_template", None):
        raise LlamakError("the model has no chat template (tokenizer_config.json `chat_template`); use an instruct model")
    text = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def run_task(engine, item: TaskInput, max_tokens: int = 256, temperature: float = 0.0, seed: int | None = None,
             guard: Guard = Guard("off"), on_text=None) -> dict:
    """One use case → {"output", "finish_reason", (classify) "label", "scores"}; `on_text` receives streamed text."""
    chat = messages(item)
    prompt_ids = chat_prompt_ids(engine.tokenizer, chat)
    if guard.check_input(item.text + "\n" + item.question).blocked:
        return {"output": refusal(item.text), "finish_reason": "content_filter"}
    if item.task == "classify":
        labels = item.clean_labels()
        scores = engine.score(prompt_ids, label_continuations(engine.tokenizer, labels))
        best = best_label(labels, scores)
        if on_text:
            on_text(best)
        return {"output": best, "label": best, "scores": dict(zip(labels, scores)), "finish_reason": "stop"}
    room = engine.context_length - len(prompt_ids)
    if room < 1:
        raise LlamakError(f"the {item.task} prompt has {len(prompt_ids)} tokens; the model's context is {engine.context_length}")
    parts, reason = [], None
    for delta in engine.stream_sync(Request(prompt_ids, min(max_tokens, room), temperature, 1.0, seed)):
        parts.append(delta.text)
        if on_text and delta.text:
            on_text(delta.text)
        reason = delta.finish_reason or reason
    text = "".join(parts)
    if guard.check_output(text).blocked:
        return {"output": refusal(item.text), "finish_reason": "content_filter"}
    return {"output": text, "finish_reason": reason}


def read_jsonl(path: str, task: str, defaults: dict) -> list[tuple[dict, TaskInput]]:
    """Each line a JSON object with `text` (and `labels`, `question`, `lang` where the task needs them)."""
    stream = sys.stdin if path == "-" else open(path, encoding="utf-8")
    name = "<stdin>" if path == "-" else path
    items = []
    with stream:
        for n, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise LlamakError(f"{name}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise LlamakError(f"{name}:{n}: expected an object with a string field `text`")
            item = TaskInput(task, row["text"], row.get("labels", defaults["labels"]), row.get("question", defaults["question"]), row.get("lang", defaults["lang"]))
            try:
                item.check()
            except LlamakError as e:
                raise LlamakError(f"{name}:{n}: {e}") from None
            items.append((row, item))
    if not items:
        raise LlamakError(f"{name}: no lines with `text`")
    return items


def run_batch(engine, items: list[tuple[dict, TaskInput]], out: Path | None, workers: int = 8, progress: bool = True, **settings) -> int:
    """Run every line (up to `workers` in flight, so the engine can batch them); write input fields +
    `output` as JSONL in input order, atomically (OUT.partial, then renamed)."""
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(run_task, engine, item, **settings) for _, item in items]
        results = [f.result() for f in tqdm(futures, desc="generate", disable=not progress, file=sys.stderr)]
    lines = [json.dumps({**row, **result}, ensure_ascii=False) + "\n" for (row, _), result in zip(items, results)]
    if out is None:
        sys.stdout.writelines(lines)
    else:
        partial = out.with_name(out.name + ".partial")
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text("".join(lines), encoding="utf-8")
        partial.replace(out)
    return len(lines)
