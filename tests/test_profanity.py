"""Korean/English profanity filter, scored on a hand-labelled set with hard negatives."""

import json
from collections import Counter
from pathlib import Path

import pytest

from llamak.data.profanity import ProfanityFilter

DATA = Path(__file__).parent / "data"
LABELLED = DATA / "profanity_labelled.jsonl"
DEV2 = DATA / "profanity_dev2.jsonl"  # a second development set: inflections, obfuscations, slurs, threats


@pytest.fixture(scope="module")
def profanity():
    return ProfanityFilter()


def _assert_recall_and_false_positive_rate(profanity, path, min_items):
    items = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(items) >= min_items
    offensive = [i for i in items if i["offensive"]]
    clean = [i for i in items if not i["offensive"]]
    missed = [i["text"] for i in offensive if not profanity.is_offensive(i["text"])]
    flagged = [i["text"] for i in clean if profanity.is_offensive(i["text"])]
    recall = 1 - len(missed) / len(offensive)
    fpr = len(flagged) / len(clean)
    by_category = Counter(i["category"] for i in offensive)
    caught = Counter(i["category"] for i in offensive if i["text"] not in missed)
    print(f"\n{path.name}: offensive {len(offensive)}: recall {recall:.3f}   clean {len(clean)}: false-positive rate {fpr:.3f}")
    print("  recall by category: " + ", ".join(f"{c} {caught[c]}/{n}" for c, n in sorted(by_category.items())))
    print("  missed: " + " | ".join(missed[:10]))
    print("  flagged clean: " + " | ".join(flagged[:10]))
    assert recall >= 0.95 and fpr <= 0.02


def test_labelled_set_recall_and_false_positive_rate(profanity):
    _assert_recall_and_false_positive_rate(profanity, LABELLED, min_items=200)


def test_second_dev_set_recall_and_false_positive_rate(profanity):
    _assert_recall_and_false_positive_rate(profanity, DEV2, min_items=250)


@pytest.mark.parametrize(
    "text",
    ["시발점에서 출발했다", "시발역 앞에서 만나", "병신년 새해 복 많이 받으세요", "수박씨 발라 먹기", "미친 듯이 공부했다",
     "보지 마, 무서운 장면이야", "강아지 새끼 세 마리", "꺼져 가는 불씨", "닥치는 대로 먹었다", "죽여 주는 맛", "18세 이상 관람가",
     "Scunthorpe's class assassin in the cockpit"],
)
def test_innocent_look_alikes_pass(profanity, text):
    assert profanity.find(text) == []


@pytest.mark.parametrize(
    "text, category",
    [("병신이네 진짜", "profanity"), ("지랄하네", "profanity"), ("개새끼야", "profanity"), ("ㅅㅂ 짜증나", "profanity"),
     ("시1발 뭐야", "profanity"), ("씨 발 진짜", "profanity"), ("죽여 버릴 거야", "threat"), ("what the fuck", "profanity")],
)
def test_inflected_particle_attached_and_obfuscated_forms_are_caught(profanity, text, category):
    assert [h.category for h in profanity.find(text)] == [category]


def test_mask_replaces_only_the_offensive_span(profanity):
    masked, counts = profanity.mask("시발점에서 출발했는데 씨발 길이 막혔다")
    assert masked == "시발점에서 출발했는데 <PROFANITY> 길이 막혔다" and counts == Counter({"PROFANITY": 1})


@pytest.mark.parametrize("name", ["profanity_heldout.jsonl", "profanity_heldout2.jsonl", "profanity_heldout3.jsonl", "profanity_heldout5.jsonl"])
def test_former_held_out_sets_now_development_sets(profanity, name):
    """Written apart from the filter and measured first (heldout2: 0.900 / 0.027 on 2026-11-27;
    heldout3: ko 0.670 / 0.010, en 0.620 / 0.010 on 2026-12-03), then used to develop the disguise
    generation and the phrasing rules: development sets now, held to the issue's 0.95 / 0.02 (heldout5,
    the classifier's validation set, with the classifier)."""
    from llamak.data.profanity import default_filter

    _assert_recall_and_false_positive_rate(default_filter(model=True) if name.endswith("5.jsonl") else profanity, DATA / name, min_items=120)


