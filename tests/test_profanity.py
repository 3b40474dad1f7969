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


def test_fresh_held_out_set_is_measured_not_tuned_on(profanity):
    """200 items written by someone who saw neither the filter nor the other sets (2026-11-27), never
    used for tuning: a regression floor at what it measured first, 0.900 recall / 0.027 FPR — short of
    the issue's 0.95 / 0.02, which the development sets meet."""
    items = [json.loads(line) for line in (DATA / "profanity_heldout2.jsonl").read_text(encoding="utf-8").splitlines()]
    offensive = [i for i in items if i["offensive"]]
    clean = [i for i in items if not i["offensive"]]
    recall = sum(profanity.is_offensive(i["text"]) for i in offensive) / len(offensive)
    fpr = sum(profanity.is_offensive(i["text"]) for i in clean) / len(clean)
    korean = [i for i in offensive if i["lang"] == "ko"]
    print(f"\nprofanity_heldout2.jsonl: recall {recall:.3f} (Korean {sum(profanity.is_offensive(i['text']) for i in korean) / len(korean):.3f}), FPR {fpr:.3f}")
    assert recall >= 0.88 and fpr <= 0.04
