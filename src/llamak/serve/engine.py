"""Engines that serve generation requests one token at a time.

`HFEngine` runs transformers' `generate` on a background thread and batches the requests that are
waiting when a batch starts (up to `max_batch_size`; requests arriving during a batch join the
next one). Each row keeps its own sampling settings and random generator — a per-row sampler turns
the logits into a one-hot choice, so `generate` itself runs greedy — which is what makes `seed`
reproducible whatever else shares the batch. A per-row stopping criterion streams each new token
out, applies stop strings and `max_tokens`, and ends rows whose client went away.

transformers' own continuous batching (`init_continuous_batching`) was measured against this on
CPU (bench/serve.py): it fixes sampling at start-up, has no stop strings and no per-request seed;
batched `generate` was as fast for the concurrency we serve here.

`VLLMEngine` is the same interface on vLLM's AsyncLLM (paged attention, continuous batching): the
engine for GPUs and large models (extra `llamak[vllm]`; it does not install on CPU-only machines).
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Callable, Iterator

import torch

from llamak.serve.text import Detokenizer


@dataclass
class Request:
    prompt_ids: list[int]
    max_tokens: int = 256
    temperature: float = 1.0  # 0: greedy
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)


@dataclass
class Delta:
    """New text of one completion; the last delta has `finish_reason` (stop | length | cancelled)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None = None


class Handle:
    """One submitted request: deltas arrive through `sink`; `cancel()` ends it at the next token."""

    def __init__(self, request: Request, sink: Callable[[Delta], None]):
        self.request, self.sink, self.cancelled = request, sink, False

    def cancel(self) -> None:
        self.cancelled = True


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability reaches top_p (nucleus sampling)."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True)
    cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
    remove = cumulative - torch.softmax(sorted_logits, dim=-1) >= top_p  # mass before this token already enough
    sorted_logits[remove] = float("-inf")
    return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)


class BatchRows:
    """Per-row state of one `generate` batch: sampling, detokenization, stop rules, delivery."""

    def __init__(self, handles: list[Handle], tokenizer, eos_ids: set[int], prompt_tokens: list[int]):
        self.handles, self.eos_ids, self.prompt_tokens = handles, eos_ids, prompt_tokens
        self.detok = [Detokenizer(tokenizer, list(h.request.stop)) for h in handles]
        self.generators = []
        for h in handles:
            g = torch.Generator(device="cpu")
            g.manual_seed(h.request.seed if h.request.seed is not None else int(torch.randint(2**62, (1,))))
            self.generators.append(g)
        self.done = [False] * len(handles)
        self.counts = [0] * len(handles)

    def sample(self, scores: torch.Tensor) -> torch.Tensor:
        """Rows with temperature > 0 draw from their own generator; the draw becomes a one-hot row."""
        for i, h in enumerate(self.handles):
            t = h.request.temperature
            if t <= 0 or self.done[i]:
                continue  # greedy: generate's argmax picks it
            logits = top_p_filter(scores[i].float() / t, h.request.top_p)
            choice = torch.multinomial(torch.softmax(logits, -1).cpu(), 1, generator=self.generators[i]).item()
            scores[i] = float("-inf")
            scores[i, choice] = 0.0
        return scores

    def step(self, new_tokens: list[int]) -> list[bool]:
        """Take each row's newest token; deliver its text; say which rows are finished."""
        for i, (h, token) in enumerate(zip(self.handles, new_tokens)):
            if self.done[i]:
                continue
            self.counts[i] += 1
            detok, reason = self.detok[i], None
            if token in self.eos_ids:
                reason = "stop"
                text = detok.flush()
            else:
                text = detok.add(token)
                if detok.stopped:
                    reason = "stop"
                elif h.cancelled:
                    reason = "cancelled"
                elif self.counts[i] >= h.request.max_tokens:
                    reason = "length"
                if reason:
                    text += detok.flush()
            if text or reason:
                h.sink(Delta(text, self.prompt_tokens[i], self.counts[i], reason))
            self.done[i] = reason is not None
        return list(self.done)

    def finish_all(self, reason: str) -> None:
        """Rows generate ended without finishing (it hit its own limit)."""
        for i, h in enumerate(self.handles):
            if not self.done[i]:
                self.done[i] = True
                h.sink(Delta(self.detok[i].flush(), self.prompt_tokens[i], self.counts[i], reason))


