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


@pytest.mark.parametrize("name", ["profanity_heldout.jsonl", "profanity_heldout2.jsonl", "profanity_heldout3.jsonl"])
def test_former_held_out_sets_now_development_sets(profanity, name):
    """Written apart from the filter and measured first (heldout2: 0.900 / 0.027 on 2026-11-27;
    heldout3: ko 0.670 / 0.010, en 0.620 / 0.010 on 2026-12-03), then used to develop the disguise
    generation and the phrasing rules: development sets now, held to the issue's 0.95 / 0.02."""
    _assert_recall_and_false_positive_rate(profanity, DATA / name, min_items=120)


def test_held_out_set_written_after_development(profanity):
    """profanity_heldout4.jsonl: 400 items (per language 100 offensive — plain, inflected, disguised,
    harassment, slurs, threats — and 100 hard negatives) by an author who saw neither the filter nor
    the other sets, written after development ended and measured once. Measured: Korean recall 0.680,
    false positives 0.010; English 0.660 / 0.010 — disguises and plain insults are caught, harassment
    and indirect threats phrased without offensive words mostly are not (README). A regression floor."""
    items = [json.loads(line) for line in (DATA / "profanity_heldout4.jsonl").read_text(encoding="utf-8").splitlines()]
    for lang in ("ko", "en"):
        offensive = [i for i in items if i["lang"] == lang and i["offensive"]]
        clean = [i for i in items if i["lang"] == lang and not i["offensive"]]
        recall = sum(profanity.is_offensive(i["text"]) for i in offensive) / len(offensive)
        fpr = sum(profanity.is_offensive(i["text"]) for i in clean) / len(clean)
        by_kind = Counter(i["kind"] for i in offensive if not profanity.is_offensive(i["text"]))
        print(f"\nprofanity_heldout4.jsonl {lang}: recall {recall:.3f}, false positives {fpr:.3f}; missed by kind {dict(by_kind)}")
        assert recall >= 0.65 and fpr <= 0.02


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

    from llamak.data.profanity import re2_superset

    texts = [json.loads(line)["text"] for f in sorted(DATA.glob("profanity_*.jsonl")) for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
    for rule in profanity.rules:
        gate = re2.compile("(?i)" + re2_superset(rule.source))
        for text in texts:
            if rule.pattern.search(text):
                assert gate.search(text), (rule.source, text)


def test_re2_translation():
    from llamak.data.profanity import alternatives, re2_superset

    assert re2_superset(r"(?<!\w)[씨시](?:[\s\d\W_]|x)+발(?![가-힣])\b") == r"[씨시](?:(?:[^\p{L}\p{N}_]|[\s\x{a0}\x{3000}\p{Nd}_])|x)+발"
    assert alternatives(r"a|b(c|d)|[|]e") == ["a", "b(c|d)", "[|]e"]
