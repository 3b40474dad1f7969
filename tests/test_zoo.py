"""Embedded models: the Llama-3 tokenizer and chat template against Meta's own code, and the zoo builds."""

import json

import pytest
import torch
from llama_models.datatypes import RawMessage
from llama_models.llama3.chat_format import ChatFormat
from llama_models.llama3.tokenizer import Tokenizer as MetaTokenizer

from llamak import zoo
from llamak.chat_template import ASSISTANT_MASK_TEMPLATE

DIALOGS = [
    [{"role": "user", "content": "안녕하세요! 오늘 서울 날씨 어때요?"}],
    [
        {"role": "system", "content": "당신은 친절한 한국어 비서입니다."},
        {"role": "user", "content": "김치찌개 끓이는 법을 알려 주세요."},
        {"role": "assistant", "content": "먼저 김치를 볶은 뒤, 물과 두부를 넣고 15분 정도 끓이세요.\n\n맛있게 드세요!"},
        {"role": "user", "content": "Thanks. Can you say that in English, in two sentences?  "},
    ],
    [
        {"role": "user", "content": "Summarise: The Han River flows through Seoul.\nIt is 494 km long."},
        {"role": "assistant", "content": "The 494 km Han River runs through Seoul."},
        {"role": "user", "content": "def f(x):\n    return x ** 2  # 코드 🙂"},
        {"role": "assistant", "content": "이 함수는 x의 제곱을 돌려줍니다."},
        {"role": "user", "content": "  leading spaces and trailing newline\n"},
    ],
]


@pytest.fixture(scope="module")
def tokenizer():
    return zoo.build_llama3_tokenizer()


@pytest.fixture(scope="module")
def meta():
    return MetaTokenizer.get_instance()


def test_tokenizer_has_all_llama3_ids(tokenizer, meta):
    assert len(tokenizer) == 128256
    for token, token_id in meta.special_tokens.items():
        assert tokenizer.convert_tokens_to_ids(token) == token_id
    assert tokenizer.bos_token_id == 128000 and tokenizer.pad_token_id == 128004


@pytest.mark.parametrize(
    "text",
    ["대한민국은 민주공화국이다. 모든 권력은 국민으로부터 나온다.", "Hello, world! It's 2026; x = 3.14159…", "   spaces\n\n\ttabs 한글과 English 섞기 🙂 123456789"],
)
def test_tokenizer_ids_equal_meta(tokenizer, meta, text):
    assert tokenizer.encode(text, add_special_tokens=False) == meta.encode(text, bos=False, eos=False)
    assert tokenizer.encode(text) == meta.encode(text, bos=True, eos=False)
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


@pytest.mark.parametrize("dialog", DIALOGS)
def test_chat_template_equals_meta_chat_format(tokenizer, meta, dialog):
    ours = tokenizer.apply_chat_template(dialog, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    theirs = ChatFormat(meta).encode_dialog_prompt([RawMessage(role=m["role"], content=m["content"]) for m in dialog]).tokens
    assert ours == theirs


def test_assistant_mask_variant_marks_exactly_the_assistant_turns(tokenizer):
    dialog = DIALOGS[2][:4]
    out = tokenizer.apply_chat_template(
        dialog, chat_template=ASSISTANT_MASK_TEMPLATE, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    plain = tokenizer.apply_chat_template(dialog, tokenize=True, return_dict=True)["input_ids"]
    assert out["input_ids"] == plain  # same tokens as the default template
    masked = [t for t, m in zip(out["input_ids"], out["assistant_masks"]) if m]
    expected = "".join(m["content"] + "<|eot_id|>" for m in dialog if m["role"] == "assistant")
    assert tokenizer.decode(masked) == expected


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    budget = zoo.TrainBudget(pretrain_steps=2, sft_steps=2, batch_size=2, seq_len=64)
    base, instruct = root / "base", root / "instruct"
    base.mkdir()
    instruct.mkdir()
    base_metrics = zoo.build_tiny_base(base, budget)
    instruct_metrics = zoo.build_tiny_instruct(instruct, budget, base=base)
    return base, instruct, base_metrics, instruct_metrics


def test_tiny_pair_is_related_and_loads(tiny_pair):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base, instruct, base_metrics, instruct_metrics = tiny_pair
    for metrics in (base_metrics, instruct_metrics):  # real losses of a 128K-vocabulary model
        assert 0 < metrics["last_loss"] < 13 and 0 < metrics["first_loss"] < 13
    b, i = load_file(base / "model.safetensors"), load_file(instruct / "model.safetensors")
    assert b.keys() == i.keys() and "lm_head.weight" in b  # untied, like Llama-3.1-70B
    changed = [k for k in b if not torch.equal(b[k], i[k])]
    assert len(changed) == len(b)  # SFT moved every tensor: the chat vector is non-trivial
    config = json.loads((instruct / "config.json").read_text())
    assert config["vocab_size"] == 128256 and config["num_hidden_layers"] == 4
    assert json.loads((instruct / "generation_config.json").read_text())["eos_token_id"] == [128001, 128008, 128009]
    tok = AutoTokenizer.from_pretrained(instruct)
    prompt = tok.apply_chat_template([{"role": "user", "content": "안녕?"}], add_generation_prompt=True, return_tensors="pt", return_dict=True)
    model = AutoModelForCausalLM.from_pretrained(instruct)
    out = model.generate(**prompt, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == prompt["input_ids"].shape[1] + 3 or out[0, -1].item() in (128001, 128008, 128009)
    assert (instruct / "additional_chat_templates" / "assistant_mask.jinja").is_file()


def test_tiny_build_is_deterministic(tiny_pair, tmp_path):
    from safetensors.torch import load_file

    base = tiny_pair[0]
    again = tmp_path / "again"
    again.mkdir()
    zoo.build_tiny_base(again, zoo.TrainBudget(pretrain_steps=2, sft_steps=2, batch_size=2, seq_len=64))
    a, b = load_file(base / "model.safetensors"), load_file(again / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_smollm2_from_gguf_is_a_plain_llama_that_answers(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    out = zoo.build("smollm2-135m-instruct", tmp_path / "smol")
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["num_hidden_layers"] == 30
    model = AutoModelForCausalLM.from_pretrained(out)
    assert type(model) is LlamaForCausalLM
    tok = AutoTokenizer.from_pretrained(out)
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    answer = model.generate(**prompt, max_new_tokens=12, do_sample=False)[0, prompt["input_ids"].shape[1] :]
    assert "Paris" in tok.decode(answer)


def test_unknown_name_lists_the_zoo():
    from llamak.errors import LlamakError

    with pytest.raises(LlamakError, match="tiny-base, tiny-instruct, smollm2-135m-instruct"):
        zoo.entry("gpt-5")
