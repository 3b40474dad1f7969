"""Launching a training stage on many processes: the driver side.

`llamak run` stays one process (the driver). A stage type that runs on the launched processes (CPT,
SFT, DPO, GRPO, LongPO) is started as a subprocess under torchrun — what `accelerate launch` itself
runs for multi-GPU and DeepSpeed jobs — with one process per GPU (per CPU slot here, on gloo):

    driver ─► python -m llamak.launch …   (torch's elastic agent, one per node)
                 └─► N × python -m llamak.worker OUT.logs/spec.json   (RANK, WORLD_SIZE, LLAMAK_SHARDING)

Under a Slurm allocation of several nodes the agents start with `srun`, one per node, and meet at
the allocation's first node. The workers read the sharding from `LLAMAK_SHARDING` and build the
Trainer config before the model (`train/sharding.py`, `train/common.build_model`). Every rank's
output goes to `OUT.logs/node-K/…/attempt_0/RANK/{stdout,stderr}.log`; rank 0's is also shown. A
rank that dies makes the agent stop the others; its report (rank, exit code or signal) becomes one
line naming the rank and its log, and a rerun resumes from the stage's last checkpoint.

Launch settings come from, weakest first: the recipe's `launch:`, the stage's `launch:`, the usual
environment (`NPROC_PER_NODE`, `NNODES`; `NODE_RANK`, `MASTER_ADDR`, `MASTER_PORT` for the
rendezvous), and the command line (`--processes`, `--nodes`, `--sharding`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from llamak.errors import LlamakError
from llamak.train.sharding import SHARDED, Sharding, require_engine

log = logging.getLogger("llamak")

LOGS_SUFFIX = ".logs"


class LaunchSettings(BaseModel):
    """`launch:` of a recipe or a stage: how many processes per node, nodes, and how to shard."""

    model_config = ConfigDict(extra="forbid")
    processes: int | None = Field(None, ge=1, description="processes per node (one per GPU)")
    nodes: int | None = Field(None, ge=1)
    sharding: Sharding | None = None


@dataclass(frozen=True)
class Launch:
    """Resolved launch settings of one stage."""

    processes: int = 1
    nodes: int = 1
    sharding: str = "none"

    @property
    def world_size(self) -> int:
        return self.processes * self.nodes

    @property
    def launched(self) -> bool:
        """Whether the stage runs as separate processes rather than inside the driver."""
        return self.world_size > 1 or self.sharding in SHARDED

    def settings(self) -> LaunchSettings:
        return LaunchSettings(processes=self.processes, nodes=self.nodes, sharding=self.sharding)

    def record(self) -> dict:
        """What the manifest keeps about where a stage ran."""
        return {**asdict(self), "world_size": self.world_size}


def env_settings(env: dict | None = None) -> LaunchSettings:
    """The launch settings the usual environment variables give (NPROC_PER_NODE, NNODES)."""
    env = os.environ if env is None else env

    def number(name: str) -> int | None:
        value = env.get(name)
        if not value:
            return None
        if not value.isdigit() or int(value) < 1:
            raise LlamakError(f"{name}={value!r}: expected a positive whole number")
        return int(value)

    return LaunchSettings(processes=number("NPROC_PER_NODE"), nodes=number("NNODES"))


def resolve_launch(*layers: LaunchSettings | None) -> Launch:
    """Settings from weakest to strongest: a field set in a later layer wins."""
    fields: dict = {}
    for layer in layers:
        if layer is not None:
            fields |= layer.model_dump(exclude_none=True)
    launch = Launch(**fields)
    # several replicas without sharding is DDP, and one process has nothing to replicate
    if launch.world_size > 1 and launch.sharding == "none":
        return Launch(launch.processes, launch.nodes, "ddp")
    if launch.world_size == 1 and launch.sharding == "ddp":
        return Launch(1, 1, "none")
    return launch


def inside_launch() -> bool:
    """True in a process started by a launcher (torchrun, accelerate launch): stages run here."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 or "LLAMAK_SHARDING" in os.environ


# --------------------------------------------------------------------------- the command


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def in_slurm_allocation(env: dict | None = None) -> bool:
    env = os.environ if env is None else env
    return bool(env.get("SLURM_JOB_ID")) and int(env.get("SLURM_NNODES", "1")) > 1


