"""One Kiwi morpheme analyser per process, for the profanity filter's morpheme rules and LongPO.

Kiwi (kiwipiepy) loads a ~100 MB model, so each process builds it once, lazily (it cannot be
pickled to workers; the data pipeline's fork server builds it before forking them).
`model_type="cong"` is the model kiwipiepy ships; datatrove's own Kiwi tokenizer asks for one that
newer kiwipiepy no longer has. The last few analyses are cached.
"""

from __future__ import annotations

import functools


@functools.cache
def kiwi():
    from kiwipiepy import Kiwi

    # no typo or multi-word dictionaries: the filters never use them, and they double the load time
    return Kiwi(model_type="cong", num_workers=1, load_typo_dict=False, load_multi_dict=False)


@functools.lru_cache(maxsize=4)
def morphemes(text: str) -> tuple:
    return tuple(kiwi().tokenize(text))
