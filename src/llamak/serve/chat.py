"""`llamak chat`: an interactive terminal chat with streaming, history and a few slash commands."""

from __future__ import annotations

import sys

from llamak.serve.engine import Request
from llamak.serve.generate import chat_prompt_ids
from llamak.serve.guard import Guard, refusal

HELP = "/reset  clear the conversation · /system TEXT  set the system prompt (and reset) · /help · /exit (or Ctrl-D)"


def chat_loop(engine, system: str | None = None, max_tokens: int = 512, temperature: float = 0.7, top_p: float = 0.95,
              seed: int | None = None, guard: Guard = Guard("off"), read=input, write=sys.stdout.write) -> int:
    """Read a line, stream the answer, keep the history; return the number of answered turns."""
    history: list[dict] = []
    turns = 0

    def start() -> list[dict]:
        return [{"role": "system", "content": system}] if system else []

    history = start()
    write(f"llamak chat · {HELP}\n")
    while True:
        try:
            line = read("\n> ").strip()
        except (EOFError, KeyboardInterrupt):
            write("\n")
            return turns
        if not line:
            continue
        if line in ("/exit", "/quit"):
            return turns
        if line == "/help":
            write(HELP + "\n")
            continue
        if line == "/reset":
            history = start()
            write("(conversation cleared)\n")
            continue
        if line.startswith("/system"):
            system = line[len("/system"):].strip() or None
            history = start()
            write(f"(system prompt {'set' if system else 'removed'}; conversation cleared)\n")
            continue
        history.append({"role": "user", "content": line})
        if guard.check_input(line).blocked:
            answer = refusal(line)
            write(answer)
        else:
            ids = chat_prompt_ids(engine.tokenizer, history)
            room = engine.context_length - len(ids)
            if room < 1:
                history.pop()
                write("(the conversation is longer than the model's context: /reset)\n")
                continue
            parts = []
            for delta in engine.stream_sync(Request(ids, min(max_tokens, room), temperature, top_p, seed)):
                parts.append(delta.text)
                write(delta.text)
                sys.stdout.flush()
            answer = "".join(parts)
            if guard.check_output(answer).blocked:
                answer = refusal(line)
                write(f"\n[guard] {answer}")
        history.append({"role": "assistant", "content": answer})
        turns += 1
        write("\n")