@dataclass(frozen=True)
class Rendezvous:
    """Where the nodes meet and which node this is (`$SLURM_NODEID` under srun: every node's own)."""

    master_addr: str
    master_port: int
    node_rank: str


def rendezvous(launch: Launch, env: dict | None = None) -> Rendezvous:
    env = os.environ if env is None else env
    port = int(env.get("MASTER_PORT") or free_port())
    if launch.nodes == 1:
        return Rendezvous(env.get("MASTER_ADDR", "127.0.0.1"), port, "0")
    if in_slurm_allocation(env):
        nodes = int(env["SLURM_NNODES"])
        if nodes != launch.nodes:
            raise LlamakError(f"--nodes {launch.nodes}, but the Slurm allocation has {nodes} nodes (SLURM_NNODES)")
        first = subprocess.run(["scontrol", "show", "hostnames", env["SLURM_JOB_NODELIST"]], capture_output=True, text=True, check=True)
        return Rendezvous(env.get("MASTER_ADDR") or first.stdout.split()[0], port, "$SLURM_NODEID")
    missing = [k for k in ("NODE_RANK", "MASTER_ADDR", "MASTER_PORT") if not env.get(k)]
    if missing:
        raise LlamakError(f"--nodes {launch.nodes} outside a Slurm allocation: set {', '.join(missing)} on every node "
                          "(the same MASTER_ADDR/MASTER_PORT, NODE_RANK 0…N-1), or submit recipes/slurm/llama-k-70b.sbatch")
    return Rendezvous(env["MASTER_ADDR"], port, env["NODE_RANK"])


def torchrun_args(launch: Launch, rdzv: Rendezvous, log_dir: Path) -> list[str]:
    """torchrun's arguments: static rendezvous (fixed ranks, no elastic restarts: a dead rank fails
    the stage, and the rerun resumes from its checkpoint), every rank's output in `log_dir`."""
    return [
        "--nnodes", str(launch.nodes), "--nproc-per-node", str(launch.processes), "--node-rank", rdzv.node_rank,
        "--master-addr", rdzv.master_addr, "--master-port", str(rdzv.master_port), "--max-restarts", "0",
        "--log-dir", str(log_dir), "--redirects", "3", "--tee", "3", "--local-ranks-filter", "0",
    ]


def agent_command(launch: Launch, rdzv: Rendezvous, logs: Path, spec: Path) -> list[str]:
    """The command that starts this stage's processes: one agent here, or one per node via srun."""
    node_logs = logs / f"node-{rdzv.node_rank}"
    agent = [sys.executable, "-m", "llamak.launch", str(node_logs), *torchrun_args(launch, rdzv, node_logs),
             "-m", "llamak.worker", str(spec)]
    if rdzv.node_rank != "$SLURM_NODEID":
        return agent
    # one task per node; $SLURM_NODEID is expanded by each task's own shell
    script = " ".join(shlex.quote(a) if "$SLURM_NODEID" not in a else f'"{a}"' for a in agent)
    return ["srun", f"--nodes={launch.nodes}", f"--ntasks={launch.nodes}", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
            "bash", "-c", f"exec {script}"]


def worker_env(launch: Launch) -> dict:
    env = dict(os.environ, LLAMAK_SHARDING=launch.sharding)
    # torchrun sets OMP_NUM_THREADS=1 when it starts several processes; on CPUs share the cores instead
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // launch.processes)))
    # glibc keeps freed blocks for reuse and raises its mmap threshold after each large free, so the
    # weights a rank gathers and frees layer by layer would stay in its heap: fixed thresholds give
    # large blocks back (measured: a 2-rank ZeRO-3 stage's summed peak host memory 3.6 → 2.3 × the model)
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "131072")
    env.setdefault("MALLOC_TRIM_THRESHOLD_", "131072")
    return env


# --------------------------------------------------------------------------- running a stage