def held_out_rates(filter_, name: str) -> dict:
    items = [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines()]
    rates = {}
    for lang in ("ko", "en"):
        offensive = [i for i in items if i["lang"] == lang and i["offensive"]]
        clean = [i for i in items if i["lang"] == lang and not i["offensive"]]
        recall = sum(filter_.is_offensive(i["text"]) for i in offensive) / len(offensive)
        rates[lang] = (recall, sum(filter_.is_offensive(i["text"]) for i in clean) / len(clean))
        missed = Counter(i["kind"] for i in offensive if not filter_.is_offensive(i["text"]))
        print(f"\n{name} {lang}: recall {rates[lang][0]:.3f}, false positives {rates[lang][1]:.3f}; missed by kind {dict(missed)}")
    return rates


def test_rules_on_the_set_that_ended_their_development(profanity):
    """profanity_heldout4.jsonl (400 items by a separate author, written after rule development ended):
    the rules measured once at Korean 0.680 / 0.010, English 0.660 / 0.010; it then set the first
    sentence classifier's threshold and is training data now. A regression floor for the rules."""
    rates = held_out_rates(profanity, "profanity_heldout4.jsonl")
    assert all(recall >= 0.65 and fp <= 0.02 for recall, fp in rates.values())


def test_rules_and_model_on_text_neither_was_tuned_on():
    """profanity_heldout6.jsonl: 400 items (per language 100 offensive — plain, inflected, disguised,
    harassment, slurs, threats — and 100 hard negatives) by a separate author, measured once after the
    last rules and the retrained classifier: rules Korean 0.730 / 0.000, English 0.680 / 0.000; rules +
    sentence classifier Korean 0.980 / 0.020 (the issue's 0.95 / 0.02: met), English 0.960 / 0.110
    (recall met, false positives not). profanity_heldout5.jsonl was measured once before (rules ko
    0.640 / 0.010, en 0.560 / 0.010; + classifier 0.910 / 0.020, 0.860 / 0.030), then developed on and
    used as the classifier's validation set. A regression floor."""
    from llamak.data.profanity import default_filter

    rules, both = held_out_rates(default_filter(), "profanity_heldout6.jsonl"), held_out_rates(default_filter(model=True), "profanity_heldout6.jsonl")
    assert rules["ko"][0] >= 0.7 and rules["en"][0] >= 0.65 and all(fp <= 0.02 for _, fp in rules.values())
    assert both["ko"][0] >= 0.95 and both["en"][0] >= 0.93 and both["ko"][1] <= 0.03 and both["en"][1] <= 0.13


@pytest.mark.parametrize("text, category", [
    ("tlqkf 진짜 짜증나", "profanity"), ("rotoRl 같으니", "profanity"), ("qudtls 같은 게", "profanity"),  # keyboard in English mode
    ("ssibal 또 졌네", "profanity"), ("씨bal 뭐야", "profanity"), ("G랄하네", "profanity"),  # romanised, mixed, letter names
    ("ㅅㅣㅂㅏㄹ 뭐하냐", "profanity"), ("ㅅ1발 또 튕겼어", "profanity"),  # jamo spelled out, 1 for ㅣ
    ("병.신 같은 게", "profanity"), ("죽1여버린다 진짜로", "threat"), ("개○끼 꺼져", "profanity"), ("이 병○아", "profanity"),  # split, masked
    ("ㅎㄴㅊ들 또 왔네", "slur"),  # initials of a longer word
    ("f4ggots ruin every lobby", "slur"), ("you are a b1tch", "profanity"), ("post more, s1ut", "sexual"),  # leetspeak (1 as i or l)
    ("sh*t happens", "profanity"), ("f**king idiot", "profanity"), ("s h i t, I forgot", "profanity"), ("fuuuuck this", "profanity"),
])
def test_disguises_are_generated_not_listed(profanity, text, category):
    assert category in [h.category for h in profanity.find(text)]


@pytest.mark.parametrize("text", ["오후 3시 발표가 있다", "A씨 발언이 논란", "질병 신고 절차", "개 새끼 한 마리를 입양했다", "ㅋㅋㅋ ㅎㅎ",
                                  "the rotorless drone", "PHP5 and MP3 files", "Plan A B C", "shiitake mushrooms", "I'll shoot you an email"])
def test_disguise_rules_leave_innocent_text(profanity, text):
    assert profanity.find(text) == []


def test_view_hits_map_back_to_the_original_characters(profanity):
    text = "야 ㅅㅣㅂㅏㄹ 그리고 s.h.i.t 그리고 f4ggot"
    assert [h.value for h in profanity.find(text)] == ["ㅅㅣㅂㅏㄹ", "s.h.i.t", "f4ggot"]
    assert profanity.mask(text)[0] == "야 <PROFANITY> 그리고 <PROFANITY> 그리고 <SLUR>"


