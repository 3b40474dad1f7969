"""Long-context probes: generated lengths and depths, scoring by exact match, CLI."""

import json
import re
import subprocess
import sys

import pytest

from llamak.evaluate.long import NEEDLE, QUESTION, make_probes, run_long_suite

LLAMAK = [sys.executable, "-m", "llamak.cli"]


class Scripted:
    """A stand-in model: answers each probe by reading the haystack (copier) or with another probe's number."""

    def __init__(self, shuffled: bool):
        self.shuffled = shuffled

    @staticmethod
    def count_tokens(text: str) -> int:
        return len(text.split())

    def generate(self, prompts, sampling=None, desc="", progress=False):
        answers = []
        for p in prompts:
            text = p[-1]["content"]
            key = re.search(r"special magic number for (.+?) mentioned|언급된 (.+?)의 특별한", text)
            key = key.group(1) or key.group(2)
            value = re.search(rf"(?:for {re.escape(key)} is: |{re.escape(key)}의 특별한 마법 숫자 중 하나는 )(\d+)", text).group(1)
            answers.append(value)
        if self.shuffled:  # everyone gets the next probe's number
            answers = answers[1:] + answers[:1]
        return answers


def test_a_copier_scores_one_and_a_shuffled_model_about_zero(tmp_path):
    grid = dict(lengths=[200, 400], depths=[0.0, 0.5, 1.0], samples=2)
    copier = run_long_suite(Scripted(False), **grid, out_dir=tmp_path, progress=False)
    assert copier["accuracy"] == 1.0
    assert (tmp_path / "long.json").is_file() and (tmp_path / "long_heatmap.png").stat().st_size > 1000
    shuffled = run_long_suite(Scripted(True), **grid, progress=False)
    assert shuffled["accuracy"] < 0.05
    assert {(c["task"], c["lang"]) for c in copier["cells"]} == {(t, lg) for t in ("niah", "multikey") for lg in ("ko", "en")}


def test_probes_hit_their_length_and_depth(llama3_tokenizer):
    count = lambda t: len(llama3_tokenizer(t, add_special_tokens=False)["input_ids"])  # noqa: E731
    probes = make_probes([256, 1024], [0.0, 0.5, 1.0], 1, ["ko", "en"], ["niah", "multikey"], count)
    for p in probes:
        text = p.prompt[0]["content"]
        assert abs(count(text) - p.length) <= 0.05 * p.length
        needle = NEEDLE[p.lang].format(key=p.key, value=p.answer)
        haystack = text.split("\n\n")[1].replace(needle, "NEEDLE")
        filler = re.sub(NEEDLE[p.lang].format(key=r"\S+", value=r"\d+").replace(".", r"\."), "", haystack)  # drop distractors
        position = filler.index("NEEDLE") / len(filler)
        assert abs(position - p.depth) < 0.12, (p.lang, p.length, p.depth, position)
        assert text.endswith(QUESTION[p.lang].format(key=p.key))
        numbers = re.findall(r"\d{7}", text)
        assert len(numbers) == (3 if p.task == "multikey" else 1) and p.answer in numbers


def test_eval_cli_on_a_tiny_model(tiny_llama, llama3_pair, tmp_path):
    base = llama3_pair[0]
    result = subprocess.run([*LLAMAK, "eval", str(base), "--suite", "long", "--lengths", "96", "--depths", "0,1", "--samples", "1",
                             "--lang", "ko", "--out", str(tmp_path), "-q"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads((tmp_path / "long.json").read_text())
    assert len(results["cells"]) == 4 and "long       accuracy" in result.stdout
    for args, needle in [(["--depths", "0,2"], "within [0, 1]"), (["--suite", "kmmlu"], "unknown suite"), (["--lang", "fr"], "expected ko, en"),
                         (["--engine", "tgi"], "expected one of auto, hf, vllm")]:
        bad = subprocess.run([*LLAMAK, "eval", str(base), *args], capture_output=True, text=True)
        assert bad.returncode == 2 and needle in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_auto_engine_is_transformers_without_a_gpu(llama3_pair):
    import torch

    from llamak.generation import HFGenerator, make_generator

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: auto picks vLLM when it is installed")
    generator = make_generator(llama3_pair[0], "auto", batch_size=2)
    assert isinstance(generator, HFGenerator) and generator.model.device.type == "cpu"


def test_vllm_tensor_parallel_size_follows_the_model_and_the_gpus():
    from llamak.generation import choose_tensor_parallel, tensor_parallel_size

    gb = 1e9
    # the expanded 70B (84.2B params, 168 GB in bf16) on 8 × 80 GB: 8 shards of 21 GB
    assert choose_tensor_parallel(168.5 * gb, 64, 8, 8, 80 * gb) == 8
    assert choose_tensor_parallel(141 * gb, 64, 8, 8, 141 * gb) == 2  # 70B on H200s: two halves fit
    assert choose_tensor_parallel(16 * gb, 32, 8, 8, 80 * gb) == 1  # 8B: one GPU
    assert choose_tensor_parallel(168.5 * gb, 9, 3, 8, 80 * gb) == 1  # heads not divisible: cannot split
    assert choose_tensor_parallel(168.5 * gb, 64, 8, 2, 80 * gb) == 2  # never more than the GPUs
    assert tensor_parallel_size("/nonexistent") == 1  # no GPU here: vLLM is not used, 1 without reading a config
