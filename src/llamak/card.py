"""The model card of a run (`llamak card RUN_DIR`, and the recipe's `card` stage).

`MODEL_CARD.md` follows the seed card's sections — overview, intended and out-of-scope uses, model
type and architecture, size and context length, training data, evaluation, energy, ethical
considerations, risk mitigation and limitations — in Korean, then in English, with Hugging Face
metadata on top. Every fact comes from the run: the recipe, `manifest.json` (stage metrics, data
statistics, evaluation comparison, energy) and the final model's config and safetensors headers.
Fixed text is only the framing that the seed card also states (uses, limitations).
"""

from __future__ import annotations

import importlib.resources
import json
import math
from pathlib import Path

import yaml

from llamak.errors import LlamakError

TRAINING = ("cpt", "sft", "dpo", "grpo", "longpo")
SURGERY = ("expand", "chat_vector", "merge")
# Settings worth a line in the card, per stage type.
SETTINGS = {
    "data": ("inputs", "mix", "seq_len", "pii", "profanity", "quality", "dedup"),
    "expand": ("blocks", "after"),
    "chat_vector": ("ratio", "base", "instruct"),
    "cpt": ("trainable", "max_steps", "seq_len", "learning_rate", "packed", "corpus", "mix"),
    "sft": ("dataset", "trainable", "max_steps", "seq_len", "learning_rate"),
    "dpo": ("dataset", "beta", "loss_type", "max_steps", "learning_rate"),
    "grpo": ("dataset", "rewards", "num_generations", "beta", "max_steps", "learning_rate"),
    "longpo": ("pairs", "synth", "beta", "pref_weight", "nll_weight", "max_steps", "learning_rate"),
    "merge": ("method", "merge_method", "models", "t"),
    "eval": ("models", "suites", "limit"),
}

# the guard's and the profanity filter's rates on held-out sets (tests/test_guard.py keeps them true)
MEASURED = json.loads(importlib.resources.files("llamak").joinpath("resources", "guard", "measured.json").read_text())

