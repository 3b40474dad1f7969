"""`llamak data mix` (token shares) and `llamak data pack` (packed shards), and CPT on those shards."""

import json

import pyarrow.parquet as pq
import pytest
import torch
from helpers import expand_with_tokenizer, state

from llamak.data.mix import choose_by_draw, mix, parse_ratio
from llamak.data.pack import pack
from llamak.errors import LlamakError
from llamak.train import cpt
from llamak.train.cpt import CptConfig

KO = "한강은 서울을 가로질러 서해로 흐르며, 강변에는 공원과 자전거 길이 이어져 있다. "
EN = "The Han River flows through Seoul and into the Yellow Sea, and its banks are lined with parks. "


@pytest.fixture(scope="module")
def cleaned(tmp_path_factory):
    """Cleaned documents as `llamak data clean` writes them (with `language`), in two files."""
    root = tmp_path_factory.mktemp("cleaned")
    rows = [{"id": f"ko{i}", "text": KO * (1 + i % 5), "language": "ko"} for i in range(60)]
    rows += [{"id": f"en{i}", "text": EN * (1 + i % 3), "language": "en"} for i in range(20)]
    for part in (0, 1):
        (root / f"{part:05d}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows[part::2]))
    return root


def test_parse_ratio_normalises_and_rejects_nonsense():
    assert parse_ratio("ko=1,en=1") == {"ko": 0.5, "en": 0.5}
    with pytest.raises(LlamakError, match="LANG=SHARE"):
        parse_ratio("ko:0.5")
    with pytest.raises(LlamakError, match="positive"):
        parse_ratio("ko=0,en=1")


def test_choose_by_draw_meets_budgets_and_skips_huge_documents():
    draws = {"ko": [(0.001, 5000)] + [(i / 100, 10) for i in range(1, 100)], "en": [(i / 10, 30) for i in range(10)]}
    rule = choose_by_draw(draws, {"ko": 0.5, "en": 0.5})
    assert rule["en"] == (1.0, set())  # the scarce language is kept whole
    threshold, skipped = rule["ko"]
    assert skipped == {0.001}  # 5,000 tokens would blow a 300-token budget
    assert sum(n for d, n in draws["ko"] if d < threshold and d not in skipped) == 300
    with pytest.raises(LlamakError, match="no ja documents"):
        choose_by_draw(draws, {"ko": 0.5, "ja": 0.5})


def test_mix_matches_token_shares_and_ignores_worker_count(cleaned, llama3_pair, tmp_path):
    tokenizer_dir = llama3_pair[0]
    one = mix([str(cleaned)], tokenizer_dir, tmp_path / "one", {"ko": 0.5, "en": 0.5}, workers=1)
    two = mix([str(cleaned)], tokenizer_dir, tmp_path / "two", {"ko": 0.5, "en": 0.5}, workers=2)
    assert one == two
    assert one["tokens"]["en"] == one["available_tokens"]["en"]  # English is the scarce one
    assert abs(one["share"]["ko"] - 0.5) < 0.02
    rows = [json.loads(line) for f in sorted((tmp_path / "one" / "documents").glob("*.jsonl")) for line in f.read_text().splitlines()]
    assert len({r["id"] for r in rows}) == len(rows) == one["documents"]
    assert all(r["tokens"] > 0 for r in rows)


def test_pack_keeps_every_token_in_rows_of_at_most_seq_len(cleaned, llama3_pair, llama3_tokenizer, tmp_path):
    info = pack([str(cleaned)], llama3_pair[0], tmp_path / "packed", seq_len=64, workers=2)
    table = pq.read_table([str(tmp_path / "packed" / "shards" / s) for s in info["shards"]][0])
    rows = []
    for shard in info["shards"]:
        rows += pq.read_table(tmp_path / "packed" / "shards" / shard).to_pylist()
    assert table.column_names == ["input_ids", "seq_lengths"]
    assert all(len(r["input_ids"]) == sum(r["seq_lengths"]) <= 64 for r in rows)
    texts = [json.loads(line)["text"] for f in sorted(cleaned.glob("*.jsonl")) for line in f.read_text().splitlines()]
    expected = sum(len(ids) + 1 for ids in llama3_tokenizer(texts)["input_ids"])  # + EOS
    assert info["tokens"] == expected == sum(len(r["input_ids"]) for r in rows)
    assert info["fill"] > 0.9 and json.loads((tmp_path / "packed" / "pack.json").read_text()) == info


def test_cpt_trains_on_packed_shards_and_checks_them(cleaned, llama3_pair, tmp_path):
    expanded = expand_with_tokenizer(llama3_pair[0], tmp_path / "expanded")
    pack([str(cleaned)], expanded, tmp_path / "packed", seq_len=64)
    config = CptConfig(packed=str(tmp_path / "packed"), max_steps=2, seq_len=64, batch_size=2, save_steps=50, learning_rate=1e-2)
    trainer, *_ = cpt.make_trainer(config, expanded, tmp_path / "ck")
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["input_ids"].shape[0] == 1 and (batch["position_ids"][0] == 0).sum() >= 2  # each document restarts positions
    metrics = cpt.run_cpt(config, expanded, tmp_path / "cpt")
    assert metrics["global_step"] == 2
    before, after = state(expanded), state(tmp_path / "cpt")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    with pytest.raises(LlamakError, match="longer than seq_len"):
        cpt.make_trainer(config.model_copy(update={"seq_len": 32}), expanded, tmp_path / "ck2")
    with pytest.raises(ValueError, match="exactly one of"):
        CptConfig(packed=str(tmp_path / "packed"), corpus={"ko": ["x"]})
