"""`llamak data clean` on datatrove's Local executor: masking, routing, exclusions, worker invariance."""

import json
from pathlib import Path

import pytest

from llamak.data.clean import clean
from llamak.data.steps import Normalize, detect_language
from llamak.errors import LlamakError

DOCS_A = [
    {"id": "a1", "text": "연락처는 010-1234-5678,  메일은 hong@example.co.kr입니다. 씨발 진짜."},
    {"id": "a2", "text": "This is an English sentence about Seoul and its rivers."},
    {"id": "a3", "text": "これは日本語の文章です。東京は日本の首都です。"},
]
DOCS_B = [
    {"id": "b1", "text": "시발점에서 출발했다. 주민번호 900101-1234567"},
    {"id": "b2", "text": "카드 번호는 4111 1111 1111 1111 입니다."},
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    for name, docs in (("a.jsonl", DOCS_A), ("b.jsonl", DOCS_B)):
        (root / name).write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs))
    return root


def documents(out: Path) -> dict:
    rows = [json.loads(line) for f in sorted((out / "documents").glob("*.jsonl")) for line in f.read_text().splitlines()]
    return {r["id"]: r["text"] for r in rows}


def test_clean_masks_routes_and_counts(corpus, tmp_path):
    summary = clean([str(corpus / "*.jsonl")], tmp_path / "out", workers=1)
    docs = documents(tmp_path / "out")
    assert docs == {
        "a1": "연락처는 <PHONE>, 메일은 <EMAIL>입니다. <PROFANITY> 진짜.",
        "a2": "This is an English sentence about Seoul and its rivers.",
        "b1": "시발점에서 출발했다. 주민번호 <RRN>",
        "b2": "카드 번호는 <CARD> 입니다.",
    }
    excluded = [json.loads(line) for f in (tmp_path / "out" / "excluded" / "language").glob("*.jsonl") for line in f.read_text().splitlines()]
    assert [d["id"] for d in excluded] == ["a3"]  # Japanese: kept aside with its reason, not lost
    pii = summary["🔻 - FILTER: 🔏 Korean PII"]
    assert pii["pii_PHONE"] == 1 and pii["pii_RRN"] == 1 and pii["pii_CARD"] == 1
    assert json.loads((tmp_path / "out" / "stats.json").read_text()) == summary


def test_one_and_two_workers_give_the_same_documents(corpus, tmp_path):
    clean([str(corpus / "*.jsonl")], tmp_path / "one", workers=1)
    clean([str(corpus / "*.jsonl")], tmp_path / "two", workers=2)
    assert documents(tmp_path / "one") == documents(tmp_path / "two")


def test_drop_mode_and_off(corpus, tmp_path):
    clean([str(corpus / "*.jsonl")], tmp_path / "out", pii="drop", profanity="off")
    docs = documents(tmp_path / "out")
    assert set(docs) == {"a2"}  # a1, b1, b2 hold PII
    assert "씨발" not in str(docs)


def test_bad_arguments(tmp_path):
    with pytest.raises(LlamakError, match="matches no file"):
        clean([str(tmp_path / "none*.jsonl")], tmp_path / "out")
    with pytest.raises(LlamakError, match="--pii 'hide'"):
        clean([str(tmp_path / "x.jsonl")], tmp_path / "out", pii="hide")


def test_normalize_and_language():
    assert Normalize().format("ＡＢ  c\x07\u3000d \n  e ") == "ＡＢ c d\ne"
    assert detect_language("대한민국은 민주공화국이다. Seoul") == "ko"
    assert detect_language("The quick brown fox jumps over the lazy dog.") == "en"
