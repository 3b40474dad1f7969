"""CPT and SFT stages on real TRL trainers, with tiny models on the real Llama-3 tokenizer."""

import json

import pytest
import torch
from helpers import expand_with_tokenizer, state

from llamak.train import cpt, sft
from llamak.train.cpt import CptConfig, mix_by_tokens
from llamak.train.sft import SftConfig

KO = "대한민국은 민주공화국이다. 대한민국의 주권은 국민에게 있고, 모든 권력은 국민으로부터 나온다. "
EN = "The Han River flows through Seoul and into the Yellow Sea, and its banks are lined with parks. "


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    (root / "ko.jsonl").write_text("".join(json.dumps({"text": KO * (i + 1)}, ensure_ascii=False) + "\n" for i in range(12)))
    (root / "en.jsonl").write_text("".join(json.dumps({"text": EN * (i + 1)}) + "\n" for i in range(12)))
    (root / "long.txt").write_text(KO * 40)  # ~1,000 tokens: longer than seq_len, must be split, not cut
    return root


@pytest.fixture(scope="module")
def expanded(llama3_pair, tmp_path_factory):
    return expand_with_tokenizer(llama3_pair[0], tmp_path_factory.mktemp("expanded") / "model")


def cpt_config(root, **kw):
    fields = dict(corpus={"ko": [str(root / "*.jsonl")]}, max_steps=3, seq_len=64, batch_size=2, save_steps=50, logging_steps=1)
    return CptConfig(**(fields | kw))


def test_trainable_inserted_changes_only_inserted_blocks(expanded, corpus, tmp_path):
    out = tmp_path / "cpt"
    metrics = cpt.run_cpt(cpt_config(corpus, learning_rate=1e-2), expanded, out)
    before, after = state(expanded), state(out)
    assert metrics["global_step"] == 3 and metrics["trainable_share"] < 0.1
    inserted = ("model.layers.2.", "model.layers.5.")
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed and all(k.startswith(inserted) for k in changed)
    # every inserted weight matrix moved (o/down first, then the rest once they are non-zero)
    assert {k for k in changed if k.startswith("model.layers.2.")} >= {"model.layers.2.mlp.down_proj.weight", "model.layers.2.self_attn.o_proj.weight"}
    lineage = json.loads((out / "llamak.json").read_text())
    assert lineage["stage"] == "cpt" and lineage["layer_map"][2] == {"origin": "inserted", "copy_of": 1}


def test_mixing_matches_token_shares_without_repeats():
    docs = {"ko": [f"k{i}" for i in range(100)], "en": [f"e{i}" for i in range(10)]}
    tokens = {"ko": [10] * 100, "en": [30] * 10}  # 1000 ko tokens, 300 en tokens
    chosen, report = mix_by_tokens(docs, tokens, {"ko": 0.5, "en": 0.5}, seed=0)
    assert len(set(chosen)) == len(chosen)
    assert report["tokens"] == {"ko": 300, "en": 300}
    assert report["share"] == {"ko": 0.5, "en": 0.5}


def test_mixing_is_not_skewed_by_one_huge_document():
    docs = {"ko": ["huge"] + [f"k{i}" for i in range(50)], "en": [f"e{i}" for i in range(10)]}
    tokens = {"ko": [5000] + [10] * 50, "en": [30] * 10}
    for seed in range(5):
        _, report = mix_by_tokens(docs, tokens, {"ko": 0.5, "en": 0.5}, seed=seed)
        assert abs(report["share"]["ko"] - 0.5) < 0.02


def test_packed_batches_equal_per_document_logits(expanded, corpus, tmp_path):
    """Padding-free packing: position ids restart per document, so packed logits = separate logits."""
    config = cpt_config(corpus, corpus={"ko": [str(corpus / "long.txt")], "en": [str(corpus / "en.jsonl")]}, trainable="all")
    trainer, *_ = cpt.make_trainer(config, expanded, tmp_path / "ck")
    batch = next(iter(trainer.get_train_dataloader()))
    ids, pos = batch["input_ids"], batch["position_ids"]
    assert ids.shape[0] == 1  # padding-free: the whole batch is one flattened row
    starts = (pos[0] == 0).nonzero().flatten().tolist() + [ids.shape[1]]
    assert len(starts) > 2, "expected several documents packed into one row"
    model = trainer.model.eval()
    with torch.no_grad():
        packed = model(input_ids=ids, position_ids=pos).logits[0]
        for a, b in zip(starts, starts[1:]):
            alone = model(input_ids=ids[:, a:b]).logits[0]
            assert torch.allclose(packed[a:b], alone, atol=1e-5)