T = {
    "ko": {
        "title": "모델 카드", "overview": "모델 개요", "name": "모델명", "definition": "모델 정의",
        "definition_text": "{base} 기반으로 한국어 성능을 강화하고 다양한 자연어 생성 및 대화형 태스크에 맞춘 모델 (llamak 레시피 `{recipe}`로 생성)",
        "uses": "사용 목적", "primary": "주요 용도",
        "primary_text": ["텍스트 생성: 프롬프트에 주어진 정보의 확장, 요약, 텍스트 분류, 주어진 텍스트에 대한 질문 응답",
                         "채팅 모드: 사용자와의 대화 수행"],
        "intended": "의도된 사용 사례",
        "intended_text": "지시 조정이 적용된 모델로 그 자체로 어시스턴트형 채팅에 쓰거나, 한국어 능력이 필요한 태스크에 추가 학습(fine-tuning)하여 쓸 수 있습니다.",
        "out_of_scope": "부적절한 사용 사례",
        "out_of_scope_text": "불법 물품, 심리적·정서적 유해 콘텐츠 제작, 잘못된 정보의 생성·전파, 정치 캠페인 작성 등 정치 관련 콘텐츠 제작 및 전파",
        "guard_text": "서빙 가드(`llamak serve --guard block`)는 규칙과 학습된 요청 분류기로 위 용도와 MLCommons 위험 분류(폭력·비폭력 범죄, 성범죄, 아동 성착취, 명예훼손, 전문 조언, 개인정보, 지식재산, 무기, 혐오, 자해, 성적 콘텐츠, 선거)의 요청을 거절합니다. 따로 작성된 평가 요청 {prompts}개에서 유해 요청의 {block:.0%}를 막고 무해한 요청의 {false:.0%}를 잘못 막았습니다(규칙만으로는 {rules:.0%}). 새로운 표현이나 우회 시도는 놓칠 수 있고, 안전 모델(`--guard-model`, 예: Llama Guard 3)을 함께 쓰기를 권합니다. 출력은 욕설·개인정보 규칙으로만 검사합니다.",
        "type_arch": "모델 유형 및 아키텍처", "model_type": "모델 유형", "text_generation": "텍스트 생성 모델 ({arch})",
        "architecture": "아키텍처", "base_model": "기본 모델", "instruct_model": "Chat Vector의 Instruct 모델",
        "expanded": "LLaMA-Pro 블록 확장: 원래 {orig}개 층 뒤 {after}번 층 다음에 항등 초기화 블록 {n}개를 넣어 {total}개 층",
        "stages": "학습 단계", "stage_head": "| 단계 | 종류 | 설정 | 결과 |",
        "size": "모델 크기 및 입력 길이", "params": "파라미터 수", "inserted_params": "삽입 블록 파라미터",
        "context": "최대 입출력 길이(Context Length)", "positions": "토큰 (RoPE {rope})",
        "data": "학습 데이터", "data_clean": "정제: 문서 {read}개 중 {kept}개 유지, 제거 {dropped}",
        "data_masked": "개인정보·욕설 마스킹: {masked}",
        "profanity_measured": "욕설 필터를 따로 작성된 평가 문장 {items}개로 잰 결과(재현율 / 오탐률): 규칙만 한국어 {ko_recall:.2f} / {ko_fp:.2f}, 영어 {en_recall:.2f} / {en_fp:.2f}; 문장 분류기 포함(`--profanity-model`) 한국어 {ko_recall_m:.2f} / {ko_fp_m:.2f}, 영어 {en_recall_m:.2f} / {en_fp_m:.2f}. 규칙은 우회 표기와 일반 욕설을 잡지만 욕설 없이 표현된 성희롱과 간접 협박은 대부분 놓칩니다.", "data_mix": "혼합(토큰 비율): {share}, 총 {tokens} 토큰, {rows}개 {seq_len}-토큰 행",
        "data_sets": "단계별 데이터", "none": "없음",
        "eval": "평가", "eval_text": "{baseline} 대비 차이를 괄호 안에 표시합니다. 제품군: {suites}.",
        "energy": "에너지", "energy_text": "codecarbon 오프라인 측정(전력망: {country}), 하드웨어 {hardware}. 전체 {total:.3g} kWh, CO₂ {co2:.3g} g.",
        "energy_head": "| 단계 | 종류 | 시간(초) | kWh | CO₂ (g) |", "energy_compare": "{stage}의 에너지는 {train}의 {pct:.2g}%",
        "ethics": "윤리적 고려사항 및 한계", "ethics_sub": "윤리적 고려사항",
        "ethics_text": "학습 데이터에서 개인정보와 욕설·비속어·혐오 표현을 제거하려 했지만, 바람직하지 않은 표현이나 부정확한 사실이 생성될 가능성을 완전히 없애지는 못했습니다. 사용자는 이 한계를 알고 올바른 사용에 필요한 조치를 취해야 합니다.",
        "mitigation": "위험 완화 조치", "safety_measured": "안전성 측정({model}): 유해 요청 거절률 {refusal}, 무해한 요청의 과잉 거절률 {over}, 편향 점수(모호 {amb}, 명확 {dis}; 0이 무편향)",
        "mitigation_text": ["정제 단계에서 개인정보를 유형별 자리표시자로 가리고 욕설·비속어·혐오 표현을 가리거나 걸렀습니다.",
                            "선호 최적화(DPO)와 강화학습(GRPO)으로 유해 요청에는 정중히 거절하도록 응답을 조정했습니다."],
        "limits": "한계", "limits_text": "이 모델은 잠재적 위험을 모두 다루지 못하며, 부정확하거나 편향되거나 불편한 응답을 생성할 수 있습니다. 배포 전 목적에 맞는 추가 안전성 평가와 조정이 필요합니다.",
    },
    "en": {
        "title": "Model card", "overview": "Overview", "name": "Model name", "definition": "Definition",
        "definition_text": "a model based on {base} with strengthened Korean, tuned for text generation and chat (made by the llamak recipe `{recipe}`)",
        "uses": "Uses", "primary": "Primary uses",
        "primary_text": ["Text generation: expanding, summarising and classifying the text in a prompt, answering questions about a given text",
                         "Chat: conversations with users"],
        "intended": "Intended use cases",
        "intended_text": "Instruction-tuned: usable as an assistant-style chat model as is, or fine-tuned further for tasks that need Korean.",
        "out_of_scope": "Out-of-scope uses",
        "out_of_scope_text": "Illegal goods, psychologically or emotionally harmful content, creating or spreading misinformation, writing political campaign material or other political content",
        "guard_text": "The serving guard (`llamak serve --guard block`) refuses requests for these uses and for the MLCommons hazards (violent and non-violent crimes, sex crimes, child sexual exploitation, defamation, specialised advice, privacy, intellectual property, weapons, hate, self-harm, sexual content, elections) with rules and a learned request classifier. On {prompts} evaluation requests written apart from it, it blocked {block:.0%} of the harmful ones and {false:.0%} of the benign ones (the rules alone: {rules:.0%}). New phrasings and jailbreaks can get through; pair it with a safety model (`--guard-model`, e.g. Llama Guard 3). Outputs are checked by the profanity and personal-data rules only.",
        "type_arch": "Model type and architecture", "model_type": "Model type", "text_generation": "Text generation model ({arch})",
        "architecture": "Architecture", "base_model": "Base model", "instruct_model": "Instruct model of the chat vector",
        "expanded": "LLaMA-Pro block expansion: {n} identity-initialised blocks after layers {after} of the original {orig}, {total} layers in all",
        "stages": "Training stages", "stage_head": "| stage | type | settings | results |",
        "size": "Size and context length", "params": "Parameters", "inserted_params": "Parameters of the inserted blocks",
        "context": "Context length", "positions": "tokens (RoPE {rope})",
        "data": "Training data", "data_clean": "Cleaning: {kept} of {read} documents kept, removed {dropped}",
        "data_masked": "Personal data and profanity masked: {masked}",
        "profanity_measured": "The profanity filter on {items} evaluation sentences written apart from it (recall / false positives): rules only, Korean {ko_recall:.2f} / {ko_fp:.2f}, English {en_recall:.2f} / {en_fp:.2f}; with the sentence classifier (`--profanity-model`), Korean {ko_recall_m:.2f} / {ko_fp_m:.2f}, English {en_recall_m:.2f} / {en_fp_m:.2f}. The rules catch disguised spellings and ordinary insults but mostly miss sexual harassment and indirect threats worded without offensive words.", "data_mix": "Mixture (token shares): {share}, {tokens} tokens in all, {rows} rows of {seq_len} tokens",
        "data_sets": "Data per stage", "none": "none",
        "eval": "Evaluation", "eval_text": "Differences from {baseline} in brackets. Suites: {suites}.",
        "energy": "Energy", "energy_text": "Measured with codecarbon's offline tracker (grid: {country}) on {hardware}. Total {total:.3g} kWh, {co2:.3g} g CO₂.",
        "energy_head": "| stage | type | seconds | kWh | CO₂ (g) |", "energy_compare": "{stage} used {pct:.2g}% of the energy of {train}",
        "ethics": "Ethical considerations and limitations", "ethics_sub": "Ethical considerations",
        "ethics_text": "We tried to remove personal data, profanity, slurs and hateful expressions from the training data, but the model may still generate undesirable expressions or inaccurate facts. Users must know these limits and take the measures needed for correct use.",
        "mitigation": "Risk mitigation", "safety_measured": "Safety measured ({model}): refusal rate on harmful requests {refusal}, over-refusal of benign ones {over}, bias score (ambiguous {amb}, disambiguated {dis}; 0 is unbiased)",
        "mitigation_text": ["The cleaning stage replaced personal data with typed placeholders and masked or dropped profanity and hateful expressions.",
                            "Preference optimisation (DPO) and reinforcement learning (GRPO) tuned answers to refuse harmful requests politely."],
        "limits": "Limitations", "limits_text": "The model cannot cover every potential risk and may produce inaccurate, biased or objectionable answers. Run further safety evaluation and tuning for your purpose before deployment.",
    },
}


