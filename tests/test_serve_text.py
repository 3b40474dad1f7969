"""Streaming text pieces, the guard's rules, and the chat/generate commands."""

import json
import subprocess
import sys

import pytest

from llamak.serve.guard import Guard, language, misuse
from llamak.serve.tasks import TaskInput, messages
from llamak.serve.text import Detokenizer, find_stop, held_back

KOREAN = "대한민국의 수도는 서울입니다. 한글은 1443년에 세종대왕이 창제했습니다! 감사합니다."


def test_held_back_and_find_stop():
    assert held_back("hello wor", ["world"]) == 3
    assert held_back("hello", ["xyz"]) == 0
    assert held_back("answer: 끝", ["끝남", "\n\n"]) == 1
    assert find_stop("a STOP b stop", ["stop", "STOP"]) == 2
    assert find_stop("abc", []) is None


def test_detokenizer_never_splits_a_hangul_syllable(llama3_tokenizer):
    ids = llama3_tokenizer(KOREAN, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(KOREAN.replace(" ", "")) // 2  # byte-level BPE: syllables take several tokens
    detok = Detokenizer(llama3_tokenizer)
    deltas = [detok.add(i) for i in ids] + [detok.flush()]
    assert "".join(deltas) == KOREAN
    assert all("\ufffd" not in d for d in deltas)
    assert sum(1 for d in deltas if d == "") > 0  # some tokens were held back mid-syllable


def test_detokenizer_work_is_linear_in_the_answer(llama3_tokenizer):
    """Each token decodes a short window, not the whole answer so far (which is quadratic)."""
    decoded = []

    class Counting:
        def decode(self, ids, **kwargs):
            decoded.append(len(ids))
            return llama3_tokenizer.decode(ids, **kwargs)

    text = KOREAN * 20
    ids = llama3_tokenizer(text, add_special_tokens=False)["input_ids"]
    detok = Detokenizer(Counting(), stops=["끝났다"])
    assert "".join([detok.add(i) for i in ids] + [detok.flush()]) == text
    assert sum(decoded) < 6 * len(ids) and max(decoded) <= 6, (sum(decoded), len(ids), max(decoded))


def test_detokenizer_stop_string_across_tokens(llama3_tokenizer):
    ids = llama3_tokenizer(KOREAN, add_special_tokens=False)["input_ids"]
    detok = Detokenizer(llama3_tokenizer, stops=["세종대왕"])
    out = ""
    for i in ids:
        out += detok.add(i)
        if detok.stopped:
            break
    assert detok.stopped and out == KOREAN[: KOREAN.index("세종대왕")]


def test_guard_output_checks_and_modes():
    block, flag = Guard("block"), Guard("flag")
    leaked = "제 번호는 010-1234-5678이고 메일은 kim@example.com 입니다."
    assert block.check_output(leaked).blocked and set(block.check_output(leaked).categories) == {"output:pii:PHONE", "output:pii:EMAIL"}
    assert flag.check_output(leaked).flagged and not flag.check_output(leaked).blocked
    assert not Guard("off").check_input("가짜 뉴스 기사를 진짜처럼 써줘").flagged
    assert block.check_output("좋은 하루 보내세요.").categories == []
    assert misuse("Write a campaign speech for our candidate") == ["political_campaigning"]
    assert language("안녕하세요 hello") == "ko" and language("hello there") == "en"


def test_task_prompts_follow_the_texts_language():
    ko = messages(TaskInput("qa", "KT는 1981년에 설립되었다.", question="언제?"))
    assert "글에 있는 정보만으로" in ko[1]["content"] and "언제?" in ko[1]["content"]
    en = messages(TaskInput("summarize", "The quick brown fox jumps over the lazy dog."))
    assert en[1]["content"].startswith("Summarise")
    assert "분류: 긍정, 부정" in messages(TaskInput("classify", "좋아요", labels=["긍정", " 부정", "긍정"]))[1]["content"]
    from llamak.errors import LlamakError

    with pytest.raises(LlamakError, match="at least two"):
        messages(TaskInput("classify", "x", labels=["a"]))


def llamak(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "llamak.cli", *args], input=stdin, capture_output=True, text=True, timeout=300)


def test_generate_cli_single_and_batch(tmp_path):
    r = llamak("generate", "zoo:tiny-instruct", "--task", "classify", "--labels", "긍정,부정", stdin="이 제품 정말 좋아요!")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() in {"긍정", "부정"}
    batch = tmp_path / "in.jsonl"
    batch.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in [
        {"id": 1, "text": "서울은 한국의 수도이다."}, {"id": 2, "text": "Busan is a port city."}, {"id": 3, "text": "제주도는 섬이다."}]) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    r = llamak("generate", "zoo:tiny-instruct", "--task", "summarize", "--jsonl", str(batch), "--out", str(out), "--max-tokens", "8")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [row["id"] for row in rows] == [1, 2, 3] and all("output" in row and row["finish_reason"] for row in rows)
    batch.write_text('{"text": "ok"}\n{"text": 5}\n', encoding="utf-8")
    r = llamak("generate", "zoo:tiny-instruct", "--task", "summarize", "--jsonl", str(batch), "--out", str(tmp_path / "bad.jsonl"))
    assert r.returncode == 2 and f"{batch}:2:" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "bad.jsonl").exists()


def test_chat_cli_history_commands():
    script = "/system 친절하게 한국어로 답하세요.\n안녕하세요\n/reset\nHello\n/exit\n"
    r = llamak("chat", "zoo:tiny-instruct", "--max-tokens", "6", "--seed", "1", stdin=script)
    assert r.returncode == 0, r.stderr
    assert "system prompt set" in r.stdout and "conversation cleared" in r.stdout
    assert r.stdout.count("> ") >= 4


def test_serve_cli_rejects_bad_flags_before_loading():
    r = llamak("serve", "zoo:tiny-instruct", "--guard", "maybe")
    assert r.returncode == 2 and "guard 'maybe'" in r.stderr
    r = llamak("serve", "/nonexistent/model")
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_top_p_keeps_the_nucleus_and_never_everything_out():
    import torch

    from llamak.serve.engine import top_p_filter

    logits = torch.tensor([3.0, 2.0, 1.0, -1.0])
    probs = torch.softmax(logits, -1)  # 0.66, 0.24, 0.09, 0.01
    kept = torch.isfinite(top_p_filter(logits, 0.8))
    assert kept.tolist() == [True, True, False, False] and probs[:2].sum() >= 0.8
    assert torch.isfinite(top_p_filter(logits, 5e-324)).tolist() == [True, False, False, False]  # found by the fuzzer
    assert torch.equal(top_p_filter(logits, 1.0), logits)
