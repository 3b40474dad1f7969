"""Training stages on TRL trainers: CPT, SFT (and later DPO, GRPO, LongPO)."""
