"""LongPO's loss against a hand computation and its limits; answer log-probs from logits."""

import math

import pytest
import torch

from llamak.train.longpo import LongPOWeights, answer_logps, longpo_loss


def hand(pw, pl, rw, rl, nll, beta, pref_weight, nll_weight):
    z = beta * ((pw - pl) - (rw - rl))
    return nll_weight * nll + pref_weight * -math.log(1 / (1 + math.exp(-z)))


def test_loss_matches_a_hand_computation():
    pw, pl, rw, rl, nll = [-40.0, -55.0], [-48.0, -50.0], [-42.0, -52.0], [-47.0, -49.0], [2.1, 1.7]
    for w in (LongPOWeights(), LongPOWeights(beta=0.5, pref_weight=0.3, nll_weight=0.7)):
        loss, metrics = longpo_loss(*(torch.tensor(x) for x in (pw, pl, rw, rl, nll)), weights=w)
        expected = sum(hand(*row, w.beta, w.pref_weight, w.nll_weight) for row in zip(pw, pl, rw, rl, nll)) / 2
        assert loss.item() == pytest.approx(expected, rel=1e-6)
        margins = [w.beta * ((a - b) - (c - d)) for a, b, c, d in zip(pw, pl, rw, rl)]
        assert metrics["rewards/margins"].item() == pytest.approx(sum(margins) / 2, rel=1e-6)
        assert metrics["rewards/accuracies"].item() == pytest.approx(sum(m > 0 for m in margins) / 2)


def test_limits_beta_zero_and_weights():
    args = [torch.tensor([-40.0]), torch.tensor([-48.0]), torch.tensor([-42.0]), torch.tensor([-47.0]), torch.tensor([2.0])]
    loss, m = longpo_loss(*args, weights=LongPOWeights(beta=0.0, pref_weight=1.0, nll_weight=0.0))
    assert loss.item() == pytest.approx(math.log(2))  # β → 0: no preference signal, −log σ(0)
    only_nll, _ = longpo_loss(*args, weights=LongPOWeights(beta=0.5, pref_weight=0.0, nll_weight=1.0))
    assert only_nll.item() == pytest.approx(2.0)
    only_pref, _ = longpo_loss(*args, weights=LongPOWeights(beta=0.5, pref_weight=1.0, nll_weight=0.0))
    assert only_pref.item() == pytest.approx(-math.log(1 / (1 + math.exp(-0.5 * ((-40 + 48) - (-42 + 47))))))
    # the gradient pushes chosen up and rejected down
    pw, pl = torch.tensor([-40.0], requires_grad=True), torch.tensor([-48.0], requires_grad=True)
    longpo_loss(pw, pl, *args[2:], weights=LongPOWeights(beta=0.5, pref_weight=1.0, nll_weight=0.0))[0].backward()
    assert pw.grad.item() < 0 < pl.grad.item()


def test_answer_logps_sums_only_labelled_tokens():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[-100, -100, 3, 4, -100], [-100, 1, 2, 6, 0]])
    got = answer_logps(logits, labels)
    logp = logits.log_softmax(-1)
    expected = [logp[0, 1, 3] + logp[0, 2, 4], logp[1, 0, 1] + logp[1, 1, 2] + logp[1, 2, 6] + logp[1, 3, 0]]
    assert torch.allclose(got, torch.stack(expected))


# --------------------------------------------------------------------------- synthesis

from llamak.train.longpo_synth import SynthSettings, chunk_document, parse_questions, synthesize  # noqa: E402


class ScriptedWriter:
    """Writes numbered questions (malformed for chunks that mention 'broken'), short-context answers,
    and long-context answers (a refusal for questions about 'secret')."""

    @staticmethod
    def count_tokens(text):
        return len(text.split())

    def generate(self, prompts, sampling=None, desc="", progress=False):
        out = []
        for p in prompts:
            text = p[-1]["content"]
            if desc == "questions":
                out.append("I cannot do numbering." if "broken" in text else "\n".join(f"{i}: question {i} about {text.split()[1]}?" for i in range(1, 5)))
            elif desc == "short answers":
                out.append("A careful answer from the short chunk.")
            else:
                out.append("I'm sorry, I cannot answer that." if "secret" in text.split("\n\n")[-1] else "A vaguer answer after the long document.")
        return out


