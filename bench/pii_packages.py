"""Our Korean PII recognisers (llamak.data.pii) against PII packages from PyPI, on the labelled set.

    python bench/pii_packages.py                 # every system whose package imports
    python bench/pii_packages.py --errors ko-pii # also list that system's misses and false alarms
    python bench/pii_packages.py --ko-pii-synth 100   # on ko-pii's synthetic documents instead

Run it with an interpreter that has the candidate packages installed (they are not llamak
dependencies); a package that does not import, or needs model weights from a hub, is skipped with
the reason. llamak itself is imported from ../src, so llamak need not be installed there.

Scoring is tests/test_pii.py's: per type, a found (type, value) pair counts against the gold pairs of
the same item (a multiset), so a value found with the wrong type is both a miss and a false alarm.
Package types are mapped onto ours by name; where a package has one type for several of ours (one
"registration number" for RRN and ARN, one "ID number" for RRN/ARN/passport, one "bank" label for
accounts and cards) the value's *shape* decides (the 7th digit of a 13-digit number: 5-8 is ARN;
a leading letter is a passport; 4-4-4-4 / 4-6-5 digit groups are a card), never our validators.
Types we do not label (names, addresses, business numbers, API keys …) are left out of precision.

"masked" columns ignore the type: recall is the share of gold values whose characters some
detection (of any type, mapped or not) overlaps, i.e. what masking would hide; precision is the
share of mapped detections that overlap some gold value.

Time: detection over the whole set (best of --reps passes, construction excluded), and its ratio to
ours. Import + construction time ("init s") is printed separately.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
LABELLED = ROOT / "tests" / "data" / "pii_labelled.jsonl"

# Hubs are unreachable here; fail at once instead of retrying downloads.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from llamak.data.pii import TYPES, find_pii  # noqa: E402

# A detection: (our type or None when unmapped, start, end, value)

# --------------------------------------------------------------------------- shape-only type splits


def _digits(value: str) -> str:
    return re.sub(r"\D", "", value)


def registration_kind(value: str) -> str:
    """RRN or ARN for a 13-digit registration number, by its 7th (gender/century) digit only."""
    d = _digits(value)
    return "ARN" if len(d) == 13 and d[6] in "5678" else "RRN"


def id_number_kind(value: str) -> str | None:
    if re.match(r"\s*[A-Za-z]", value):
        return "PASSPORT"
    return registration_kind(value) if len(_digits(value)) == 13 else None


CARD_SHAPE = re.compile(r"\d{4}([- ]?)\d{4}\1\d{4}\1\d{4}|\d{4}([- ]?)\d{6}\2\d{5}")


def bank_kind(value: str) -> str:
    return "CARD" if CARD_SHAPE.fullmatch(value.strip()) else "ACCOUNT"


def resolve_overlaps(dets, key=lambda d: (-(d[2] - d[1]), d[1])):
    """Non-overlapping subset, preferring by key (default: longest, then earliest)."""
    kept = []
    for d in sorted(dets, key=key):
        if all(d[2] <= k[1] or d[1] >= k[2] for k in kept):
            kept.append(d)
    return sorted(kept, key=lambda d: d[1])


# --------------------------------------------------------------------------- systems
# Each factory returns detect(text) -> list of detections, or raises (the system is then skipped).


def sys_ours():
    return lambda text: [(m.type, m.start, m.end, m.value) for m in find_pii(text)]


def sys_korean_pii():
    import korean_pii

    names = {"card": "CARD", "email": "EMAIL", "phone": "PHONE", "account": "ACCOUNT", "passport": "PASSPORT",
             "driver_license": "DRIVER_LICENSE"}

    def detect(text):
        out = []
        for d in korean_pii.detect(text):
            kind = registration_kind(d.value) if d.type == "rrn" else names.get(d.type)
            out.append((kind, d.start, d.end, d.value))
        return out

    return detect


def sys_ko_pii():
    from ko_pii import detect_all

    names = {"RRN": "RRN", "FRN": "ARN", "CARD": "CARD", "PHONE": "PHONE", "FAX": "PHONE", "EMAIL": "EMAIL",
             "ACCOUNT": "ACCOUNT", "PASSPORT": "PASSPORT", "DRIVER_LICENSE": "DRIVER_LICENSE", "IP": "IP"}
    return lambda text: [(names.get(d.label), d.start, d.end, text[d.start : d.end]) for d in detect_all(text)]


def _offline_tldextract():
    """Presidio's e-mail recogniser asks tldextract, which would fetch the public suffix list first;
    use the snapshot the package ships instead (same answers, no network wait)."""
    import tldextract.tldextract as tx

    tx.TLD_EXTRACTOR = tx.TLDExtract(suffix_list_urls=())


def sys_ko_pii_guard():
    from ko_pii_guard import KoreanPIIGuard

    _offline_tldextract()
    guard = KoreanPIIGuard()  # its defaults: score_threshold 0.4, Korean context boosts
    names = {"KR_RRN": "RRN", "KR_FRN": "ARN", "KR_DRIVER_LICENSE": "DRIVER_LICENSE", "KR_PASSPORT": "PASSPORT",
             "PHONE_NUMBER": "PHONE", "EMAIL_ADDRESS": "EMAIL", "CREDIT_CARD": "CARD", "KR_ACCOUNT": "ACCOUNT"}
    return lambda text: [(names.get(f.entity), f.start, f.end, text[f.start : f.end]) for f in guard.analyze(text)]


def sys_presidio():
    """Presidio's own Korean recognisers plus its generic e-mail/card/phone(KR)/IP ones, no NLP model
    (none can be downloaded here; without one Presidio's context words cannot raise scores)."""
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NoOpNlpEngine
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IpRecognizer,
        KrBrnRecognizer,
        KrDriverLicenseRecognizer,
        KrFrnRecognizer,
        KrPassportRecognizer,
        KrRrnRecognizer,
        PhoneRecognizer,
    )

    _offline_tldextract()
    lang = "ko"
    registry = RecognizerRegistry(supported_languages=[lang])
    for r in (KrRrnRecognizer(supported_language=lang), KrFrnRecognizer(supported_language=lang),
              KrBrnRecognizer(supported_language=lang), KrDriverLicenseRecognizer(supported_language=lang),
              KrPassportRecognizer(supported_language=lang), EmailRecognizer(supported_language=lang),
              CreditCardRecognizer(supported_language=lang), IpRecognizer(supported_language=lang),
              PhoneRecognizer(supported_language=lang, supported_regions=("KR",))):
        registry.add_recognizer(r)
    nlp = NoOpNlpEngine(models=[{"lang_code": lang, "model_name": "no_op"}])
    nlp.load()
    engine = AnalyzerEngine(registry=registry, nlp_engine=nlp, supported_languages=[lang])
    names = {"KR_RRN": "RRN", "KR_FRN": "ARN", "KR_DRIVER_LICENSE": "DRIVER_LICENSE", "KR_PASSPORT": "PASSPORT",
             "PHONE_NUMBER": "PHONE", "EMAIL_ADDRESS": "EMAIL", "CREDIT_CARD": "CARD", "IP_ADDRESS": "IP"}

    def detect(text):
        results = engine.analyze(text=text, language=lang)  # default threshold 0: everything it scores
        dets = [(names.get(r.entity_type), r.start, r.end, text[r.start : r.end], r.score) for r in results]
        kept = resolve_overlaps(dets, key=lambda d: (-d[4], -(d[2] - d[1]), d[1]))
        return [d[:4] for d in kept]

    return detect


