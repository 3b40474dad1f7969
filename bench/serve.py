"""Benchmark: `llamak serve` vs `transformers serve` on the same model and machine, same script.

    .venv/bin/python bench/serve.py                       # tiny-instruct and SmolLM2-135M-Instruct
    .venv/bin/python bench/serve.py --models tiny --max-tokens 32

For each model, each server is started as its own process and warmed up with one request; then
C clients (C = 1, 4, 8) each send `--requests` chat completions back to back (non-streamed, greedy,
fixed max_tokens, prompts in Korean and English). Reported: completion tokens/s over the wall time
of the whole round (from each response's `usage`), and p50/p95 request latency. Servers:
`llamak` (HF engine: batched generate on a worker thread), `transformers serve` as it starts by
default, and `transformers serve --continuous-batching` with its paged cache sized for a CPU (the
defaults size it for a GPU: the first CPU request then takes ~50 s). The goal from issue 9: llamak
≥ 1.0× transformers serve's throughput at concurrency 4. Results: bench/results/serve_cpu.json.
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
    return {
        "llamak": [str(BIN / "llamak"), "serve", model_dir, "--port", str(port), "--served-name", model_dir],
        "transformers serve": hf,
        "transformers serve --continuous-batching": hf + cb,
    }


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


def bench_server(name: str, command: list[str], port: int, model_id: str, args) -> list[dict]:
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
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
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 4, 8])
    parser.add_argument("--requests", type=int, default=2, help="requests per client (twice that at concurrency 1)")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--servers", nargs="+", default=None, help="subset of: llamak, 'transformers serve', 'transformers serve --continuous-batching'")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serve_cpu.json")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from llamak.zoo import resolve_model

    report = {"machine": f"{os.cpu_count()} CPU cores", "max_tokens": args.max_tokens, "models": {}}
    for key in args.models:
        model_dir = str(resolve_model(MODELS[key]))
        print(f"{key} ({model_dir})", flush=True)
        rows = []
        for name, command in server_commands(model_dir, free_port()).items():
            if args.servers and name not in args.servers:
                continue
            port = int(command[command.index("--port") + 1])
            rows += bench_server(name, command, port, model_dir, args)
        ours = {r["clients"]: r for r in rows if r["server"] == "llamak"}
        for r in rows:
            if r["server"] != "llamak" and r["clients"] in ours and r["tokens_per_s"] > 0:
                ratio = ours[r["clients"]]["tokens_per_s"] / r["tokens_per_s"]
                print(f"  llamak / {r['server']} at c={r['clients']}: {ratio:.2f}×")
        report["models"][key] = rows
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