def test_chunking_is_paragraph_aware_and_bounded():
    doc = "\n\n".join(" ".join(f"w{p}_{i}" for i in range(30)) for p in range(6))
    chunks = chunk_document(doc, lambda t: len(t.split()), 40, 70)
    assert chunks and all(40 <= len(c.split()) <= 70 for c in chunks)
    assert all(c.startswith("w") and "\n\n" in c for c in chunks)  # whole paragraphs, grouped


def test_question_parsing_needs_exactly_n_numbered_questions():
    assert parse_questions("1: a?\n2: b?\n3) c?\n4. d?", 4) == ["a?", "b?", "c?", "d?"]
    assert parse_questions("1: a?\n2: b?", 4) is None
    assert parse_questions("no numbers here", 4) is None


def test_synthesis_makes_well_formed_records_and_filters_bad_generations():
    para = lambda tag, n: " ".join([tag] + [f"word{i}" for i in range(n)])  # noqa: E731
    good = "\n\n".join(para(f"topic{i}", 50) for i in range(4))
    broken = "\n\n".join(para("broken", 50) for _ in range(4))
    secret = "\n\n".join(para("secret", 50) for _ in range(4))
    short = para("tiny", 10)
    settings = SynthSettings(chunk_tokens=(40, 120), long_tokens=400, turns=2, questions=4)
    records, stats = synthesize([good, broken, secret, short], ScriptedWriter(), settings, progress=False)
    assert stats.dropped == {"document_too_short": 1, "malformed_questions": 2, "refusal": 2}
    assert len(records) == 1 and records[0]["document"] == 0 and stats.pairs == 2
    record = records[0]
    assert record["lang"] == "en" and record["long_context"].count("\n\n\n") >= 1
    for turn in record["turns"]:
        assert turn["chunk"] in record["long_context"] and turn["question"].endswith("?")
        assert turn["chosen"] != turn["rejected"]


