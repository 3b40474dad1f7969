"""`llamak data clean` on datatrove's Local executor: masking, routing, quality, dedup, bad input,
exclusions, worker invariance."""

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datatrove.data import Document

from llamak.data.clean import clean
from llamak.data.steps import Normalize, QualityFilter, detect_language
from llamak.errors import LlamakError

ROOT = Path(__file__).resolve().parents[1]

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
    summary = clean([str(corpus / "*.jsonl")], tmp_path / "out", workers=1, quality=False, dedup=False)["filter"]
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
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["filter"] == summary


def test_drop_mode_and_off(corpus, tmp_path):
    clean([str(corpus / "*.jsonl")], tmp_path / "out", pii="drop", profanity="off", quality=False, dedup=False)
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


def bundled(path: str, n: int) -> list[str]:
    return [json.loads(line)["text"] for line in (ROOT / path).read_text().splitlines()[:n]]


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    """A small 'crawl': good Korean/English text, planted duplicates, junk, broken rows, four formats."""
    ko, en = bundled("data/ko/domains.jsonl", 6), bundled("data/en/general.jsonl", 4)
    near = ko[0].replace("알려져 있다", "알려졌다", 1).replace("보여 준다", "보여준다", 1)
    assert near != ko[0]
    root = tmp_path_factory.mktemp("web")
    rows_a = [{"id": f"ko{i}", "text": t, "source": "wiki"} for i, t in enumerate(ko[:4])]
    rows_a.append({"id": "ko0-near", "text": near, "source": "mirror"})
    rows_a.append({"id": "spam", "text": "최저가 할인 " * 200})
    lines_a = [json.dumps(r, ensure_ascii=False).encode() for r in rows_a]
    lines_a.insert(2, b'{"id": "broken", "text": "\xff\xfe bad bytes"}')
    lines_a.insert(4, b'{"id": "cut", "text": "half a li')
    lines_a.append(json.dumps({"id": "notext", "body": "no text field"}).encode())
    (root / "a.jsonl").write_bytes(b"\n".join(lines_a) + b"\n")
    rows_b = [{"id": f"en{i}", "text": t} for i, t in enumerate(en)] + [{"id": "en0-copy", "text": en[0]}]
    with gzip.open(root / "b.jsonl.gz", "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows_b)
    pq.write_table(pa.Table.from_pylist([{"id": "ko4", "text": ko[4], "year": 2024}]), root / "c.parquet")
    (root / "d.txt").write_text(ko[5], encoding="utf-8")
    (root / "e.jsonl").write_text("")
    return root


def all_rows(folder: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(folder.glob("*.jsonl*")) for line in (gzip.open(f, "rt") if f.suffix == ".gz" else f.open()).read().splitlines()]


def test_full_pipeline_filters_dedups_and_reports_bad_input(web, tmp_path):
    out = tmp_path / "out"
    summary = clean([str(web)], out, workers=2)
    docs = {r["id"]: r for r in all_rows(out / "documents")}
    kept_pair = {"ko0", "ko0-near"} & set(docs)
    assert len(kept_pair) == 1, "one of the near-duplicate pair stays"
    assert len({"en0", "en0-copy"} & set(docs)) == 1, "one of the exact pair stays"
    assert {"ko1", "ko2", "ko3", "ko4", "en1", "en2", "en3"} <= set(docs), "distinct documents are kept"
    assert str(web / "d.txt") in docs and "spam" not in docs
    assert docs["ko4"]["year"] == 2024 and docs["ko1"]["source"] == "wiki" and docs["ko1"]["language"] == "ko"

    rejected = {(Path(r["file"]).name, r["line"], r["reason"]) for r in all_rows(out / "excluded" / "input")}
    assert rejected == {("a.jsonl", 3, "invalid_utf8"), ("a.jsonl", 5, "malformed_json"), ("a.jsonl", 9, "missing_text"), ("e.jsonl", None, "empty_file")}
    reader = summary["filter"]["📖 - READER: 📚 corpus"]
    assert reader["rejected_invalid_utf8"] == reader["rejected_malformed_json"] == reader["rejected_missing_text"] == 1
    assert [r["id"] for r in all_rows(out / "excluded" / "quality")] == ["spam"]
    assert len(all_rows(out / "excluded" / "near_duplicate")) == 1 and len(all_rows(out / "excluded" / "exact_duplicate")) == 1


def test_full_pipeline_is_the_same_with_one_and_two_workers_and_resumes(web, tmp_path):
    clean([str(web)], tmp_path / "one", workers=1, gzip=True)
    clean([str(web)], tmp_path / "two", workers=2, gzip=True)
    one, two = all_rows(tmp_path / "one" / "documents"), all_rows(tmp_path / "two" / "documents")
    assert one == two and len(one) == 10
    clean([str(web)], tmp_path / "one", workers=1, gzip=True)  # rerun: every task already complete
    assert all_rows(tmp_path / "one" / "documents") == one
    with pytest.raises(LlamakError, match="other inputs or options"):
        clean([str(web)], tmp_path / "one", workers=1, pii="drop")


def test_quality_filter_keeps_good_text_and_drops_junk():
    quality = QualityFilter()
    good = bundled("data/ko/domains.jsonl", 20) + bundled("data/en/general.jsonl", 20)
    assert all(quality.filter(Document(text=t, id="x", metadata={"language": detect_language(t)})) is True for t in good)
    ko = bundled("data/ko/domains.jsonl", 1)[0]
    junk = {
        "ko_gopher_short_doc": "안녕하세요. 반갑습니다.",
        "ko_gopher_below_alpha_threshold": " ".join(str(1000 + i) + "," for i in range(300)) + " 가격표입니다.",
        "ko_gopher_enough_stop_words": "사과 바나나 포도 " * 40,
        "ko_line_punct_ratio": "\n".join(w for w in ko.split(" ")),  # one word per line: a menu, not prose
    }
    for reason, text in junk.items():
        assert quality.filter(Document(text=text, id="x", metadata={"language": "ko"})) == (False, reason)


def test_mojibake_is_repaired():
    broken = "안녕하세요, 서울은 대한민국의 수도입니다. Café".encode().decode("cp1252", errors="replace")
    assert Normalize().format("ì•ˆë…•í•˜ì„¸ìš”") == "안녕하세요"
    assert Normalize().format("Ã©tÃ© à Paris") == "été à Paris"
    assert Normalize().format("서울은 café") == "서울은 café"  # real accents stay
    assert broken != "안녕하세요"


@pytest.mark.parametrize(
    "executor, needle",
    [(dict(kind="slurm"), "needs --partition"), (dict(kind="spark"), "expected one of local, slurm, ray"), (dict(kind="local", workers=0), "at least 1")],
)
def test_executor_choice_is_checked_before_any_work(corpus, tmp_path, executor, needle):
    from llamak.data.clean import CleanOptions, ExecutorOptions

    with pytest.raises(LlamakError, match=needle):
        clean([str(corpus / "*.jsonl")], tmp_path / "out", CleanOptions(), ExecutorOptions(**executor))
    assert not (tmp_path / "out").exists()


def test_cli_prints_the_table_and_rejected_lines(web, tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "llamak.cli", "data", "clean", str(web / "a.jsonl"), "--out", str(tmp_path / "out"), "--no-dedup"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "quality" in result.stdout and "rejected input:" in result.stdout and "a.jsonl:3  invalid_utf8" in result.stdout
    assert "Launching pipeline" not in result.stderr  # datatrove's per-task chatter stays in OUT/logs


# ------------------------------------------------------------------ the fast paths against their anchors


def bundled_texts() -> list[str]:
    texts = []
    for f in sorted((ROOT / "data").rglob("*.jsonl")):
        for line in f.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            texts += [v for v in row.values() if isinstance(v, str) and len(v) > 40]
    return texts


def with_junk(texts: list[str]) -> list[str]:
    """The texts plus broken versions of them: cut short, one word per line, words shuffled."""
    import random

    rng = random.Random(0)
    out = list(texts)
    for t in texts[:150]:
        words = t.split(" ")
        out += [t[: rng.randint(20, 400)], "\n".join(words[: rng.randint(5, 80)]), " ".join(rng.sample(words, min(30, len(words))))]
    return out


def test_quality_rules_keep_and_drop_what_datatrove_does():
    """Our one-pass statistics against datatrove's own Gopher + FineWeb filters: on English with its
    spaCy words, on Korean with Kiwi morphemes as words and the Korean settings llamak used before.
    The same documents are kept and dropped (the reason may differ when several rules fail)."""
    from datatrove.pipeline.filters import FineWebQualityFilter, GopherQualityFilter
    from datatrove.utils.word_tokenizers import WordTokenizer

    from llamak.data.korean import morphemes
    from llamak.data.quality import ENGLISH, KOREAN, quality_problem

    class KiwiWords(WordTokenizer):
        def word_tokenize(self, text):
            return [text[t.start : t.end] for t in morphemes(text)]

        def sent_tokenize(self, text):
            return [text]

        def span_tokenize(self, text):
            return [(0, len(text))]

    stop = ("이", "가", "은", "는", "을", "를", "의", "에", "에서", "도", "와", "과", "로", "으로", "하", "다", "고", "있", "것", "수")
    reference = {
        "en": [GopherQualityFilter(), FineWebQualityFilter()],
        "ko": [GopherQualityFilter(language=KiwiWords(), min_avg_word_length=1, max_avg_word_length=6, max_non_alpha_words_ratio=0.7, min_stop_words=3, stop_words=stop),
               FineWebQualityFilter(language=KiwiWords(), short_line_length=15, stop_chars=(".", "!", "?", "…", "다", "요", ")", '"', "'", "。", ":", ";"))],
    }
    texts = with_junk(bundled_texts())
    disagree = []
    for text in texts:
        lang = "ko" if detect_language(text) == "ko" else "en"
        doc = Document(text=text, id="x")
        kept_by_datatrove = all(rule.filter(doc) is True for rule in reference[lang])
        kept_by_ours = quality_problem(text, KOREAN if lang == "ko" else ENGLISH) is None
        if kept_by_datatrove != kept_by_ours:
            disagree.append((lang, kept_by_datatrove, text[:80]))
    assert len(texts) > 600 and disagree == []


def test_language_fast_paths_decide_as_py3langid_does():
    import py3langid

    foreign = ["Der schnelle braune Fuchs springt über den faulen Hund, und das war nicht das erste Mal in diesem Wald voller Geheimnisse.",
               "Le renard brun rapide saute par-dessus le chien paresseux, et ce n'était pas la première fois dans cette forêt pleine de mystères.",
               "El rápido zorro marrón salta sobre el perro perezoso, y no era la primera vez que lo hacía en este bosque lleno de sorpresas."]
    texts = bundled_texts() + foreign
    for text in texts:
        expected = "ko" if _old_hangul_share(text) >= 0.3 else py3langid.classify(text[:5000])[0]
        assert detect_language(text) == expected, text[:80]


def _old_hangul_share(text: str) -> float:
    letters = [c for c in text[:5000] if c.isalpha()]
    return sum("가" <= c <= "힣" or "ㄱ" <= c <= "ㅣ" for c in letters) / len(letters) if letters else 0.0


def test_pii_prefilter_hides_no_match(monkeypatch):
    import llamak.data.pii as pii

    texts = bundled_texts() + [json.loads(line)["text"] for line in (ROOT / "tests/data/pii_labelled.jsonl").read_text(encoding="utf-8").splitlines()]
    gated = [pii.find_pii(t) for t in texts]
    monkeypatch.setattr(pii, "candidates", lambda text: range(len(pii.RECOGNISERS)))  # every text through all recognisers
    assert [pii.find_pii(t) for t in texts] == gated and sum(map(bool, gated)) > 100


def test_character_shingles_find_near_duplicates():
    from llamak.data.dedup import character_shingles, simplify

    ko = bundled("data/ko/domains.jsonl", 3)

    def jaccard(a, b):
        x, y = (set(character_shingles(simplify(t))[:, 0].tolist()) for t in (a, b))
        return len(x & y) / len(x | y)

    near = ko[0].replace("알려져 있다", "알려졌다", 1)
    assert jaccard(ko[0], near) > 0.9 and jaccard(ko[0], ko[1]) < 0.2
    assert jaccard("Seoul, 2024!", "seoul 1999") == 1.0  # case, punctuation and digits do not count
    assert character_shingles("짧다").shape == (0, 1)