def sys_rust_pii_transformer():
    import rust_pii_transformer as rpt

    names = {"resident": "RRN", "foreigner_registration": "ARN", "credit_card": "CARD", "bank_account": "ACCOUNT",
             "phone": "PHONE", "email": "EMAIL", "driver_license": "DRIVER_LICENSE", "passport": "PASSPORT"}

    def detect(text):
        out = []
        for f in rpt.detect(text).findings:
            s, e = f.source.char_start, f.source.char_end
            out.append((names.get(f.entity), s, e, text[s:e]))
        return out

    return detect


def sys_privyscope_ko():
    """Stage 1 (regex) only: its NER stage needs weights from a model hub."""
    from privyscope import Privyscope

    engine = Privyscope.regex_only(lang="ko")
    simple = {"PHONE": "PHONE", "EMAIL": "EMAIL", "IP": "IP", "DRIVER_LICENSE": "DRIVER_LICENSE"}

    def kind(label, value):
        if label == "ID_NUM":
            return id_number_kind(value)
        if label == "BANK":
            return bank_kind(value)
        return simple.get(label)

    return lambda text: [(kind(s.label, s.text), s.start, s.end, s.text) for s in engine.redact(text).detected_spans]


def sys_privyscope_ko_ner():
    from privyscope import Privyscope

    Privyscope.from_pretrained(lang="ko")
    raise RuntimeError("loaded; add a mapping for its NER labels before scoring it")


