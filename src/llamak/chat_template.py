"""The Llama-3.1 chat template, written to match Meta's `ChatFormat.encode_dialog_prompt` token for token.

Meta's reference (`llama_models/llama3/chat_format.py`) encodes a dialog as
`<|begin_of_text|>` + for each message `<|start_header_id|>{role}<|end_header_id|>\\n\\n{content}<|eot_id|>`
+ (when asking for a reply) `<|start_header_id|>assistant<|end_header_id|>\\n\\n`, with the `tool` role
written as `ipython`. Unlike the Hugging Face hub template it neither trims contents nor injects a
"Cutting Knowledge Date" system prompt, and neither does this one.

One known difference remains: Meta encodes the header and the content separately, this template
renders them as one string. They agree token for token unless a message *starts* with a newline
(the BPE then merges it with the header's `\\n\\n`).

`ASSISTANT_MASK_TEMPLATE` wraps each assistant turn in `{% generation %}` so that TRL's
`assistant_only_loss=True` (via `return_assistant_tokens_mask`) trains on assistant tokens only.
"""

import re

ASSISTANT_MASK_TEMPLATE = (
    "{{- '<|begin_of_text|>' -}}"
    "{%- for message in messages -%}"
    "{%- set role = 'ipython' if message['role'] in ['tool', 'ipython'] else message['role'] -%}"
    "{%- if message['content'] is string -%}{%- set content = message['content'] -%}"
    "{%- else -%}{%- set content = message['content'] | selectattr('type', 'equalto', 'text') "
    "| map(attribute='text') | join('') -%}{%- endif -%}"
    "{{- '<|start_header_id|>' + role + '<|end_header_id|>\\n\\n' -}}"
    "{%- if role == 'assistant' -%}"
    "{%- generation -%}{{- content + '<|eot_id|>' -}}{%- endgeneration -%}"
    "{%- else -%}{{- content + '<|eot_id|>' -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}{%- endif -%}"
)

_GENERATION_TAG = re.compile(r"\{%-?\s*(?:end)?generation\s*-?%\}")


def has_generation_markers(template: str) -> bool:
    return bool(_GENERATION_TAG.search(template))


def strip_generation_markers(template: str) -> str:
    """The same template without `{% generation %}` / `{% endgeneration %}` (any whitespace control)."""
    return _GENERATION_TAG.sub("", template)


# The default template: the same text without the generation markers.
CHAT_TEMPLATE = strip_generation_markers(ASSISTANT_MASK_TEMPLATE)

# Token strings of the Llama-3 family (ids 128000+ in the Llama-3 tokenizer).
BEGIN_OF_TEXT = "<|begin_of_text|>"
END_OF_TEXT = "<|end_of_text|>"
EOT = "<|eot_id|>"
EOM = "<|eom_id|>"
PAD = "<|finetune_right_pad_id|>"

# ChatML (SmolLM2, Qwen) with assistant-turn markers, for assistant-only loss on those models.
CHATML_ASSISTANT_MASK_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- generation -%}{{- message['content'] + '<|im_end|>' -}}{%- endgeneration -%}{{- '\\n' -}}"
    "{%- else -%}{{- message['content'] + '<|im_end|>\\n' -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
