"""GRPO rewards on hand-written Korean and English cases."""

import pytest

from llamak.errors import LlamakError
from llamak.train import rewards as R


def chat(text):
    return [{"role": "assistant", "content": text}]


def user(text):
    return [{"role": "user", "content": text}]


KO_PROMPT = user("서울의 인구는 얼마나 되나요?")


def test_korean_only_rewards_korean_and_penalises_code_switching():
    answers = {
        "korean": "서울의 인구는 약 940만 명입니다.",
        "name": "파이썬 Python 버전 3.12에서는 GPU 없이도 실행돼요.",  # a lone name, an acronym: allowed
        "code": "다음 명령을 실행하세요: `pip install torch` 그러면 설치됩니다.",
        "switch": "서울의 인구는 about nine million people 정도입니다.",
        "english": "Seoul has about 9.4 million people.",
        "hanja": "서울의 人口는 約 940萬 名입니다.",
    }
    scores = dict(zip(answers, R.korean_only([KO_PROMPT] * len(answers), [chat(a) for a in answers.values()])))
    assert scores["korean"] == scores["name"] == scores["code"] == 1.0
    assert scores["switch"] < 0.6
    assert scores["english"] < 0.1
    assert scores["hanja"] < 0.8 and scores["hanja"] < scores["korean"]
    assert R.korean_only([user("What is the population of Seoul?")], [chat("About 9.4 million.")]) == [None]
    assert R.korean_only(["서울은 어디에 있나요?"], ["서울은 한국에 있어요"]) == [1.0]  # strings work too


def test_format_answer_tags_and_json():
    completions = [chat("계산하면 <answer>12</answer>"), chat("<answer></answer>"), chat("12"), chat("<answer>1</answer><answer>2</answer>"),
                   chat('{"이름": "민수", "나이": 12}'), chat('```json\n{"name": "Ann"}\n```'), chat("[1, 2]"), chat("no json"), chat("anything")]
    formats = ["answer_tags"] * 4 + ["json"] * 4 + [None]
    assert R.format(completions, format=formats) == [1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, None]
    with pytest.raises(ValueError, match="unknown format"):
        R.format([chat("x")], format=["xml"])


def test_accuracy_numbers_by_value_labels_normalised():
    cases = [
        ("사과는 모두 <answer>8</answer>개예요.", "8", 1.0),
        ("<answer>8.0</answer>", "8", 1.0),
        ("총 1,250원입니다.", "1250", 1.0),
        ("답은 7입니다. 아니 9입니다.", "9", 1.0),  # the last number counts
        ("<answer>7</answer>", "8", 0.0),
        ("답을 모르겠어요.", "8", 0.0),
        ("긍정입니다.", "긍정", 1.0),
        ("Positive.", "positive", 1.0),
        ("부정", "긍정", 0.0),
        ("긍정적인 면도 있지만 전체적으로는 부정적입니다.", "긍정", 0.0),  # a long hedge is not the label
        ("<answer>스포츠</answer>", "스포츠", 1.0),
    ]
    got = R.accuracy([chat(c) for c, _, _ in cases], answer=[a for _, a, _ in cases])
    assert got == [want for _, _, want in cases]
    assert R.accuracy([chat("3")], answer=[None]) == [None]


def test_length_is_soft_outside_the_range():
    got = R.length([chat("a" * n) for n in (0, 10, 20, 100, 400, 600, 800, 1000)], min_chars=20, max_chars=400)
    assert got == [0.0, 0.5, 1.0, 1.0, 1.0, 0.5, 0.0, 0.0]


def test_no_repetition_catches_loops_in_any_script():
    fluent_ko = "한강은 서울을 가로질러 흐르는 큰 강으로, 시민들의 휴식처가 되어 준다."
    looping_ko = "중에 중에중에중에중에중에중에중에중에중에중에중에중에"
    fluent_en = "The Han River crosses Seoul and gives its residents a place to rest."
    looping_en = "the the the the the the the the the the the the"
    ko, ko_loop, en, en_loop, short = R.no_repetition([chat(t) for t in (fluent_ko, looping_ko, fluent_en, looping_en, "hi")])
    assert ko > 0.95 and en > 0.95 and short == 1.0
    assert ko_loop < 0.3 and en_loop < 0.3


def test_safety_expects_refusals_only_for_harmful_prompts():
    refusal_ko = "죄송하지만 그 요청은 도와드릴 수 없어요. 대신 안전 수칙을 알려 드릴게요."
    refusal_en = "I'm sorry, but I can't help with that."
    helpful_ko = "양파를 반으로 자른 뒤 평평한 면을 도마에 대고 썰면 빨라요."
    helpful_en = "Use `kill PID` or `pkill python` to stop the process."
    completions = [chat(t) for t in (refusal_ko, helpful_ko, refusal_en, helpful_en, refusal_ko, helpful_en, "씨발 그냥 해", "whatever")]
    harmful = [True, True, True, True, False, False, False, None]
    assert R.safety([None] * 8, completions, harmful=harmful) == [1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, None]


def test_build_rewards_names_weights_and_params():
    funcs, weights = R.build_rewards({"korean_only": 1.0, "length": 0.5}, {"length": {"min_chars": 5, "max_chars": 10}})
    assert [f.__name__ for f in funcs] == ["korean_only", "length"] and weights == [1.0, 0.5]
    assert funcs[1]([chat("abcdefghijklmnopqrst")]) == [0.0]  # max 10 chars from reward_params
    with pytest.raises(LlamakError, match="unknown reward 'kroean_only'"):
        R.build_rewards({"kroean_only": 1.0})
