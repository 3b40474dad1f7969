"""llamak — the Llama K recipe (KT) as software.

Block expansion (LLaMA-Pro), Korean/English continued pre-training, instruction tuning, Chat Vector,
DPO/GRPO, LongPO and merging for a Llama-3.x base + Instruct pair, on Hugging Face checkpoints.
"""

__version__ = "0.1.0"

import os as _os

# Offline-first: TRL's trainers ping the Hugging Face hub (telemetry) when they start. Nothing in
# llamak should touch the network unless the user names a hub id; set it to 0 to allow the ping.
_os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