def sys_koredact():
    from koredact import Masker

    masker = Masker.from_pretrained()  # BERT NER bundle from a model hub
    return lambda text: [(s.type if s.type in TYPES else None, s.start, s.end, text[s.start : s.end])
                         for s in masker.predict(text)]


def sys_leakgate():
    from leakgate.detectors.infra import InfraDetector
    from leakgate.detectors.kr_pii import KoreanPiiDetector

    pii, infra = KoreanPiiDetector(), InfraDetector()
    names = {"kr-mobile": "PHONE", "kr-landline": "PHONE", "email": "EMAIL", "payment-card": "CARD",
             "bank-account": "ACCOUNT", "passport-no": "PASSPORT", "kr-driver-license": "DRIVER_LICENSE",
             "private-ipv4": "IP"}

    def detect(text):
        line_starts, pos = [], 0
        for line in text.splitlines(keepends=True):
            line_starts.append(pos)
            pos += len(line)
        dets = []
        for f in pii.scan(text) + [f for f in infra.scan(text) if f.rule == "private-ipv4"]:
            s = line_starts[f.line - 1] + f.start
            kind = registration_kind(f.value) if f.rule == "kr-rrn" else names.get(f.rule)
            dets.append((kind, s, s + len(f.value), f.value))
        return resolve_overlaps(dets)

    return detect


def sys_pyaigis_kr():
    """Its Korean PII rules (a prompt guard: it blocks and scores, its sanitize() has no Korean rules),
    run as span finders in list order, first match wins an overlap."""
    from aigis.filters.patterns import KOREAN_PII_PATTERNS, PII_INPUT_PATTERNS

    extra = [p for p in PII_INPUT_PATTERNS if p.id in ("pii_email_input", "pii_credit_card_input")]
    rules = [p for p in KOREAN_PII_PATTERNS + extra if p.enabled]
    names = {"pii_ko_foreign_reg": "ARN", "pii_ko_phone": "PHONE", "pii_ko_driver_license": "DRIVER_LICENSE",
             "pii_ko_passport": "PASSPORT", "pii_ko_card_bin": "CARD", "pii_credit_card_input": "CARD",
             "pii_ko_bank_account": "ACCOUNT", "pii_email_input": "EMAIL"}

    def detect(text):
        taken = []
        for p in rules:
            for m in p.pattern.finditer(text):
                kind = registration_kind(m.group()) if p.id == "pii_ko_rrn" else names.get(p.id)
                d = (kind, m.start(), m.end(), m.group())
                if all(d[2] <= t[1] or d[1] >= t[2] for t in taken):
                    taken.append(d)
        return sorted(taken, key=lambda d: d[1])

    return detect


def sys_kpii():
    from kpii import KoreanPIIDetector

    detector = KoreanPIIDetector()
    names = {"phone": "PHONE", "email": "EMAIL", "credit_card": "CARD"}

    def detect(text):
        if not text.strip():
            return []
        dets = []
        for kind, found in detector.detect(text).items():
            for f in found:
                t = registration_kind(f["value"]) if kind == "rrn" else names.get(kind)
                dets.append((t, f["start"], f["end"], f["value"]))
        return resolve_overlaps(dets)  # its four finders run independently and overlap

    return detect


