"""Imported once by the Local executor's fork server: every worker of every stage is forked from it.

datatrove starts each stage's worker processes from a fork server, a fresh interpreter; without
this, each worker of each stage would import datatrove and llamak again (~0.5 s) and build the
profanity filter, Kiwi's model and py3langid's (~3 s) before its first document. Here they are built
once and every worker inherits them, copy-on-write.
"""

from __future__ import annotations

import datatrove.pipeline.dedup  # noqa: F401
import datatrove.pipeline.writers  # noqa: F401

import llamak.data.dedup  # noqa: F401
import llamak.data.readers  # noqa: F401
import llamak.data.steps  # noqa: F401
from llamak.data.korean import morphemes
from llamak.data.profanity import default_filter
from llamak.data.steps import detect_language

default_filter()
morphemes("워밍업 문장입니다.")  # Kiwi loads the rest of its model on the first analysis
detect_language("A sentence in English, loaded once: py3langid builds its model on first use here.")
