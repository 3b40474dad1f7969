"""`--guard-model`: a Llama-Guard-3-style safety model (or the served model itself) judging each request.

The judge reads the user's message inside a task prompt that lists the hazard categories and answers
`safe`, or `unsafe` and a line of category codes (`S1,S10`). A Llama Guard model's own chat template
writes that prompt (its tokenizer knows the format); any other instruct model gets the same task as a
user message in its chat template. It runs on the same engine type as the served model, greedy, a
few tokens.

    >>> parse_verdict("unsafe\\nS1,S9")
    JudgeVerdict(unsafe=True, categories=['S1', 'S9'], raw='unsafe\\nS1,S9')
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from llamak.serve.engine import Request

# Llama Guard 3's hazard taxonomy (MLCommons AILuminate), by code
CATEGORIES = {
    "S1": "Violent Crimes", "S2": "Non-Violent Crimes", "S3": "Sex Crimes", "S4": "Child Sexual Exploitation",
    "S5": "Defamation", "S6": "Specialized Advice", "S7": "Privacy", "S8": "Intellectual Property",
    "S9": "Indiscriminate Weapons", "S10": "Hate", "S11": "Suicide & Self-Harm", "S12": "Sexual Content",
    "S13": "Elections", "S14": "Code Interpreter Abuse",
}


def task_prompt(message: str, categories: dict[str, str] = CATEGORIES) -> str:
    """The judging task in Llama Guard 3's layout, for a judge whose template does not write it."""
    listed = "\n".join(f"{code}: {name}." for code, name in categories.items())
    return (
        "Task: Check if there is unsafe content in 'User' messages in conversations according to our safety policy "
        "with the below categories.\n\n"
        f"<BEGIN UNSAFE CONTENT CATEGORIES>\n{listed}\n<END UNSAFE CONTENT CATEGORIES>\n\n"
        f"<BEGIN CONVERSATION>\n\nUser: {message}\n\n<END CONVERSATION>\n\n"
        "Provide your safety assessment for ONLY THE LAST User message in the above conversation:\n"
        " - First line must read 'safe' or 'unsafe'.\n"
        " - If unsafe, a second line must include a comma-separated list of violated categories."
    )


@dataclass
class JudgeVerdict:
    unsafe: bool | None  # None: the judge's answer did not follow the format
    categories: list[str] = field(default_factory=list)
    raw: str = ""


_CODE = re.compile(r"\bS(1[0-4]|[1-9])\b")


def parse_verdict(text: str) -> JudgeVerdict:
    """`safe` / `unsafe` on the first non-empty line; category codes after `unsafe`."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    first = lines[0].lower().strip(" .:*") if lines else ""
    if first == "safe":
        return JudgeVerdict(False, [], text)
    if first.startswith("unsafe"):
        rest = " ".join([first[len("unsafe"):], *lines[1:]])
        return JudgeVerdict(True, [f"S{n}" for n in dict.fromkeys(_CODE.findall(rest.upper()))], text)
    return JudgeVerdict(None, [], text)


class SafetyJudge:
    """A judge model on an engine (`llamak.serve.engine`): `verdict(message)` → JudgeVerdict."""

    max_tokens = 16

    def __init__(self, engine, owns_engine: bool = False):
        self.engine = engine
        self.owns_engine = owns_engine  # started for the judge (a model of its own), so the guard stops it
        template = getattr(engine.tokenizer, "chat_template", None) or ""
        if isinstance(template, dict):  # named templates
            template = " ".join(template.values())
        self.llama_guard_template = "UNSAFE CONTENT CATEGORIES" in template.upper()

    def prompt_ids(self, message: str) -> list[int]:
        tokenizer = self.engine.tokenizer
        if self.llama_guard_template:  # Llama Guard's template writes the task itself
            text = tokenizer.apply_chat_template([{"role": "user", "content": message}], tokenize=False)
        elif getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template([{"role": "user", "content": task_prompt(message)}], add_generation_prompt=True, tokenize=False)
        else:
            text = task_prompt(message) + "\n\n"
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    def request(self, message: str) -> Request:
        return Request(self.prompt_ids(message), max_tokens=self.max_tokens, temperature=0.0, stream=False)

    def verdict_sync(self, message: str) -> JudgeVerdict:
        return parse_verdict("".join(d.text for d in self.engine.stream_sync(self.request(message))))

    async def verdict(self, message: str) -> JudgeVerdict:
        return parse_verdict("".join([d.text async for d in self.engine.stream(self.request(message))]))