SYSTEMS = {  # name: (PyPI package, factory)
    "ours": ("llamak", sys_ours),
    "korean-pii": ("korean-pii", sys_korean_pii),
    "ko-pii": ("ko-pii", sys_ko_pii),
    "ko-pii-guard": ("ko-pii-guard", sys_ko_pii_guard),
    "presidio": ("presidio-analyzer", sys_presidio),
    "rust-pii-tf": ("rust-pii-transformer", sys_rust_pii_transformer),
    "privyscope": ("privyscope-ko", sys_privyscope_ko),
    "privyscope+NER": ("privyscope-ko", sys_privyscope_ko_ner),
    "koredact": ("koredact", sys_koredact),
    "leakgate": ("leakgate", sys_leakgate),
    "pyaigis-kr": ("pyaigis-kr", sys_pyaigis_kr),
    "kpii": ("kpii", sys_kpii),
}

# --------------------------------------------------------------------------- scoring


def load_items():
    return [json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines() if line.strip()]


def ko_pii_synth_items(n: int):
    """ko-pii's own synthetic public-sector documents (its home ground, not ours): their gold spans of
    our types become the labels; their other labels (names, addresses, business and document numbers …)
    stay unlabelled, so finding one of our types there is a false alarm."""
    from ko_pii.eval.synth import generate_corpus

    names = {"RRN": "RRN", "FRN": "ARN", "PHONE": "PHONE", "EMAIL": "EMAIL", "CARD": "CARD", "ACCOUNT": "ACCOUNT",
             "PASSPORT": "PASSPORT", "DRIVER_LICENSE": "DRIVER_LICENSE", "IP": "IP"}
    return [{"text": d.text, "pii": [{"type": names[g.label], "value": g.text} for g in d.spans if g.label in names]}
            for d in generate_corpus(n, seed=0)]


def gold_spans(item):
    """Character spans of the gold values, located in order (a repeated value takes the next occurrence)."""
    spans, used = [], set()
    for p in item["pii"]:
        start = item["text"].find(p["value"])
        while start in used and start >= 0:
            start = item["text"].find(p["value"], start + 1)
        used.add(start)
        spans.append((p["type"], start, start + len(p["value"])))
    return spans


def score(items, outputs):
    tp, fp, fn = Counter(), Counter(), Counter()
    masked_gold = masked_hit = mapped = mapped_hit = unmapped = 0
    errors = []
    for item, dets in zip(items, outputs):
        gold = Counter((p["type"], p["value"]) for p in item["pii"])
        found = Counter((t, v) for t, _, _, v in dets if t is not None)
        for (kind, _), n in (gold & found).items():
            tp[kind] += n
        for (kind, v), n in (found - gold).items():
            fp[kind] += n
            errors.append(("false", kind, v, item["text"]))
        for (kind, v), n in (gold - found).items():
            fn[kind] += n
            errors.append(("miss", kind, v, item["text"]))
        spans = gold_spans(item)
        for _, gs, ge in spans:
            masked_gold += 1
            masked_hit += any(s < ge and e > gs for _, s, e, _ in dets)
        for t, s, e, _ in dets:
            if t is None:
                unmapped += 1
                continue
            mapped += 1
            mapped_hit += any(s < ge and e > gs for _, gs, ge in spans)
    return {"tp": tp, "fp": fp, "fn": fn, "errors": errors, "unmapped": unmapped,
            "masked_recall": masked_hit / masked_gold if masked_gold else 1.0,
            "masked_precision": mapped_hit / mapped if mapped else float("nan")}