def run_launched(name: str, kind: str, config: BaseModel, model: Path, out: Path, launch: Launch) -> dict:
    """Run one training stage on `launch`'s processes; returns the metrics rank 0 wrote."""
    require_engine(launch.sharding)
    out = Path(out).absolute()
    logs = Path(str(out) + LOGS_SUFFIX)
    rdzv = rendezvous(launch)
    # outside Slurm every node runs its own `llamak train`: the first one tidies the shared logs
    main_node = rdzv.node_rank in ("0", "$SLURM_NODEID")
    shutil.rmtree(logs if main_node else logs / f"node-{rdzv.node_rank}", ignore_errors=True)
    logs.mkdir(parents=True, exist_ok=True)
    spec = logs / ("spec.json" if main_node else f"spec-node-{rdzv.node_rank}.json")
    spec.write_text(json.dumps({"name": name, "type": kind, "config": config.model_dump(mode="json"),
                                "model": str(Path(model).absolute()), "out": str(out), "metrics": str(logs / "metrics.json")}, indent=2))
    command = agent_command(launch, rdzv, logs, spec)
    log.info("  launching %s: %d process(es) × %d node(s), sharding %s; logs in %s", name, launch.processes, launch.nodes, launch.sharding, logs)
    proc = subprocess.Popen(command, env=worker_env(launch))
    try:
        rc = proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        proc.wait()
        raise
    metrics = logs / "metrics.json"
    if rc == 0 and not main_node:
        return {}  # global rank 0, on the first node, wrote the output and its metrics
    if rc != 0 or not metrics.is_file():
        raise LlamakError(failure_line(name, logs, launch, out, rc))
    return json.loads(metrics.read_text())


def failure_line(name: str, logs: Path, launch: Launch, out: Path, rc: int) -> str:
    """One line: which rank failed, how, its log, and what a rerun does."""
    from llamak.train.common import CHECKPOINT_SUFFIX, last_complete_checkpoint  # here: imports torch

    failures = [f for report in sorted(logs.glob("node-*/failures.json")) for f in json.loads(report.read_text())]
    checkpoint = last_complete_checkpoint(Path(str(out) + CHECKPOINT_SUFFIX))
    resume = f"the rerun resumes from {Path(checkpoint).name}" if checkpoint else "the rerun starts it again (no checkpoint yet)"
    if not failures:
        return f"stage {name}: the launcher exited with code {rc} before any rank reported; logs in {logs}; {resume}"
    first = root_cause(failures)
    log_file = rank_log(logs, first)
    how = describe(first, log_file)
    where = f"; its log: {log_file}" if log_file else f"; logs in {logs}"
    return f"stage {name}: rank {first['rank']} of {launch.world_size} {how}{where}; {resume}"


def root_cause(failures: list[dict]) -> dict:
    """The failure that started it: a rank killed by a signal (its peers then fail on the broken
    connection), else a llamak error (exit 2), else any other exit, else a rank the agent itself
    stopped (SIGTERM once another failed)."""
    def order(f: dict) -> tuple:
        code = f["exitcode"]
        kind = 3 if code == -signal.SIGTERM else 0 if code < 0 else 1 if code == 2 else 2
        return (kind, f["timestamp"], f["rank"])

    return min(failures, key=order)


def rank_log(logs: Path, failure: dict) -> Path | None:
    found = sorted(logs.glob(f"node-{failure['node']}/*/attempt_*/{failure['local_rank']}/stderr.log"))
    return found[-1] if found else None


def describe(failure: dict, log_file: Path | None) -> str:
    code = failure["exitcode"]
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
        hint = " (killed: out of memory, or by hand)" if name == "SIGKILL" else ""
        return f"died of {name}{hint}"
    text = log_file.read_text(encoding="utf-8", errors="replace") if log_file else ""
    error = re.findall(r"^llamak: error: (.*)$", text, re.M)
    if error:
        return f"stopped: {error[-1]}"
    exception = re.findall(r"^(?:\[rank\d+\]: )?(\w+(?:Error|Exception)\b.*)$", text, re.M)
    return f"failed with exit code {code}" + (f" ({exception[-1][:200]})" if exception else "")


# --------------------------------------------------------------------------- inside the launch


def agent_main(argv: list[str]) -> int:
    """torchrun's elastic agent for this node; a failed rank is written to LOGS/failures.json."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    node_logs, torchrun_argv = Path(argv[0]), argv[1:]
    node_logs.mkdir(parents=True, exist_ok=True)
    args = get_args_parser().parse_args(torchrun_argv)
    try:
        run(args)
    except ChildFailedError as e:
        report = [{"rank": rank, "node": args.node_rank, "local_rank": f.local_rank, "exitcode": f.exitcode, "pid": f.pid, "timestamp": f.timestamp}
                  for rank, f in e.failures.items()]
        (node_logs / "failures.json").write_text(json.dumps(report, indent=2))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(agent_main(sys.argv[1:]))