def test_keyboard_and_romanised_spellings_are_not_english_words(llama3_tokenizer):
    """A generated Latin disguise that is also an English word would mask innocent English text:
    none of them is a word of the Llama-3 vocabulary (128K pieces: every common English word)."""
    from llamak.data.hangul import keyboard_keys, romanisations
    from llamak.data.profanity import load_lexicon

    words = {piece.strip().lower() for piece in llama3_tokenizer.convert_ids_to_tokens(range(len(llama3_tokenizer)))
             if piece.replace("Ġ", "").isascii() and piece.replace("Ġ", "").isalpha()}
    words = {w.replace("ġ", "") for w in words if len(w.replace("ġ", "")) >= 4}
    spellings = [w for entry in load_lexicon().values() for w in entry.get("spellings") or [] if not w.isascii()]
    generated = {keyboard_keys(w).lower() for w in spellings if len(keyboard_keys(w)) >= 4}
    generated |= {r.lower() for w in spellings if 2 <= len(w) <= 3 for r in romanisations(w, 3) if r.isascii()}
    assert sorted(generated & words) == []


def test_prefilter_is_a_superset_of_every_rule(profanity):
    """The RE2 prefilter decides which Python rules run: on every labelled sentence, a rule that matches
    is one the prefilter let through (so the prefilter never hides a hit)."""
    import re2

    from llamak.data.re2_prefilter import re2_superset

    texts = [json.loads(line)["text"] for f in sorted(DATA.glob("profanity_*.jsonl")) for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
    for rule in profanity.rules:
        gate = re2.compile("(?i)" + re2_superset(rule.source))
        for text in texts:
            if rule.pattern.search(text):
                assert gate.search(text), (rule.source, text)


def test_re2_translation():
    from llamak.data.re2_prefilter import alternatives, re2_superset

    assert re2_superset(r"(?<!\w)[씨시](?:[\s\d\W_]|x)+발(?![가-힣])\b") == r"[씨시](?:(?:[^\p{L}\p{N}_]|[\s\x{a0}\x{3000}\p{Nd}_])|x)+발"
    assert alternatives(r"a|b(c|d)|[|]e") == ["a", "b(c|d)", "[|]e"]


# ------------------------------------------------------------------ the learned sentence classifier


def test_model_flags_sentences_the_lexicon_cannot_list():
    from llamak.data.profanity import default_filter

    text = "What colour is your underwear right now? Send a pic. The weather today is sunny and warm."
    rules, both = default_filter(), default_filter(model=True)
    assert rules.find(text) == []
    hits = both.find(text)
    assert [h.category for h in hits] == ["offensive"] and hits[0].value == "What colour is your underwear right now?"
    assert both.mask(text)[0] == "<OFFENSIVE> Send a pic. The weather today is sunny and warm."
    assert both.find("오늘 날씨는 맑고 따뜻합니다. 내일은 비가 온다고 합니다.") == []


def test_sentence_spans_and_threshold_choice():
    import numpy as np

    from llamak.data.profanity_model import sentences, threshold_for

    text = "첫 문장입니다. Second one!\n세 번째 줄"
    assert [text[s:e] for s, e in sentences(text)] == ["첫 문장입니다.", " Second one!", "세 번째 줄"]
    rows = [{"offensive": o, "lang": lang} for o, lang in [(True, "ko"), (False, "ko"), (False, "ko"), (True, "en"), (False, "en")]]
    scores = np.array([0.9, 0.6, 0.2, 0.8, 0.3])
    assert threshold_for(scores, rows, 0.0) == pytest.approx(0.8) and threshold_for(scores, rows, 0.5) == pytest.approx(0.6)


def test_shipped_model_is_reproducible_from_the_repo(tmp_path):
    """`llamak data profanity-train` (the README's command) rebuilds the shipped sentence classifier."""
    import subprocess
    import sys

    import numpy as np

    from llamak.data.profanity_model import default_path
    from llamak.text_classifier import TextClassifier

    out = tmp_path / "p.npz"
    cmd = [sys.executable, "-m", "llamak.cli", "data", "profanity-train", "--data", "tests/data/profanity_*.jsonl", "--exclude", "tests/data/profanity_heldout6.jsonl",
           "--validation", "tests/data/profanity_heldout5.jsonl", "--out", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr
    shipped, rebuilt = TextClassifier.load(default_path()), TextClassifier.load(out)
    assert rebuilt.info == shipped.info and rebuilt.threshold == pytest.approx(shipped.threshold)
    assert np.allclose(rebuilt.coef, shipped.coef, atol=1e-3)
