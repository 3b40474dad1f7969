"""The shape of a Llama-family decoder, from its config alone: layer sizes and parameter counts.

A leaf module (it imports nothing of llamak's but errors): the planner sizes stages with it, the
sharding settings scale DeepSpeed's buffers with it, generation picks tensor parallelism with it.
"""

from __future__ import annotations

from dataclasses import dataclass

from llamak.errors import LlamakError


TRAINABLE_PARTS = ("all", "inserted", "lora", "new_embeddings")


def trainable_parts(value: str | list[str]) -> frozenset[str]:
    """The parts a stage trains: `inserted`, `[new_embeddings, inserted]`, … (validated)."""
    parts = frozenset([value] if isinstance(value, str) else value)
    unknown = sorted(parts - set(TRAINABLE_PARTS))
    if unknown or not parts:
        raise ValueError(f"unknown part {unknown[0] if unknown else '(none)'!r}: expected one or more of {', '.join(TRAINABLE_PARTS)}")
    if "all" in parts and len(parts) > 1:
        raise ValueError("`all` already trains everything: give it alone")
    if {"lora", "inserted"} <= parts:
        raise ValueError("lora with inserted: use trainable: lora with lora.only_inserted: true")
    return parts


@dataclass(frozen=True)
class Shape:
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    max_positions: int
    inserted: int = 0  # LLaMA-Pro blocks among `layers`
    original_layers: int = 0  # layers of the model before any expansion
    added_tokens: int = 0  # rows added by a vocabulary expansion (the end of `vocab`)

    @classmethod
    def from_config(cls, config: dict, inserted: int = 0, original_layers: int | None = None) -> "Shape":
        try:
            heads = config["num_attention_heads"]
            layers = config["num_hidden_layers"]
            return cls(
                layers=layers, hidden=config["hidden_size"], intermediate=config["intermediate_size"], heads=heads,
                kv_heads=config.get("num_key_value_heads") or heads,
                head_dim=config.get("head_dim") or config["hidden_size"] // heads, vocab=config["vocab_size"],
                tied=bool(config.get("tie_word_embeddings", False)),
                max_positions=config.get("max_position_embeddings") or 0, inserted=inserted,
                original_layers=original_layers if original_layers is not None else layers - inserted,
            )
        except KeyError as e:
            raise LlamakError(f"config.json has no {e.args[0]!r}: expected a Llama-family decoder config") from None

    # Parameter counts of a Llama decoder (no biases): attention q, k, v, o; SwiGLU gate, up, down;
    # two RMSNorms per layer; embeddings, final norm, lm_head unless tied.
    @property
    def per_layer(self) -> int:
        q_out, kv_out = self.heads * self.head_dim, self.kv_heads * self.head_dim
        attention = self.hidden * q_out + 2 * self.hidden * kv_out + q_out * self.hidden
        return attention + 3 * self.hidden * self.intermediate + 2 * self.hidden

    @property
    def embedding(self) -> int:
        return self.vocab * self.hidden

    @property
    def total(self) -> int:
        return self.layers * self.per_layer + self.embedding * (1 if self.tied else 2) + self.hidden

    def trainable(self, mode: str | list[str], lora_rank: int = 16, lora_modules: int = 7) -> int:
        """Parameters with gradients: all, the inserted blocks, LoRA adapters on every layer, the rows
        of added tokens (`new_embeddings`), or a list of these."""
        if not isinstance(mode, str):
            return sum(self.trainable(part, lora_rank, lora_modules) for part in mode)
        if mode == "new_embeddings":
            return self.added_tokens * self.hidden * (1 if self.tied else 2)
        if mode == "all":
            return self.total
        if mode == "inserted":
            return self.inserted * self.per_layer
        if mode == "lora":  # r × (in + out) per adapted matrix; 7 = q, k, v, o, gate, up, down
            q_out, kv_out = self.heads * self.head_dim, self.kv_heads * self.head_dim
            dims = [(self.hidden, q_out), (self.hidden, kv_out), (self.hidden, kv_out), (q_out, self.hidden),
                    (self.hidden, self.intermediate), (self.hidden, self.intermediate), (self.intermediate, self.hidden)]
            return self.layers * sum(lora_rank * (i + o) for i, o in dims[:lora_modules])
        raise LlamakError(f"trainable {mode!r}: expected all, inserted, lora or new_embeddings")

