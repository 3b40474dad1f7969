"""Korean/English PII recognisers, scored on a hand-labelled set with hard negatives."""

import json
from collections import Counter
from pathlib import Path

import pytest

from llamak.data.pii import TYPES, find_pii, luhn_ok, mask_pii, registration_type, rrn_check_digit_ok

LABELLED = Path(__file__).parent / "data" / "pii_labelled.jsonl"
# The floors for the four most common types; the context-dependent ones get their own.
FLOORS = {"RRN": (0.99, 0.97), "PHONE": (0.99, 0.97), "EMAIL": (0.99, 0.97), "CARD": (0.99, 0.97)}
OTHER_FLOOR = (0.90, 0.90)


def score(items):
    """Per type: true positives, false positives, false negatives, matching (type, value) pairs per item."""
    tp, fp, fn = Counter(), Counter(), Counter()
    for item in items:
        gold = Counter((p["type"], p["value"]) for p in item["pii"])
        found = Counter((m.type, m.value) for m in find_pii(item["text"]))
        for (kind, _), n in (gold & found).items():
            tp[kind] += n
        for (kind, _), n in (found - gold).items():
            fp[kind] += n
        for (kind, _), n in (gold - found).items():
            fn[kind] += n
    return tp, fp, fn


def test_labelled_set_precision_and_recall():
    items = [json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(items) >= 300
    tp, fp, fn = score(items)
    print(f"\n{'type':<16}{'gold':>6}{'recall':>9}{'precision':>11}")
    failures = []
    for kind in TYPES:
        gold = tp[kind] + fn[kind]
        recall = tp[kind] / gold if gold else 1.0
        precision = tp[kind] / (tp[kind] + fp[kind]) if tp[kind] + fp[kind] else 1.0
        print(f"{kind:<16}{gold:>6}{recall:>9.3f}{precision:>11.3f}")
        min_recall, min_precision = FLOORS.get(kind, OTHER_FLOOR)
        if gold and (recall < min_recall or precision < min_precision):
            failures.append(f"{kind}: recall {recall:.3f}, precision {precision:.3f}")
    assert not failures, failures


def test_masking_uses_typed_placeholders_and_counts():
    text = "연락처 010-1234-5678, 메일 hong@example.co.kr, 주민등록번호 900101-1234567입니다."
    masked, counts = mask_pii(text)
    assert masked == "연락처 <PHONE>, 메일 <EMAIL>, 주민등록번호 <RRN>입니다."
    assert counts == Counter({"PHONE": 1, "EMAIL": 1, "RRN": 1})


@pytest.mark.parametrize(
    "digits, expected",
    [("9001011234567", "RRN"), ("0002294123456", "RRN"), ("0102293123456", None), ("9013011234567", None),
     ("0507157123456", "ARN"), ("9001016123456", "ARN"), ("8512319123456", "RRN")],
)
def test_registration_numbers_need_a_real_date_for_their_century(digits, expected):
    assert registration_type(digits) == expected


def test_check_digit_is_informative_only():
    valid = "900101123456"
    check = next(d for d in "0123456789" if rrn_check_digit_ok(valid + d))
    wrong = str((int(check) + 1) % 10)
    assert rrn_check_digit_ok(valid + check) and not rrn_check_digit_ok(valid + wrong)
    for digits in (valid + check, valid + wrong):  # issued after 2020: random tail, still an RRN
        assert [m.type for m in find_pii(f"번호는 {digits[:6]}-{digits[6:]}")] == ["RRN"]


def test_luhn():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")


def test_placeholder_card_numbers_are_not_cards():
    assert mask_pii("카드 0000-0000-0000-0000 입력 예시")[1] == {}
    assert mask_pii("카드 4111-1111-1111-1111 결제")[1] == {"CARD": 1}