def fmt(x):
    return "   -" if x is None or x != x else f"{x:.2f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5, help="timed passes over the set (best is reported)")
    ap.add_argument("--only", help="comma-separated system names (ours is always run)")
    ap.add_argument("--errors", action="append", default=[], help="list misses/false alarms of this system")
    ap.add_argument("--ko-pii-synth", type=int, metavar="N",
                    help="score on N of ko-pii's synthetic documents instead of our labelled set")
    args = ap.parse_args()

    try:
        items = ko_pii_synth_items(args.ko_pii_synth) if args.ko_pii_synth else load_items()
    except ImportError as e:
        sys.exit(f"--ko-pii-synth needs the ko-pii package: {e}")
    texts = [item["text"] for item in items]
    names = list(SYSTEMS) if not args.only else ["ours"] + [n for n in args.only.split(",") if n != "ours"]
    results, skipped = {}, {}
    for name in names:
        package, factory = SYSTEMS[name]
        t0 = time.perf_counter()
        try:
            detect = factory()
            outputs = [detect(t) for t in texts]  # warm-up pass, also the scored one
        except Exception as e:  # noqa: BLE001  any failure to load or run skips the system
            msg = f"{type(e).__name__}: {e}".splitlines()[0][:160]
            skipped[name] = f"{package}: {msg}"
            print(f"skip {name:<15} {skipped[name]}", flush=True)
            continue
        init = time.perf_counter() - t0
        best = float("inf")
        for _ in range(args.reps):
            t0 = time.perf_counter()
            for t in texts:
                detect(t)
            best = min(best, time.perf_counter() - t0)
        init -= best  # first pass minus a typical pass ≈ construction (+ first-call) time
        results[name] = score(items, outputs) | {"time": best, "init": max(init, 0.0), "package": package}
        print(f"ran  {name:<15} {best * 1000:8.1f} ms / {len(texts)} texts", flush=True)

    gold = Counter(p["type"] for item in items for p in item["pii"])
    print(f"\n{len(items)} texts, {sum(gold.values())} gold values "
          f"({sum(1 for i in items if not i['pii'])} texts without PII); cells are recall/precision per type")
    cols = list(results)
    head = f"{'type':<15}{'gold':>5} " + "".join(f"{c[:11]:>12}" for c in cols)
    print(head + "\n" + "-" * len(head))
    for kind in TYPES:
        row = f"{kind:<15}{gold[kind]:>5} "
        for c in cols:
            r = results[c]
            tp, fp, fn = r["tp"][kind], r["fp"][kind], r["fn"][kind]
            rec = tp / (tp + fn) if tp + fn else None
            prec = tp / (tp + fp) if tp + fp else None
            row += f"{fmt(rec)}/{fmt(prec)}".rjust(12)
        print(row)
    print("-" * len(head))
    rows = {
        "all (micro)": lambda r: (sum(r["tp"].values()) / max(1, sum(r["tp"].values()) + sum(r["fn"].values())),
                                  sum(r["tp"].values()) / max(1, sum(r["tp"].values()) + sum(r["fp"].values()))),
        "masked (any)": lambda r: (r["masked_recall"], r["masked_precision"]),
    }
    for label, f in rows.items():
        cells = (f(results[c]) for c in cols)
        print(f"{label:<15}{sum(gold.values()):>5} " + "".join(f"{fmt(r)}/{fmt(p)}".rjust(12) for r, p in cells))
    print(f"{'unmapped dets':<21}" + "".join(f"{results[c]['unmapped']:>12}" for c in cols))
    print(f"{'detect ms':<21}" + "".join(f"{results[c]['time'] * 1000:>12.1f}" for c in cols))
    ours = results["ours"]["time"]
    print(f"{'time vs ours':<21}" + "".join(f"{results[c]['time'] / ours:>11.1f}x" for c in cols))
    print(f"{'init s':<21}" + "".join(f"{results[c]['init']:>12.2f}" for c in cols))
    if skipped:
        print("\nskipped:")
        for name, why in skipped.items():
            print(f"  {name:<15} {why}")
    for name in args.errors:
        if name not in results:
            continue
        print(f"\n{name}: misses and false alarms")
        for what, kind, value, text in sorted(results[name]["errors"], key=lambda e: (e[1] or "", e[0])):
            at = max(0, text.find(value))
            snippet = text[max(0, at - 40) : at + len(value) + 40].replace("\n", " ⏎ ")
            print(f"  {what:<5} {kind:<15} {value!r:<28} {snippet}")


if __name__ == "__main__":
    main()
