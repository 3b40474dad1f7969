"""One rank of a launched training stage (`python -m llamak.worker SPEC`, started by `llamak.launch`).

It runs the same stage function a single-process run calls; rank 0 writes the stage's metrics
where the driver reads them. A user error prints `llamak: error: …` (the driver quotes it) and
exits with code 2.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from llamak.errors import LlamakError
from llamak.recipe import STAGES, validate
from llamak.train.sharding import current_sharding, prepare_process_group


def worker_main(argv: list[str]) -> int:
    """One rank of a launched stage: the same stage function a single-process run calls."""
    logging.basicConfig(level=logging.INFO, format="llamak: %(message)s", stream=sys.stderr)
    for noisy in ("transformers", "datasets", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    spec = json.loads(Path(argv[0]).read_text())
    try:
        prepare_process_group(current_sharding())
        config = validate(STAGES[spec["type"]].config(), spec["config"], f"{argv[0]}: ")
        metrics = STAGES[spec["type"]].run(config, Path(spec["model"]), Path(spec["out"]), None)
    except LlamakError as e:
        print(f"llamak: error: {' '.join(str(e).split())}", file=sys.stderr, flush=True)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        tmp = Path(spec["metrics"] + ".tmp")
        tmp.write_text(json.dumps(metrics, ensure_ascii=False, default=str))
        tmp.replace(spec["metrics"])
    return 0


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