class HFEngine:
    """transformers generation behind a request queue, batched (see the module docstring)."""

    name = "hf"

    def __init__(self, model_dir: str | Path, max_batch_size: int = 8, batch_wait_s: float = 0.005,
                 dtype: torch.dtype | None = None, device: str | None = None):
        from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessor, StoppingCriteria

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = dtype or (torch.bfloat16 if device == "cuda" else torch.float32)  # CPUs are slow in bf16
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device).eval()
        self.max_batch_size, self.batch_wait_s = max_batch_size, batch_wait_s
        self.context_length = int(getattr(self.model.config, "max_position_embeddings", 0) or 4096)
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            self.eos_ids.add(self.tokenizer.eos_token_id)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self.eos_ids or {0})

        class Sampler(LogitsProcessor):
            def __call__(self, input_ids, scores):
                return self.rows.sample(scores)

        class Stopper(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.tensor(self.rows.step(input_ids[:, -1].tolist()), device=input_ids.device)

        self._sampler_cls, self._stopper_cls = Sampler, Stopper
        self.batch_sizes: list[int] = []  # requests per generate call (how much batching happened)
        self.lock = threading.Lock()  # one forward pass at a time (generation batches and scoring)
        self.queue: queue.Queue[Handle | None] = queue.Queue()
        self.worker = threading.Thread(target=self._loop, name="llamak-hf-engine", daemon=True)
        self.worker.start()

    # ---------------------------------------------------------------- requests
    def submit(self, request: Request, sink: Callable[[Delta], None]) -> Handle:
        handle = Handle(request, sink)
        self.queue.put(handle)
        return handle

    def stream_sync(self, request: Request) -> Iterator[Delta]:
        """Deltas of one request, for synchronous callers (CLI chat and generate)."""
        deltas: queue.Queue[Delta] = queue.Queue()
        handle = self.submit(request, deltas.put)
        try:
            while True:
                delta = deltas.get()
                yield delta
                if delta.finish_reason:
                    return
        finally:
            handle.cancel()

    async def stream(self, request: Request) -> AsyncIterator[Delta]:
        """Deltas of one request on the caller's event loop (the HTTP server)."""
        loop = asyncio.get_running_loop()
        deltas: asyncio.Queue[Delta] = asyncio.Queue()
        handle = self.submit(request, lambda d: loop.call_soon_threadsafe(deltas.put_nowait, d))
        try:
            while True:
                delta = await deltas.get()
                yield delta
                if delta.finish_reason:
                    return
        finally:
            handle.cancel()  # the client went away, or the stream ended: free the row

    @torch.no_grad()
    def score(self, prompt_ids: list[int], continuations: list[list[int]]) -> list[float]:
        """Sum of log-probabilities of each continuation after the prompt (classification by likelihood)."""
        with self.lock:
            rows = [prompt_ids + c for c in continuations]
            width = max(map(len, rows))
            ids = torch.tensor([r + [self.pad_id] * (width - len(r)) for r in rows], device=self.model.device)
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=self.model.device)
            logprobs = torch.log_softmax(self.model(input_ids=ids, attention_mask=mask).logits.float(), -1)
            out = []
            for i, c in enumerate(continuations):
                positions = range(len(prompt_ids) - 1, len(prompt_ids) - 1 + len(c))
                out.append(sum(logprobs[i, p, t].item() for p, t in zip(positions, c)))
            return out

    async def score_async(self, prompt_ids: list[int], continuations: list[list[int]]) -> list[float]:
        return await asyncio.to_thread(self.score, prompt_ids, continuations)

    def close(self) -> None:
        self.queue.put(None)

    # ---------------------------------------------------------------- the worker
    def _next_batch(self) -> list[Handle] | None:
        first = self.queue.get()
        if first is None:
            return None
        batch = [first]
        deadline = self.batch_wait_s
        while len(batch) < self.max_batch_size:
            try:
                item = self.queue.get(timeout=deadline) if deadline > 0 else self.queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self.queue.put(None)
                break
            batch.append(item)
            deadline = 0  # only the first wait is long: take what is already queued, then start
        return [h for h in batch if not h.cancelled]

    def _loop(self) -> None:
        while (batch := self._next_batch()) is not None:
            if not batch:
                continue
            try:
                self._generate(batch)
            except Exception as e:  # a failed batch must not kill the server: report it to its clients
                for h in batch:
                    h.sink(Delta(f"[generation failed: {type(e).__name__}: {e}]", len(h.request.prompt_ids), 0, "error"))

    @torch.no_grad()
    def _generate(self, batch: list[Handle]) -> None:
        from transformers import LogitsProcessorList, StoppingCriteriaList

        lengths = [len(h.request.prompt_ids) for h in batch]
        width = max(lengths)
        ids = torch.tensor([[self.pad_id] * (width - n) + h.request.prompt_ids for h, n in zip(batch, lengths)])
        mask = torch.tensor([[0] * (width - n) + [1] * n for n in lengths])
        rows = BatchRows(batch, self.tokenizer, self.eos_ids, lengths)
        self.batch_sizes.append(len(batch))
        sampler, stopper = self._sampler_cls(), self._stopper_cls()
        sampler.rows = stopper.rows = rows
        with self.lock:
            self.model.generate(
                input_ids=ids.to(self.model.device), attention_mask=mask.to(self.model.device),
                max_new_tokens=max(h.request.max_tokens for h in batch), do_sample=False,
                logits_processor=LogitsProcessorList([sampler]), stopping_criteria=StoppingCriteriaList([stopper]),
                pad_token_id=self.pad_id, eos_token_id=list(self.eos_ids) or None,
            )
        rows.finish_all("length")


