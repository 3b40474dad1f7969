"""llamak — the Llama K recipe (KT) as software.

Block expansion (LLaMA-Pro), Korean/English continued pre-training, instruction tuning, Chat Vector,
DPO/GRPO, LongPO and merging for a Llama-3.x base + Instruct pair, on Hugging Face checkpoints.
"""

__version__ = "0.1.0"
