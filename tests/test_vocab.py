"""Korean vocabulary expansion (`llamak vocab expand`) on tiny models with real byte-level BPE
tokenizers: Meta's Llama-3 tokenizer and SmolLM2's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from conftest import make_llama
from test_cli import assert_one_line_error, run
from llamak.errors import CheckpointError, LlamakError
from llamak.checkpoint import VOCAB_MAP_FILE
from llamak.surgery.vocab import expand_vocabulary, only_in_hangul

ROOT = Path(__file__).resolve().parent.parent
CORPUS = [str(ROOT / "data/ko/*.jsonl"), str(ROOT / "data/en/general.jsonl")]
HELDOUT = ROOT / "src/llamak/resources/eval/data"

# Text in other scripts whose UTF-8 shares lead bytes with Hangul (Yi, CJK, Hangul jamo neighbours).
OTHER_SCRIPTS = ["中文测试 日本語のテキスト", "ꀀꀁꀂ Yi syllables ꒐", "emoji 😀 and maths 𝔘𝔫𝔦", "def f(x):\n    return x ** 2  # code",
                 "Ελληνικά, русский, עברית, ไทย", "ㄱㄴㄷ ᄀᄁ compatibility jamo"]


def heldout(lang: str) -> list[str]:
    return [json.loads(line)["text"] for line in (HELDOUT / f"heldout_{lang}.jsonl").read_text().splitlines()]


def english() -> list[str]:
    return [json.loads(line)["text"] for line in (ROOT / "data/en/general.jsonl").read_text().splitlines()]


def chars_per_token(tokenizer, texts):
    return sum(map(len, texts)) / sum(len(tokenizer(t, add_special_tokens=False).input_ids) for t in texts)


@pytest.fixture(scope="module")
def llama3_expanded(tmp_path_factory, llama3_tokenizer):
    root = tmp_path_factory.mktemp("vocab")
    make_llama(root / "base", vocab=len(llama3_tokenizer), seed=3)
    llama3_tokenizer.save_pretrained(root / "base")
    result = expand_vocabulary(root / "base", CORPUS, root / "ko", add=300, progress=False)
    return root / "base", root / "ko", result


@pytest.fixture(scope="module")
def smollm2_expanded(tmp_path_factory, smollm2_tokenizer):
    root = tmp_path_factory.mktemp("vocab-smol")
    make_llama(root / "base", vocab=len(smollm2_tokenizer), seed=4, tied=True)
    smollm2_tokenizer.save_pretrained(root / "base")
    result = expand_vocabulary(root / "base", CORPUS, root / "ko", add=3000, progress=False)
    return root / "base", root / "ko", result


@pytest.mark.parametrize("which", ["llama3_expanded", "smollm2_expanded"])
def test_old_ids_keep_their_meaning_and_other_text_tokenises_as_before(which, request):
    from transformers import AutoTokenizer

    base, out, result = request.getfixturevalue(which)
    old, new = AutoTokenizer.from_pretrained(base), AutoTokenizer.from_pretrained(out)
    assert len(new) == len(old) + result.added == result.rows
    new_vocab = new.get_vocab()
    assert all(new_vocab[token] == i for token, i in old.get_vocab().items())  # specials included
    assert old.chat_template == new.chat_template and old.eos_token == new.eos_token
    for text in english() + OTHER_SCRIPTS + heldout("en"):
        assert old(text).input_ids == new(text).input_ids, text[:40]
    for text in heldout("ko") + OTHER_SCRIPTS:  # decoding still gives the text back
        assert new.decode(new(text, add_special_tokens=False).input_ids) == text
    gained = chars_per_token(new, heldout("ko")) / chars_per_token(old, heldout("ko"))
    assert gained > (1.03 if which == "llama3_expanded" else 2.0)  # held-out Korean, not the corpus


def test_llama3_rows_start_from_the_old_pieces_and_logits_of_old_ids_are_unchanged(llama3_expanded):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base, out, result = llama3_expanded
    vocab_map = json.loads((out / VOCAB_MAP_FILE).read_text())
    assert vocab_map["first_new_id"] == 128256 and vocab_map["added"] == result.added == 300
    old_w, new_w = load_file(base / "model.safetensors"), load_file(out / "model.safetensors")
    embed, head = new_w["model.embed_tokens.weight"], new_w["lm_head.weight"]
    assert embed.shape == head.shape == (128256 + 300, 32)
    assert torch.equal(embed[:128256], old_w["model.embed_tokens.weight"])
    assert torch.equal(head[:128256], old_w["lm_head.weight"])
    for entry in vocab_map["tokens"][:50]:
        pieces = entry["pieces"]
        assert len(pieces) >= 2 and all(p < 128000 for p in pieces)
        assert torch.allclose(embed[entry["id"]], old_w["model.embed_tokens.weight"][pieces].mean(0))
        assert torch.equal(head[entry["id"]], old_w["lm_head.weight"][pieces[0]])
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.convert_ids_to_tokens(vocab_map["tokens"][0]["id"]) == vocab_map["tokens"][0]["token"]

    old_model, new_model = AutoModelForCausalLM.from_pretrained(base), AutoModelForCausalLM.from_pretrained(out)
    ids = tokenizer(english()[0][:300], return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(new_model(ids).logits[..., :128256], old_model(ids).logits)
    lineage = json.loads((out / "llamak.json").read_text())
    assert lineage["stage"] == "vocab" and lineage["vocabulary"]["added"] == 300
    assert lineage["vocabulary"]["korean_chars_per_token"]["after"] > lineage["vocabulary"]["korean_chars_per_token"]["before"]


def test_smollm2_tied_rows_are_the_mean(smollm2_expanded):
    from transformers import AutoConfig

    base, out, result = smollm2_expanded
    new_w, old_w = load_file(out / "model.safetensors"), load_file(base / "model.safetensors")
    assert "lm_head.weight" not in new_w and AutoConfig.from_pretrained(out).vocab_size == 49152 + result.added
    entry = json.loads((out / VOCAB_MAP_FILE).read_text())["tokens"][-1]
    assert torch.allclose(new_w["model.embed_tokens.weight"][entry["id"]], old_w["model.embed_tokens.weight"][entry["pieces"]].mean(0))


def test_only_hangul_bytes_make_new_tokens():
    assert only_in_hangul("한".encode())  # ED 95 9C
    assert only_in_hangul(b"\xeb") and only_in_hangul(b" \xec\x9d")
    assert not only_in_hangul("ꀀ".encode())  # Yi: EA 80 80 shares the lead byte EA
    assert not only_in_hangul(b"\xea") and not only_in_hangul(b"\x95\x9c") and not only_in_hangul(b"ab")
    assert not only_in_hangul("\ue000".encode())  # EE: private use, not Hangul


def test_bad_inputs_are_one_line_errors(tmp_path, tiny_llama):
    with pytest.raises(CheckpointError, match="no tokenizer.json"):
        expand_vocabulary(tiny_llama, CORPUS, tmp_path / "x", add=10, progress=False)
    english_only = tmp_path / "en.jsonl"
    english_only.write_text('{"text": "only English here"}\n')
    assert_one_line_error(run("vocab", "expand", tiny_llama, "--corpus", english_only, "--add", "0", "--out", tmp_path / "y"), "--add 0")
    assert not (tmp_path / "y").exists()


def test_cli_reports_density(tmp_path, llama3_expanded):
    base, _, _ = llama3_expanded
    english_only = tmp_path / "en.jsonl"
    english_only.write_text('{"text": "only English here"}\n')
    assert_one_line_error(run("vocab", "expand", base, "--corpus", english_only, "--add", "5", "--out", tmp_path / "z"), "no Korean words")
    result = run("vocab", "expand", base, "-c", CORPUS[0], "--add", "20", "--out", tmp_path / "ok", "-q")
    assert result.returncode == 0, result.stderr
    assert "added 20 Korean tokens (ids 128,256–128,275)" in result.stdout and "chars/token" in result.stdout
    with pytest.raises(LlamakError, match="already exists"):
        expand_vocabulary(base, CORPUS, tmp_path / "ok", add=5, progress=False)


# --------------------------------------------------------------------------- training the new rows


def korean_corpus(tmp_path):
    path = tmp_path / "ko.jsonl"
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in heldout("ko")[:6]))
    return str(path)


def test_new_embeddings_train_only_the_added_rows_then_with_inserted_blocks(llama3_expanded, tmp_path):
    from helpers import expand_with_tokenizer, state

    from llamak.train import cpt
    from llamak.train.cpt import CptConfig

    _, vocab_model, result = llama3_expanded
    first = result.first_id
    fields = dict(corpus={"ko": [korean_corpus(tmp_path)]}, max_steps=2, seq_len=64, batch_size=2, save_steps=50, learning_rate=1e-2)
    # EEVE's schedule as two stages: the new rows alone, then the new rows and the inserted blocks
    cpt.run_cpt(CptConfig(**fields, trainable="new_embeddings"), vocab_model, tmp_path / "rows")
    before, after = state(vocab_model), state(tmp_path / "rows")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"model.embed_tokens.weight", "lm_head.weight"}
    for name in changed:
        assert torch.equal(before[name][:first], after[name][:first])  # the old vocabulary: bit-identical
        assert not torch.equal(before[name][first:], after[name][first:])
    assert (tmp_path / "rows" / VOCAB_MAP_FILE).is_file()  # travels with the model

    expanded = expand_with_tokenizer(tmp_path / "rows", tmp_path / "expanded")
    metrics = cpt.run_cpt(CptConfig(**fields, trainable=["new_embeddings", "inserted"]), expanded, tmp_path / "both")
    before, after = state(expanded), state(tmp_path / "both")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert {"model.embed_tokens.weight", "lm_head.weight"} < changed
    assert all(k.startswith(("model.layers.2.", "model.layers.5.")) for k in changed - {"model.embed_tokens.weight", "lm_head.weight"})
    assert torch.equal(before["lm_head.weight"][:first], after["lm_head.weight"][:first])
    assert metrics["trainable_parameters"] == 2 * result.added * 32 + 2 * sum(before[k].numel() for k in before if k.startswith("model.layers.2."))


def test_new_embeddings_with_lora_and_bad_combinations(llama3_expanded, llama3_pair, tmp_path):
    from helpers import state
    from pydantic import ValidationError

    from llamak.train import cpt
    from llamak.train.cpt import CptConfig

    _, vocab_model, result = llama3_expanded
    fields = dict(corpus={"ko": [korean_corpus(tmp_path)]}, max_steps=2, seq_len=64, batch_size=2, save_steps=50, learning_rate=1e-2)
    cpt.run_cpt(CptConfig(**fields, trainable=["lora", "new_embeddings"]), vocab_model, tmp_path / "lora")
    before, after = state(vocab_model), state(tmp_path / "lora")
    embed = "model.embed_tokens.weight"
    assert torch.equal(before[embed][: result.first_id], after[embed][: result.first_id])
    assert not torch.equal(before[embed][result.first_id :], after[embed][result.first_id :])
    assert not torch.equal(before["model.layers.0.self_attn.q_proj.weight"], after["model.layers.0.self_attn.q_proj.weight"])

    for bad, needle in [(["all", "lora"], "give it alone"), (["inserted", "lora"], "only_inserted"), ("embeddings", "unknown part")]:
        with pytest.raises(ValidationError, match=needle):
            CptConfig(**fields, trainable=bad)
    with pytest.raises(LlamakError, match="no added tokens"):
        cpt.run_cpt(CptConfig(**fields, trainable="new_embeddings"), llama3_pair[0], tmp_path / "x")
    with pytest.raises(LlamakError, match="weight_decay: 0"):
        cpt.run_cpt(CptConfig(**fields, trainable="new_embeddings", weight_decay=0.1), vocab_model, tmp_path / "y")


def test_chat_vector_from_the_original_vocabulary_onto_the_expanded_model(llama3_pair, tmp_path):
    from llamak.surgery.chat_vector import chat_vector

    base, instruct = llama3_pair
    target = expand_vocabulary(base, CORPUS, tmp_path / "ko", add=40, progress=False)
    result = chat_vector(base, instruct, target.out, tmp_path / "cv", ratio=0.5, progress=False)
    b, i, t, o = (load_file(p / "model.safetensors") for p in (base, instruct, target.out, tmp_path / "cv"))
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        rows = b[name].shape[0]
        assert o[name].shape == t[name].shape == (rows + 40, 32)
        assert torch.allclose(o[name][:rows], t[name][:rows] + 0.5 * (i[name] - b[name]))
        assert torch.equal(o[name][rows:], t[name][rows:])  # added rows: no vector
    layer = "model.layers.1.mlp.up_proj.weight"
    assert torch.allclose(o[layer], t[layer] + 0.5 * (i[layer] - b[layer]))
    assert result.added == len(t) and any("added rows kept" in n for n in result.notes)
    assert (tmp_path / "cv" / VOCAB_MAP_FILE).is_file() and len(json.loads((tmp_path / "cv" / "tokenizer.json").read_text())["model"]["merges"]) > 280000


def test_bits_per_char_is_the_text_likelihood_over_its_characters(llama3_expanded):
    import math

    from lm_eval.models.huggingface import HFLM

    from llamak.evaluate.bits import heldout_texts, run_bits_suite
    from llamak.generation import make_generator

    base, out, _ = llama3_expanded
    results = {}
    for model_dir in (base, out):
        generator = make_generator(model_dir, "hf", 2)
        try:
            # one window per paragraph (the tiny model's config says 256 positions; lm-eval would cut there)
            lm = HFLM(pretrained=generator.model, tokenizer=generator.tokenizer, batch_size=2, max_length=2048)
            results[model_dir] = run_bits_suite(lm, generator, ["ko", "en"], limit=2, seed=0, max_new_tokens=4)
        finally:
            generator.close()
    # by hand: −Σ log p(token | BOS, earlier tokens) of the two Korean paragraphs, over their characters
    generator = make_generator(base, "hf", 2)
    total = 0.0
    with torch.no_grad():
        for text in heldout_texts("ko", 2):
            ids = generator.tokenizer(text, return_tensors="pt").input_ids  # BOS + the text
            logprobs = generator.model(ids).logits[0, :-1].log_softmax(-1)
            total += logprobs.gather(1, ids[0, 1:, None]).sum().item()
    generator.close()
    expected = -total / math.log(2) / sum(map(len, heldout_texts("ko", 2)))
    ko = results[base]["languages"]["ko"]
    assert ko["bits_per_char"] == pytest.approx(expected, rel=1e-4)
    assert ko["bits_per_byte"] == pytest.approx(expected * ko["chars"] / len("".join(heldout_texts("ko", 2)).encode()), rel=1e-4)
    # English tokenises the same in both: same bits; Korean is denser after the expansion
    assert results[out]["languages"]["en"]["bits_per_char"] == pytest.approx(results[base]["languages"]["en"]["bits_per_char"], abs=0.05)
    assert results[out]["languages"]["ko"]["chars_per_token"] > ko["chars_per_token"]
    assert 0 <= results[base]["korean_answers"]["share"] <= 1 and results[base]["tasks"]["ko_answers_in_korean"]["n"] == 2


# --------------------------------------------------------------------------- merging across vocabularies


def noisy_copy(src: Path, out: Path, seed: int) -> Path:
    """A sibling of `src` (same tokenizer and vocab_map) with every weight moved a little."""
    import shutil

    from safetensors.torch import save_file

    shutil.copytree(src, out)
    torch.manual_seed(seed)
    weights = {k: v + 0.05 * torch.randn_like(v) for k, v in load_file(src / "model.safetensors").items()}
    save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
    return out


@pytest.mark.parametrize("source", ["union", "base"])
def test_merge_across_vocabularies_matches_mergekit(llama3_pair, tmp_path, source):
    import yaml
    from test_merge import run_mergekit
    from transformers import AutoTokenizer

    from llamak.surgery.merge import merge

    original = llama3_pair[0]
    expanded = expand_vocabulary(original, CORPUS, tmp_path / "ko", add=40, progress=False).out
    other = noisy_copy(expanded, tmp_path / "ko2", seed=5)
    # union: output = the expanded vocabulary; the 40 new tokens are missing in `original`, present in
    # the base and `other` → they take the base's row. base: output = the original vocabulary.
    base, models = (expanded, [original, other]) if source == "union" else (original, [expanded, other])
    config = {"merge_method": "task_arithmetic", "base_model": str(base), "tokenizer_source": source, "dtype": "float32",
              "models": [{"model": str(m), "parameters": {"weight": w}} for m, w in zip(models, (0.3, 0.6))]}
    path = tmp_path / "merge.yaml"
    path.write_text(yaml.safe_dump(config))
    ours = merge(path, tmp_path / "ours", progress=False)
    theirs = run_mergekit(path, tmp_path / "mergekit")
    assert any("vocabularies differ" in n for n in ours.notes)
    ours_w, theirs_w = load_file(tmp_path / "ours" / "model.safetensors"), {}
    for f in sorted(Path(theirs).glob("*.safetensors")):
        theirs_w.update(load_file(f))
    ours_vocab = AutoTokenizer.from_pretrained(tmp_path / "ours").get_vocab()
    theirs_vocab = AutoTokenizer.from_pretrained(theirs).get_vocab()
    expected_rows = 128256 + (40 if source == "union" else 0)
    assert len(ours_vocab) == expected_rows == ours_w["model.embed_tokens.weight"].shape[0]
    assert set(ours_vocab) == set(theirs_vocab)
    tokens = sorted(ours_vocab)
    ours_ids = torch.tensor([ours_vocab[t] for t in tokens])
    theirs_ids = torch.tensor([theirs_vocab[t] for t in tokens])
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        torch.testing.assert_close(ours_w[name][ours_ids], theirs_w[name][theirs_ids], rtol=1e-5, atol=1e-6)
    layer = "model.layers.1.self_attn.q_proj.weight"
    torch.testing.assert_close(ours_w[layer], theirs_w[layer], rtol=1e-5, atol=1e-6)
    if source == "union":  # ours keeps the expansion's BPE merges (mergekit's would be added tokens)
        korean = heldout("ko")[0]
        assert AutoTokenizer.from_pretrained(tmp_path / "ours")(korean).input_ids == AutoTokenizer.from_pretrained(expanded)(korean).input_ids


def test_union_of_unrelated_vocabularies_is_refused(llama3_pair, smollm2_tokenizer, tmp_path):
    import yaml

    from llamak.surgery.merge import merge

    smol = make_llama(tmp_path / "smol", vocab=len(smollm2_tokenizer), seed=6)
    smollm2_tokenizer.save_pretrained(smol)
    path = tmp_path / "merge.yaml"
    path.write_text(yaml.safe_dump({"merge_method": "linear", "tokenizer_source": "union",
                                    "models": [{"model": str(llama3_pair[0]), "parameters": {"weight": 0.5}},
                                               {"model": str(smol), "parameters": {"weight": 0.5}}]}))
    with pytest.raises(LlamakError, match="no input's vocabulary contains all the others"):
        merge(path, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_packed_rows_stay_valid_when_a_stage_saves_the_same_tokenizer_again(llama3_expanded, tmp_path):
    """A training stage re-saves the tokenizer through transformers (other bytes, same tokenizer):
    rows packed for the vocab stage's tokenizer must still be accepted by a later CPT stage."""
    import shutil

    from transformers import AutoTokenizer

    from llamak.data.pack import tokenizer_fingerprint

    base, out, _ = llama3_expanded
    resaved = tmp_path / "resaved"
    AutoTokenizer.from_pretrained(out).save_pretrained(resaved)
    assert (resaved / "tokenizer.json").read_bytes() != (out / "tokenizer.json").read_bytes()
    assert tokenizer_fingerprint(resaved) == tokenizer_fingerprint(out) != tokenizer_fingerprint(base)
    shutil.rmtree(resaved)