def test_long_documents_are_split_not_truncated(expanded, corpus, tmp_path):
    config = cpt_config(corpus, corpus={"ko": [str(corpus / "long.txt")]}, trainable="all")
    trainer, tokenizer, *_ = cpt.make_trainer(config, expanded, tmp_path / "ck")
    expected = len(tokenizer(KO * 40)["input_ids"]) + 1  # + the EOS TRL appends
    assert sum(len(row) for row in trainer.train_dataset["input_ids"]) == expected
    assert max(len(row) for row in trainer.train_dataset["input_ids"]) <= 64


def test_sft_labels_only_assistant_tokens_and_their_eot(llama3_pair, tmp_path):
    chat = [
        {"role": "system", "content": "간결하게 답하세요."},
        {"role": "user", "content": "서울은 어느 나라의 수도인가요?"},
        {"role": "assistant", "content": "서울은 대한민국의 수도입니다."},
        {"role": "user", "content": "And in English?"},
        {"role": "assistant", "content": "Seoul is the capital of South Korea."},
    ]
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps({"messages": chat}, ensure_ascii=False) + "\n")
    config = SftConfig(dataset=[str(data)], max_steps=1, seq_len=256, batch_size=1, packing=False)
    trainer, tokenizer, *_ = sft.make_trainer(config, llama3_pair[1], tmp_path / "ck")
    batch = next(iter(trainer.get_train_dataloader()))
    labels = batch["labels"][0]
    labelled = tokenizer.decode(labels[labels != -100])
    assert labelled == "서울은 대한민국의 수도입니다.<|eot_id|>Seoul is the capital of South Korea.<|eot_id|>"


def test_sft_packed_labels_cover_every_assistant_turn_and_nothing_else(llama3_pair, tmp_path):
    chats = [
        [{"role": "user", "content": f"질문 {i}: 한국의 수도는?"}, {"role": "assistant", "content": f"서울입니다 ({i})."}]
        for i in range(4)
    ]
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps({"messages": c}, ensure_ascii=False) + "\n" for c in chats))
    config = SftConfig(dataset=[str(data)], max_steps=1, seq_len=512, batch_size=4, packing=True)
    trainer, tokenizer, *_ = sft.make_trainer(config, llama3_pair[1], tmp_path / "ck")
    batch = next(iter(trainer.get_train_dataloader()))
    labels = batch["labels"][0]
    pieces = tokenizer.decode(labels[labels != -100]).split("<|eot_id|>")[:-1]
    assert sorted(pieces) == sorted(c[1]["content"] for c in chats)
    assert "질문" not in "".join(pieces)
    # the tokenizer saved with the model renders exactly what was trained, minus the markers
    assert "generation %}" not in tokenizer.chat_template and "generation -%}" not in tokenizer.chat_template


def test_sft_lora_is_merged_into_plain_weights(llama3_pair, tmp_path):
    data = tmp_path / "chat.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"질문 {i}"}, {"role": "assistant", "content": f"답변 {i}입니다."}]} for i in range(8)]
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    out = tmp_path / "sft"
    config = SftConfig(dataset=[str(data)], max_steps=2, seq_len=64, batch_size=2, trainable="lora", learning_rate=1e-2)
    metrics = sft.run_sft(config, llama3_pair[1], out)
    assert metrics["trainable_share"] < 0.05
    before, after = state(llama3_pair[1]), state(out)
    assert before.keys() == after.keys()  # no lora_A/lora_B left: merged
    assert any(not torch.equal(before[k], after[k]) for k in before if "q_proj" in k)