def _num(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def parameter_count(model_dir: Path) -> int:
    from llamak.surgery.tensors import parse_header, weight_files

    total = 0
    for path in weight_files(model_dir):
        specs, _, _ = parse_header(path)
        total += sum(math.prod(s.shape) for s in specs.values())
    return total


def facts(run_dir: Path) -> dict:
    """Everything the card states, read from the run."""
    from llamak.recipe import STAGES, load_recipe

    run_dir = Path(run_dir)
    manifest_path = run_dir / "manifest.json"
    if not manifest_path.is_file():
        raise LlamakError(f"{run_dir}: no manifest.json (not a `llamak run` folder, or no stage finished)")
    manifest = json.loads(manifest_path.read_text())
    stages, order = manifest["stages"], [n for n in manifest.get("order", manifest["stages"]) if n in manifest["stages"]]
    recipe_path = Path(manifest.get("recipe", ""))
    if not recipe_path.is_file():
        raise LlamakError(f"{run_dir}/manifest.json: its recipe {recipe_path} is gone; the card needs the stage settings")
    recipe, recipe_stages = load_recipe(recipe_path)
    configs = {s.name: s.config.model_dump(mode="json", exclude_none=True) for s in recipe_stages}
    models = [n for n in order if STAGES[stages[n]["type"]].makes_model]
    if not models:
        raise LlamakError(f"{run_dir}: no stage made a model yet; nothing to describe")
    final = run_dir / models[-1]
    config = json.loads((final / "config.json").read_text())
    out = {"name": recipe.name, "recipe": str(recipe_path), "base": recipe.base, "instruct": recipe.instruct, "final_stage": models[-1],
           "architecture": (config.get("architectures") or ["?"])[0], "layers": config.get("num_hidden_layers"),
           "hidden_size": config.get("hidden_size"), "context": config.get("max_position_embeddings"),
           "rope": config.get("rope_parameters") or {"rope_theta": config.get("rope_theta")}, "parameters": parameter_count(final),
           "stages": [], "data": None, "eval": None, "energy": {}}
    for name in order:
        stage = stages[name]
        settings = {k: configs.get(name, {}).get(k) for k in SETTINGS.get(stage["type"], ()) if configs.get(name, {}).get(k) is not None}
        out["stages"].append({"name": name, "type": stage["type"], "settings": settings, "metrics": stage.get("metrics", {}), "seconds": stage.get("seconds")})
        if stage["type"] == "data":
            out["data"] = stage["metrics"]
        if stage["type"] == "eval":
            out["eval"] = stage["metrics"]
        if stage["type"] == "expand":
            out["expand"] = {**stage["metrics"], "original_layers": stage["metrics"]["num_layers"] - len(stage["metrics"]["after"])}
        if stage.get("energy"):
            out["energy"][name] = {**stage["energy"], "type": stage["type"]}
    return out


def _result_line(stage: dict) -> str:
    m = stage["metrics"]
    parts = []
    if "clean" in m:
        parts.append(f"kept {m['clean'].get('kept')} of {m['clean'].get('read')} documents")
    if "pack" in m:
        parts.append(f"{m['pack'].get('rows')} packed rows")
    for key, label in (("train_loss", "loss"), ("global_step", "steps"), ("trainable_share", "trainable"), ("pairs", "pairs"),
                       ("conversations", "conversations"), ("num_layers", "layers"), ("method", "method")):
        if key in m:
            value = m[key]
            parts.append(f"{label} {value:.1%}" if key == "trainable_share" else f"{label} {_num(value)}")
    if "probes" in m:
        parts.append(f"long probes {m['probes']['before']:.2f} → {m['probes']['after']:.2f}")
    return ", ".join(parts)


def _settings_text(settings: dict) -> str:
    return "; ".join(f"{k}: {json.dumps(v, ensure_ascii=False)}" for k, v in settings.items()).replace("|", "\\|")


def render(f: dict, lang: str) -> str:
    t = T[lang]
    lines = [f"# {t['title']}: {f['name']}", "", f"## {t['overview']}", "",
             f"- {t['name']}: {f['name']}", f"- {t['definition']}: " + t["definition_text"].format(base=f["base"], recipe=Path(f["recipe"]).name), "",
             f"## {t['uses']}", "", f"### {t['primary']}", ""] + [f"- {x}" for x in t["primary_text"]] + [
             "", f"### {t['intended']}", "", f"- {t['intended_text']}", "", f"### {t['out_of_scope']}", "", f"- {t['out_of_scope_text']}",
             "- " + t["guard_text"].format(prompts=MEASURED["guard"]["prompts"], block=MEASURED["guard"]["rules+classifier"]["block"],
                                           false=MEASURED["guard"]["rules+classifier"]["false_block"], rules=MEASURED["guard"]["rules"]["block"]), "",
             f"## {t['type_arch']}", "", f"### {t['model_type']}", "", "- " + t["text_generation"].format(arch=f["architecture"]), "",
             f"### {t['architecture']}", "", f"- {t['base_model']}: {f['base']}"]
    if f["instruct"]:
        lines.append(f"- {t['instruct_model']}: {f['instruct']}")
    if f.get("expand"):
        e = f["expand"]
        lines.append("- " + t["expanded"].format(n=len(e["after"]), after=", ".join(map(str, e["after"])), orig=e["original_layers"], total=e["num_layers"]))
    lines += ["", f"### {t['stages']}", "", t["stage_head"], "|---|---|---|---|"]
    for s in f["stages"]:
        lines.append(f"| {s['name']} | {s['type']} | {_settings_text(s['settings'])} | {_result_line(s)} |")
    lines += ["", f"## {t['size']}", "", f"- {t['params']}: {f['parameters']:,}"]
    trainable = next((s["metrics"] for s in f["stages"] if s["type"] == "cpt" and "trainable_parameters" in s["metrics"]), None)
    if trainable and f.get("expand"):
        lines.append(f"- {t['inserted_params']}: {trainable['trainable_parameters']:,}")
    rope = ", ".join(f"{k} {v}" for k, v in f["rope"].items() if v is not None)
    lines += [f"- {t['context']}: {f['context']:,} " + t["positions"].format(rope=rope), "", f"## {t['data']}", ""]
    if f["data"]:
        clean, mix, pack = f["data"].get("clean", {}), f["data"].get("mix", {}), f["data"].get("pack", {})
        dropped = ", ".join(f"{k} {v}" for k, v in clean.get("dropped", {}).items()) or t["none"]
        masked = ", ".join(f"{k} {v}" for k, v in clean.get("masked", {}).items()) or t["none"]
        p = MEASURED["profanity"]
        lines += ["- " + t["data_clean"].format(read=clean.get("read"), kept=clean.get("kept"), dropped=dropped), "- " + t["data_masked"].format(masked=masked),
                  "- " + t["profanity_measured"].format(
                      items=p["items"], ko_recall=p["rules"]["ko"]["recall"], ko_fp=p["rules"]["ko"]["false_positive"], en_recall=p["rules"]["en"]["recall"],
                      en_fp=p["rules"]["en"]["false_positive"], ko_recall_m=p["rules+model"]["ko"]["recall"], ko_fp_m=p["rules+model"]["ko"]["false_positive"],
                      en_recall_m=p["rules+model"]["en"]["recall"], en_fp_m=p["rules+model"]["en"]["false_positive"])]
        if mix:
            share = ", ".join(f"{k} {v:.1%}" for k, v in mix.get("share", {}).items())
            lines.append("- " + t["data_mix"].format(share=share, tokens=f"{sum(mix.get('tokens', {}).values()):,}", rows=pack.get("rows", "–"), seq_len=pack.get("seq_len", "–")))
    lines += ["", f"### {t['data_sets']}", ""]
    for s in f["stages"]:
        used = {k: v for k, v in s["settings"].items() if k in ("inputs", "dataset", "corpus", "pairs", "synth", "packed")}
        if used:
            lines.append(f"- {s['name']}: {_settings_text(used)}")
    lines += ["", f"## {t['eval']}", ""]
    if f["eval"]:
        ev = f["eval"]
        suites = [m for m in ev["scores"] if "/" not in m]
        lines += [t["eval_text"].format(baseline=ev["baseline"], suites=", ".join(suites)), "",
                  "| metric | " + " | ".join(ev["models"]) + " |", "|---|" + "---|" * len(ev["models"])]
        for metric, row in ev["scores"].items():
            cells = []
            for m in ev["models"]:
                delta = ev["delta"][metric].get(m)
                cells.append(_num(row.get(m)) + (f" ({delta:+.3f})" if m != ev["baseline"] and delta is not None else ""))
            lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    else:
        lines.append(f"- {t['none']}")
    lines += ["", f"## {t['energy']}", ""]
    if f["energy"]:
        first = next(iter(f["energy"].values()))
        total, co2 = sum(e["kwh"] for e in f["energy"].values()), 1000 * sum(e["co2_kg"] for e in f["energy"].values())
        lines += [t["energy_text"].format(country=first["country"], hardware=first["hardware"], total=total, co2=co2), "", t["energy_head"], "|---|---|---|---|---|"]
        for name, e in f["energy"].items():
            lines.append(f"| {name} | {e['type']} | {e['seconds']:.0f} | {e['kwh']:.3g} | {1000 * e['co2_kg']:.3g} |")
        training = {n: e["kwh"] for n, e in f["energy"].items() if e["type"] in TRAINING}
        if training:
            biggest = max(training, key=training.get)
            compares = [t["energy_compare"].format(stage=n, train=biggest, pct=100 * e["kwh"] / training[biggest])
                        for n, e in f["energy"].items() if e["type"] in SURGERY and training[biggest] > 0]
            lines += [""] + [f"- {c}" for c in compares]
    else:
        lines.append(f"- {t['none']}")
    lines += ["", f"## {t['ethics']}", "", f"### {t['ethics_sub']}", "", f"- {t['ethics_text']}", "", f"### {t['mitigation']}", ""]
    lines += [f"- {x}" for x in t["mitigation_text"]]
    if f["eval"] and "safety" in f["eval"]["scores"]:
        last = f["eval"]["models"][-1]
        get = lambda k: _num(f["eval"]["scores"].get(f"safety/{k}", {}).get(last), 2)  # noqa: E731
        lines.append("- " + t["safety_measured"].format(model=last, refusal=get("refusal"), over=get("over_refusal"), amb=get("bias_ambiguous"), dis=get("bias_disambiguated")))
    lines += ["", f"### {t['limits']}", "", f"- {t['limits_text']}", ""]
    return "\n".join(lines)


def metadata(f: dict, license_id: str) -> str:
    meta = {"language": ["ko", "en"], "license": license_id, "library_name": "transformers", "pipeline_tag": "text-generation",
            "tags": ["llamak", *sorted({s["type"] for s in f["stages"] if s["type"] not in ("data", "eval", "card")})]}
    if "/" in f["base"] and not Path(f["base"]).exists():
        meta["base_model"] = f["base"]  # a hub id
    if f["eval"]:
        meta["model-index"] = [{"name": f["name"], "results": [
            {"task": {"type": "text-generation"}, "dataset": {"name": metric, "type": metric},
             "metrics": [{"type": "score", "value": round(value, 4)}]}
            for metric, row in f["eval"]["scores"].items() if "/" not in metric and (value := row.get(f["eval"]["models"][-1])) is not None]}]
    return "---\n" + yaml.safe_dump(meta, allow_unicode=True, sort_keys=False) + "---\n"


def write_card(run_dir: Path, out: Path | None = None, license_id: str = "other") -> Path:
    f = facts(run_dir)
    text = metadata(f, license_id) + "\n" + render(f, "ko") + "\n---\n\n" + render(f, "en")
    out = Path(out) if out else Path(run_dir) / "MODEL_CARD.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    return out
