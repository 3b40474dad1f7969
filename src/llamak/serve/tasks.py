"""The model card's text-generation use cases as prompt templates: expand, summarise, classify, and
answer questions about a given text — in Korean and English (the text's language unless told).

`classify` does not trust free generation to return a label: it scores every label as the
assistant's whole reply (log-likelihood of the label and the end-of-turn token) and returns the
best, so the answer is always exactly one of the labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llamak.errors import LlamakError
from llamak.serve.guard import language

TASKS = ("expand", "summarize", "classify", "qa")
FIELDS = {"expand": ["text"], "summarize": ["text"], "classify": ["text", "labels"], "qa": ["text", "question"]}

SYSTEM = {
    "ko": "당신은 정확하고 친절한 한국어 어시스턴트입니다.",
    "en": "You are an accurate and helpful assistant.",
}
TEMPLATES = {
    "ko": {
        "expand": "다음 내용을 바탕으로 더 자세하고 짜임새 있는 글로 확장해 주세요. 주어진 정보와 어긋나는 내용은 쓰지 마세요.\n\n{text}",
        "summarize": "다음 글을 핵심만 담아 세 문장 이내로 요약해 주세요.\n\n{text}",
        "classify": "다음 글을 아래 분류 중 하나로 분류하세요. 분류 이름만 답하세요.\n분류: {labels}\n\n글: {text}",
        "qa": "아래 글에 있는 정보만으로 질문에 답하세요. 글에 답이 없으면 \"글에서 답을 찾을 수 없습니다.\"라고 답하세요.\n\n글:\n{text}\n\n질문: {question}",
    },
    "en": {
        "expand": "Expand the following into a fuller, well-organised text. Do not add anything that contradicts it.\n\n{text}",
        "summarize": "Summarise the following text in at most three sentences, keeping only the key points.\n\n{text}",
        "classify": "Classify the following text into exactly one of these labels. Answer with the label only.\nLabels: {labels}\n\nText: {text}",
        "qa": "Answer the question using only the information in the text below. If the text does not contain the answer, say \"The text does not contain the answer.\"\n\nText:\n{text}\n\nQuestion: {question}",
    },
}
TITLES = {"expand": {"ko": "확장", "en": "Expand"}, "summarize": {"ko": "요약", "en": "Summarise"},
          "classify": {"ko": "분류", "en": "Classify"}, "qa": {"ko": "질의응답", "en": "Question answering"}}


@dataclass
class TaskInput:
    task: str
    text: str
    labels: list[str] = field(default_factory=list)
    question: str = ""
    lang: str = "auto"

    def check(self) -> None:
        if self.task not in TASKS:
            raise LlamakError(f"task {self.task!r}: expected one of {', '.join(TASKS)}")
        if not self.text.strip():
            raise LlamakError(f"task {self.task}: `text` is empty")
        if self.task == "classify" and len({label.strip() for label in self.labels if label.strip()}) < 2:
            raise LlamakError("task classify: give at least two distinct `labels`")
        if self.task == "qa" and not self.question.strip():
            raise LlamakError("task qa: `question` is empty")
        if self.lang not in ("auto", "ko", "en"):
            raise LlamakError(f"lang {self.lang!r}: expected auto, ko or en")

    @property
    def language(self) -> str:
        return language(self.text + self.question) if self.lang == "auto" else self.lang

    def clean_labels(self) -> list[str]:
        return list(dict.fromkeys(label.strip() for label in self.labels if label.strip()))


def messages(item: TaskInput) -> list[dict]:
    """The chat the model answers for this task."""
    item.check()
    lang = item.language
    user = TEMPLATES[lang][item.task].format(text=item.text.strip(), labels=", ".join(item.clean_labels()), question=item.question.strip())
    return [{"role": "system", "content": SYSTEM[lang]}, {"role": "user", "content": user}]


def label_continuations(tokenizer, labels: list[str]) -> list[list[int]]:
    """Each label as the assistant's whole reply: its tokens, then the end-of-turn token."""
    end = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    return [tokenizer(label, add_special_tokens=False)["input_ids"] + end for label in labels]


def best_label(labels: list[str], scores: list[float]) -> str:
    """The label whose reply the model finds most likely (the first of equals)."""
    return labels[max(range(len(labels)), key=scores.__getitem__)]


def describe() -> dict:
    """What GET /v1/tasks returns: each task's input fields and titles."""
    return {task: {"fields": FIELDS[task], "title": TITLES[task]} for task in TASKS}