def test_synth_cli_runs_on_a_tiny_model(llama3_pair, tmp_path):
    import json
    import subprocess
    import sys

    doc = "\n\n".join("서울은 대한민국의 수도이며 한강이 도시를 가로질러 흐른다. " * 6 for _ in range(4))
    (tmp_path / "doc.txt").write_text(doc, encoding="utf-8")
    cmd = [sys.executable, "-m", "llamak.cli", "longpo", "synth", str(tmp_path / "doc.txt"), "--model", str(llama3_pair[0]),
           "--out", str(tmp_path / "out"), "--chunk-tokens", "20,200", "--long-tokens", "600", "--max-new-tokens", "8", "-q"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "synth.json").read_text())
    assert summary["documents"] == 1 and summary["records"] + sum(summary["dropped"].values()) >= 1  # random weights: all dropped
    bad = subprocess.run(cmd[:-1] + ["--chunk-tokens", "300,20"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--chunk-tokens" in bad.stderr


# --------------------------------------------------------------------------- trainer


def scripted_records():
    para = lambda tag, n: " ".join([tag] + [f"word{i}" for i in range(n)])  # noqa: E731
    docs = ["\n\n".join(para(f"topic{i}{d}", 40) for i in range(4)) for d in range(2)]
    records, _ = synthesize(docs, ScriptedWriter(), SynthSettings(chunk_tokens=(30, 100), long_tokens=300), progress=False)
    return records


def test_reference_logps_come_from_the_short_contexts(llama3_pair):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llamak.train.longpo import encode, reference_logps, short_messages, turn_messages
    from llamak.train.sft import assistant_mask_template

    tokenizer = AutoTokenizer.from_pretrained(llama3_pair[0])
    model = AutoModelForCausalLM.from_pretrained(llama3_pair[0], dtype=torch.float32)
    template = assistant_mask_template(tokenizer)
    records = scripted_records()
    refs = reference_logps(model, tokenizer, records, template)

    def summed(messages_per_turn):
        total = 0.0
        for messages in messages_per_turn:
            ids, labels = encode(tokenizer, messages, template)
            with torch.no_grad():
                total += answer_logps(model(torch.tensor([ids])).logits, torch.tensor([labels])).item()
        return total

    record = records[0]
    short = summed([short_messages(t, "chosen") for t in record["turns"]])
    long = summed([turn_messages({**record, "turns": [t]}, "chosen") for t in record["turns"]])  # same answers, long context
    assert refs[0][0] == pytest.approx(short, rel=1e-5)
    assert abs(long - short) > 1e-3  # a reference that saw the long context would give other numbers


def test_longpo_trains_and_logs_its_terms(llama3_pair, tmp_path):
    import json

    from llamak.train.longpo import LongpoConfig, run_longpo
    from llamak.train.longpo_synth import SynthStats, write_synthesis

    write_synthesis(scripted_records(), SynthStats(), SynthSettings(), tmp_path / "data")
    config = LongpoConfig(pairs=str(tmp_path / "data"), max_steps=2, logging_steps=1, learning_rate=1e-3, beta=0.5, pref_weight=1.0, save_steps=50)
    metrics = run_longpo(config, llama3_pair[0], tmp_path / "out")
    first, last = metrics["log_history"][0], metrics["log_history"][-1]
    assert {"loss", "nll", "pref_loss", "rewards/margins"} <= first.keys()
    assert first["loss"] == pytest.approx(first["nll"] + first["pref_loss"], rel=1e-4)  # weights 1 and 1
    assert last["rewards/margins"] > first["rewards/margins"]
    assert json.loads((tmp_path / "out" / "llamak.json").read_text())["stage"] == "longpo"


def test_train_longpo_cli(llama3_pair, tmp_path):
    import subprocess
    import sys

    import yaml

    from llamak.train.longpo_synth import SynthStats, write_synthesis

    write_synthesis(scripted_records(), SynthStats(), SynthSettings(), tmp_path / "data")
    config = tmp_path / "longpo.yaml"
    config.write_text(yaml.safe_dump({"model": str(llama3_pair[0]), "out": str(tmp_path / "out"), "pairs": str(tmp_path / "data"), "max_steps": 1}))
    result = subprocess.run([sys.executable, "-m", "llamak.cli", "train", "longpo", str(config)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "longpo: 1 steps" in result.stdout and (tmp_path / "out" / "model.safetensors").is_file()
    config.write_text(yaml.safe_dump({"model": str(llama3_pair[0]), "out": str(tmp_path / "o2"), "pairs": str(tmp_path / "nowhere")}))
    bad = subprocess.run([sys.executable, "-m", "llamak.cli", "train", "longpo", str(config)], capture_output=True, text=True)
    assert bad.returncode == 2 and "no such file" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_rope_setting_changes_the_policy_only_and_refs_are_cached(llama3_pair, tmp_path):
    import json

    from llamak.train.longpo import LongpoConfig, run_longpo
    from llamak.train.longpo_synth import SynthStats, write_synthesis

    write_synthesis(scripted_records(), SynthStats(), SynthSettings(), tmp_path / "data")
    config = LongpoConfig(pairs=str(tmp_path / "data"), max_steps=1, save_steps=50, rope_theta=1e6)
    run_longpo(config, llama3_pair[0], tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["rope_parameters"]["rope_theta"] == 1e6
    caches = list((tmp_path / "data").glob("ref_logps.*.json"))
    assert len(caches) == 1
    first = caches[0].read_text()
    run_longpo(config.model_copy(update={"rope_theta": None}), llama3_pair[0], tmp_path / "out2")
    assert caches[0].read_text() == first and len(list((tmp_path / "data").glob("ref_logps.*.json"))) == 1  # reused
    original = json.loads((llama3_pair[0] / "config.json").read_text())
    assert json.loads((tmp_path / "out2" / "config.json").read_text())["rope_parameters"] == original["rope_parameters"]


# --------------------------------------------------------------------------- template questions, stage


def test_template_questions_ask_about_terms_typical_of_the_chunk():
    from llamak.train.longpo_synth import template_questions

    long = "The harbour opened in 1890. Trade grew.\n\nThe railway reached the harbour town. Farmers sent grain by railway."
    chunk = long.split("\n\n")[1]
    questions = template_questions(chunk, long, "en", 2)
    assert len(questions) == 2 and all(q.endswith("?") or q.endswith(".") for q in questions)
    assert "railway" in questions[0]  # twice in the chunk, nowhere else; "harbour" is in both paragraphs
    ko_long = "조선은 한양에 도읍을 정했다.\n\n세종은 훈민정음을 만들었다. 훈민정음은 백성을 위한 문자였다."
    ko = template_questions(ko_long.split("\n\n")[1], ko_long, "ko", 1)
    assert ko and "훈민정음" in ko[0]


def test_auto_questions_fall_back_to_templates_only_when_malformed():
    para = lambda tag, n: " ".join([tag] + [f"word{i}" for i in range(n)])  # noqa: E731
    docs = ["\n\n".join(para("broken", 50) for _ in range(4)), "\n\n".join(para(f"topic{i}", 50) for i in range(4))]
    for source, expected_templates in (("auto", 2), ("template", 4)):
        settings = SynthSettings(chunk_tokens=(40, 120), long_tokens=400, turns=2, questions=2, question_source=source)
        records, stats = synthesize(docs, ScriptedWriter(), settings, progress=False)
        assert stats.template_questions == expected_templates and stats.pairs == 4 and "malformed_questions" not in stats.dropped
    from llamak.errors import LlamakError

    with pytest.raises(LlamakError, match="question_source"):
        SynthSettings(question_source="magic")


def test_config_needs_pairs_or_synth_exactly():
    from pydantic import ValidationError

    from llamak.train.longpo import LongpoConfig

    for fields in ({}, {"pairs": "x", "synth": {"documents": ["d.txt"]}}):
        with pytest.raises(ValidationError, match="exactly one"):
            LongpoConfig(**fields)
    with pytest.raises(ValidationError):
        LongpoConfig(synth={"documents": ["d.txt"], "question_source": "magic"})


def test_stage_synthesises_with_its_input_model_and_probes_before_and_after(llama3_pair, tmp_path):
    import json

    from llamak.train.longpo import LongpoConfig, run_longpo

    doc = "\n\n".join(f"Paragraph {i} tells that the river{i} crosses the valley{i} near the old mill{i}. " * 3 for i in range(6))
    (tmp_path / "doc.txt").write_text(doc)
    config = LongpoConfig(
        synth={"documents": [str(tmp_path / "doc.txt")], "chunk_tokens": [30, 120], "long_tokens": 400, "questions": 2,
               "question_source": "template", "min_distinct_4grams": 0.0, "min_answer_chars": 0, "max_new_tokens": 6},
        probes={"lengths": [64], "depths": [0.0, 1.0], "langs": ["en"], "tasks": ["niah"], "samples": 1},
        max_steps=1, save_steps=50)
    out = tmp_path / "out"
    metrics = run_longpo(config, llama3_pair[0], out, progress=False)
    synth = json.loads((out / "synth.json").read_text())
    assert synth["pairs"] >= 1 and synth["template_questions"] >= 1 and metrics["pairs"] == synth["pairs"]
    assert set(metrics["probes"]) == {"before", "after"}
    for when in ("before", "after"):
        result = json.loads((out / "probes" / when / "long.json").read_text())
        assert result["accuracy"] == metrics["probes"][when] and len(result["cells"]) == 2
        assert (out / "probes" / when / "long_heatmap.png").stat().st_size > 1000
    # a rerun reuses the synthesis (same model, settings, documents): the cache key is unchanged
    key = json.loads((tmp_path / "out.synth" / "synth.json").read_text())["key"]
    mtime = (tmp_path / "out.synth" / "pairs.jsonl").stat().st_mtime_ns
    run_longpo(config, llama3_pair[0], out, progress=False)
    assert (tmp_path / "out.synth" / "pairs.jsonl").stat().st_mtime_ns == mtime
    assert json.loads((out / "synth.json").read_text())["key"] == key