class VLLMEngine:
    """The same interface on vLLM's asynchronous engine (GPU; extra `llamak[vllm]`). Written against
    vLLM's documented AsyncLLMEngine API; not run here (no GPU, vLLM does not install on CPU)."""

    name = "vllm"

    def __init__(self, model_dir: str | Path, gpu_memory_utilization: float = 0.85, max_model_len: int | None = None):
        from transformers import AutoTokenizer
        from vllm import AsyncEngineArgs, AsyncLLMEngine

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.engine = AsyncLLMEngine.from_engine_args(AsyncEngineArgs(
            model=str(model_dir), dtype="bfloat16", gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len))
        self.context_length = max_model_len or int(getattr(self.engine.model_config, "max_model_len", 0) or 4096)
        self._ids = itertools.count()

    async def stream(self, request: Request) -> AsyncIterator[Delta]:
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=request.max_tokens, temperature=request.temperature,
                                top_p=request.top_p if request.temperature > 0 else 1.0, seed=request.seed,
                                stop=request.stop or None)
        sent, n_prompt = 0, len(request.prompt_ids)
        async for out in self.engine.generate({"prompt_token_ids": request.prompt_ids}, params, f"llamak-{next(self._ids)}"):
            choice = out.outputs[0]  # cumulative text; vLLM's detokenizer holds incomplete characters back
            text, sent = choice.text[sent:], len(choice.text)
            reason = choice.finish_reason if out.finished else None
            if text or reason:
                yield Delta(text, n_prompt, len(choice.token_ids), reason)

    async def score_async(self, prompt_ids: list[int], continuations: list[list[int]]) -> list[float]:
        from vllm import SamplingParams

        scores = []
        for c in continuations:  # prompt_logprobs: the log-probability of every prompt token
            params = SamplingParams(max_tokens=1, prompt_logprobs=0)
            final = None
            async for out in self.engine.generate({"prompt_token_ids": prompt_ids + c}, params, f"llamak-score-{next(self._ids)}"):
                final = out
            entries = final.prompt_logprobs[len(prompt_ids):]
            scores.append(sum(e[t].logprob for e, t in zip(entries, c)))
        return scores

    def close(self) -> None:
        self.engine.shutdown_background_loop() if hasattr(self.engine, "shutdown_background_loop") else None


def make_engine(model_dir: str | Path, engine: str = "auto", **kwargs):
    from llamak.generation import resolve_engine

    return VLLMEngine(model_dir) if resolve_engine(engine) == "vllm" else HFEngine(model_dir, **kwargs)


def stream_sync(engine, request: Request) -> Iterator[Delta]:
    """Deltas of one request for synchronous code, on either engine."""
    if hasattr(engine, "stream_sync"):
        yield from engine.stream_sync(request)
        return
    loop = asyncio.new_event_loop()
    agen = engine.stream(request)
    try:
        while True:
            try:
                yield loop.run_until_complete(agen.__anext__())
            except StopAsyncIteration:
                return
    finally:
        loop.run_until_complete(agen.aclose())
        loop.close()


def score_sync(engine, prompt_ids: list[int], continuations: list[list[int]]) -> list[float]:
    if hasattr(engine, "score"):
        return engine.score(prompt_ids, continuations)
    return asyncio.run(engine.score_async(prompt_ids, continuations))
