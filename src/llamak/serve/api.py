"""The OpenAI-compatible HTTP API (FastAPI): chat and text completions (streamed with SSE or not),
models, health, the card's use-case tasks, and the web chat page at `/`.

Every failure a client can cause answers with OpenAI's error body
`{"error": {"message", "type", "param", "code"}}` and a 4xx status: malformed JSON and invalid fields
400 (as OpenAI and vLLM do), a missing or wrong key 401, an unknown route 404, a body over the size
limit 413. A bug or a failed generation answers 500 with the same body shape (in a stream that has
started: an `{"error": …}` event), never a bare traceback.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import importlib.resources
import json
import secrets
import signal
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Annotated, AsyncIterator, Literal

from fastapi import FastAPI, Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from llamak.errors import LlamakError
from llamak.serve import tasks as use_cases
from llamak.serve.engine import Delta, Request
from llamak.serve.generate import chat_prompt_ids
from llamak.serve.guard import Guard, Verdict, refusal


@dataclass
class ServerConfig:
    model_name: str
    api_key: str | None = None
    guard: str = "off"
    max_request_bytes: int = 1 << 20
    max_tokens_limit: int = 4096  # the most tokens one request may ask for
    default_max_tokens: int = 512


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def body(self) -> dict:
        """OpenAI's error body (also the event a stream sends when it fails after it started)."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def error_response(status: int, message: str, type_: str = "invalid_request_error", param: str | None = None, code: str | None = None) -> JSONResponse:
    return JSONResponse(APIError(status, message, type_, param, code).body(), status_code=status)


# ---------------------------------------------------------------- request bodies
Text = Annotated[str, Field(max_length=200_000)]


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send fields we do not use (logit_bias, user, …)


class ContentPart(Body):
    type: Literal["text"]
    text: Text


class Message(Body):
    role: Literal["system", "user", "assistant", "developer"]
    content: Text | Annotated[list[ContentPart], Field(max_length=64)] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(Body):
    include_usage: bool = False


class Sampling(Body):
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    stop: Annotated[str, Field(min_length=1, max_length=200)] | Annotated[list[Annotated[str, Field(min_length=1, max_length=200)]], Field(max_length=4)] | None = None
    n: int = Field(1, ge=1, le=1)  # one choice per request (ask again for more)
    stream: bool = False
    stream_options: StreamOptions | None = None

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class ChatRequest(Sampling):
    model: str | None = None
    messages: Annotated[list[Message], Field(min_length=1, max_length=512)]
    max_completion_tokens: int | None = Field(None, ge=1)


class CompletionRequest(Sampling):
    model: str | None = None
    prompt: Text | Annotated[list[Text], Field(min_length=1, max_length=16)]
    max_tokens: int | None = Field(16, ge=1)  # OpenAI's default for completions
    echo: bool = False

    @field_validator("prompt")
    @classmethod
    def _not_empty(cls, value):
        prompts = [value] if isinstance(value, str) else value
        if any(p == "" for p in prompts):
            raise ValueError("prompt must not be empty")
        return value


class TaskRequest(Body):
    text: Annotated[str, Field(min_length=1, max_length=200_000)]
    labels: Annotated[list[Annotated[str, Field(max_length=200)]], Field(max_length=64)] = []
    question: Annotated[str, Field(max_length=10_000)] = ""
    lang: Literal["auto", "ko", "en"] = "auto"
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)


# ---------------------------------------------------------------- the app
def create_app(engine, config: ServerConfig, guard: Guard | None = None) -> FastAPI:
    """`guard`: a configured `Guard` (with a judge model); default: `Guard(config.guard)`."""
    app = FastAPI(title="llamak", version="1", description="OpenAI-compatible API of a llamak model.",
                  docs_url="/docs", redoc_url=None)
    guard = guard or Guard(config.guard)
    tokenizer = engine.tokenizer
    created = int(time.time())
    web = importlib.resources.files("llamak").joinpath("resources", "web")

    # -------------------------------------------- errors in OpenAI's shape
    @app.exception_handler(APIError)
    async def _api_error(request, e: APIError):
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        where = [str(x) for x in first.get("loc", ()) if x != "body"]
        if first.get("type") == "json_invalid":
            return error_response(400, f"request body is not valid JSON: {first.get('ctx', {}).get('error', 'parse error')}")
        param = ".".join(where) or None
        return error_response(400, f"{param or 'body'}: {first.get('msg', 'invalid value')}", param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, e: StarletteHTTPException):
        return error_response(e.status_code, str(e.detail), "not_found_error" if e.status_code == 404 else "invalid_request_error")

    @app.exception_handler(Exception)
    async def _bug(request, e: Exception):
        return error_response(500, f"internal error: {type(e).__name__}", "server_error")

    @app.middleware("http")
    async def _limits(request: HTTPRequest, call_next):
        size = request.headers.get("content-length")
        if size is not None and (not size.isdigit() or int(size) > config.max_request_bytes):
            return error_response(413, f"request body over {config.max_request_bytes} bytes")
        if size is None and request.method == "POST":  # chunked upload: measure what arrives
            body = await request.body()
            if len(body) > config.max_request_bytes:
                return error_response(413, f"request body over {config.max_request_bytes} bytes")
        if config.api_key and request.url.path.startswith("/v1/"):
            given = request.headers.get("authorization", "")
            if not secrets.compare_digest(given.encode(), f"Bearer {config.api_key}".encode()):
                return error_response(401, "invalid or missing API key (send `Authorization: Bearer KEY`)", "authentication_error", code="invalid_api_key")
        return await call_next(request)

    # -------------------------------------------- helpers
    def check_model(name: str | None) -> None:
        if name not in (None, "", config.model_name):
            raise APIError(404, f"model {name!r} is not served here (this server has {config.model_name!r})", param="model", code="model_not_found")

    def budget(prompt_ids: list[int], asked: int | None) -> int:
        if asked is not None and asked > config.max_tokens_limit:
            raise APIError(400, f"max_tokens {asked} is over this server's limit of {config.max_tokens_limit}", param="max_tokens")
        room = engine.context_length - len(prompt_ids)
        if room < 1:
            raise APIError(400, f"the prompt has {len(prompt_ids)} tokens; this model's context is {engine.context_length}", param="messages")
        wanted = asked if asked is not None else min(config.default_max_tokens, config.max_tokens_limit)
        if asked is not None and asked > room:
            raise APIError(400, f"prompt ({len(prompt_ids)} tokens) + max_tokens ({asked}) exceed the context of {engine.context_length} tokens", param="max_tokens")
        return min(wanted, room)

    def chat_ids(messages: list[dict]) -> list[int]:
        try:
            return chat_prompt_ids(tokenizer, messages)
        except LlamakError as e:  # no chat template
            raise APIError(400, f"{e}: use /v1/completions", param="messages") from None
        except Exception as e:  # templates raise on, e.g., roles out of order
            raise APIError(400, f"the chat template rejected these messages: {e}", param="messages") from None

    def make_request(prompt_ids: list[int], body, max_tokens: int | None) -> Request:
        return Request(prompt_ids, budget(prompt_ids, max_tokens), body.temperature, getattr(body, "top_p", 1.0), body.seed, body.stops() if hasattr(body, "stops") else [])

    async def run(request: Request, user_text: str) -> AsyncIterator[tuple[Delta, Verdict]]:
        """Deltas of one completion with the guard applied: a refused input never reaches the model; an
        output that breaks a rule ends the completion with a refusal (finish_reason content_filter)."""
        verdict = await guard.check_input_async(user_text)
        if verdict.blocked:
            yield Delta(refusal(user_text), len(request.prompt_ids), 0, "content_filter"), verdict
            return
        text, checked = "", 0
        async for delta in engine.stream(request):
            text += delta.text
            if guard.active and (delta.finish_reason or len(text) - checked >= 16):
                out = guard.check_output(text[max(0, checked - 64):])  # overlap: a word split across checks
                checked = len(text)
                if out.flagged:
                    verdict = verdict.merge(out)
                if out.blocked:
                    yield Delta(refusal(user_text), delta.prompt_tokens, delta.completion_tokens, "content_filter"), verdict
                    return
            yield delta, verdict

    def usage(prompt: int, completion: int) -> dict:
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def finish(reason: str | None) -> str | None:
        return {"cancelled": "stop"}.get(reason, reason) if reason else None

    def engine_error(delta: Delta) -> APIError:
        return APIError(500, delta.text.strip("[]"), "server_error")

    async def collect(request: Request, user_text: str) -> tuple[str, str, Verdict, dict]:
        """A non-streamed answer: the engine may send it whole (vLLM does, like `vllm serve`)."""
        parts, verdict, last = [], Verdict(), None
        async for delta, verdict in run(dataclasses.replace(request, stream=False), user_text):
            if delta.finish_reason == "content_filter":
                parts = [delta.text]
            else:
                parts.append(delta.text)
            last = delta
        if last.finish_reason == "error":  # the engine failed (a bug, or out of memory): not the client's fault
            raise engine_error(last)
        return "".join(parts), finish(last.finish_reason), verdict, usage(last.prompt_tokens, last.completion_tokens)

    def sse(events: AsyncIterator[dict]) -> StreamingResponse:
        async def body():
            async for event in events:
                yield f"data: {json.dumps(event, ensure_ascii=False)}\n\n"
            yield "data: [DONE]\n\n"
        return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    def guard_field(verdict: Verdict) -> dict:
        return {"llamak_guard": verdict.as_dict()} if guard.active else {}

    async def chat_chunks(request: Request, user_text: str, include_usage: bool, cid: str) -> AsyncIterator[dict]:
        head = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": config.model_name}
        yield {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
        last, verdict = None, Verdict()
        async for delta, verdict in run(request, user_text):
            last = delta
            if delta.finish_reason == "error":  # headers are sent: report it in the stream, as OpenAI does
                yield engine_error(delta).body()
                return
            if delta.text or delta.finish_reason:
                yield {**head, "choices": [{"index": 0, "delta": {"content": delta.text} if delta.text else {}, "finish_reason": finish(delta.finish_reason)}], **(guard_field(verdict) if delta.finish_reason else {})}
        if include_usage and last is not None:
            yield {**head, "choices": [], "usage": usage(last.prompt_tokens, last.completion_tokens)}

    async def chat_response(messages: list[dict], body, max_tokens: int | None):
        request = make_request(chat_ids(messages), body, max_tokens)
        user_text = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        cid = f"chatcmpl-{uuid.uuid4().hex}"
        include_usage = bool(getattr(body, "stream_options", None) and body.stream_options.include_usage)
        if body.stream:
            return sse(chat_chunks(request, user_text, include_usage, cid))
        text, reason, verdict, used = await collect(request, user_text)
        return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": config.model_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": reason, "logprobs": None}],
                "usage": used, **guard_field(verdict)}

    # -------------------------------------------- routes
    @app.get("/health")
    async def health():
        return {"status": "ok", "model": config.model_name, "auth": bool(config.api_key), "engine": engine.name, "guard": guard.mode}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": config.model_name, "object": "model", "created": created, "owned_by": "llamak",
                                            "max_model_len": engine.context_length}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest):
        check_model(body.model)
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages]
        return await chat_response(messages, body, body.max_completion_tokens or body.max_tokens)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest):
        check_model(body.model)
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        requests = [make_request(tokenizer(p, add_special_tokens=False)["input_ids"], body, body.max_tokens) for p in prompts]
        cid = f"cmpl-{uuid.uuid4().hex}"
        head = {"id": cid, "object": "text_completion", "model": config.model_name}
        if body.stream:
            async def chunks():
                queue: asyncio.Queue = asyncio.Queue()

                async def pump(i: int, request: Request, prompt: str):
                    try:
                        async for delta, _ in run(request, prompt):
                            await queue.put((i, delta))
                    finally:
                        await queue.put((i, None))

                workers = [asyncio.create_task(pump(i, r, p)) for i, (r, p) in enumerate(zip(requests, prompts))]
                totals, open_ = [0, 0], len(workers)
                try:
                    if body.echo:
                        for i, p in enumerate(prompts):
                            yield {**head, "created": int(time.time()), "choices": [{"index": i, "text": p, "finish_reason": None, "logprobs": None}]}
                    while open_:
                        i, delta = await queue.get()
                        if delta is None:
                            open_ -= 1
                            continue
                        if delta.finish_reason == "error":
                            yield engine_error(delta).body()
                            return
                        if delta.finish_reason:
                            totals[0] += delta.prompt_tokens
                            totals[1] += delta.completion_tokens
                        yield {**head, "created": int(time.time()), "choices": [{"index": i, "text": delta.text, "finish_reason": finish(delta.finish_reason), "logprobs": None}]}
                    if body.stream_options and body.stream_options.include_usage:
                        yield {**head, "created": int(time.time()), "choices": [], "usage": usage(*totals)}
                finally:
                    for w in workers:
                        w.cancel()
            return sse(chunks())
        results = await asyncio.gather(*(collect(r, p) for r, p in zip(requests, prompts)))
        return {**head, "created": int(time.time()),
                "choices": [{"index": i, "text": (p if body.echo else "") + text, "finish_reason": reason, "logprobs": None}
                            for i, (p, (text, reason, _, _)) in enumerate(zip(prompts, results))],
                "usage": usage(sum(r[3]["prompt_tokens"] for r in results), sum(r[3]["completion_tokens"] for r in results)),
                **guard_field(functools.reduce(Verdict.merge, (r[2] for r in results), Verdict()))}

    @app.get("/v1/tasks")
    async def task_list():
        return {"tasks": use_cases.describe()}

    @app.post("/v1/tasks/{task}")
    async def task(task: Literal["expand", "summarize", "classify", "qa"], body: TaskRequest):
        item = use_cases.TaskInput(task, body.text, body.labels, body.question, body.lang)
        try:
            messages = use_cases.messages(item)
        except LlamakError as e:
            raise APIError(400, str(e)) from None
        if task != "classify":
            return await chat_response(messages, body, body.max_tokens)
        verdict = await guard.check_input_async(body.text)
        labels = item.clean_labels()
        prompt_ids = chat_ids(messages)
        budget(prompt_ids, None)
        scores = await engine.score_async(prompt_ids, use_cases.label_continuations(tokenizer, labels))
        label = refusal(body.text) if verdict.blocked else use_cases.best_label(labels, scores)
        reason = "content_filter" if verdict.blocked else "stop"
        if body.stream:
            async def one():
                head = {"id": f"task-{uuid.uuid4().hex}", "object": "chat.completion.chunk", "created": int(time.time()), "model": config.model_name}
                yield {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": label}, "finish_reason": reason}]}
            return sse(one())
        return {"task": task, "output": label, "label": None if verdict.blocked else label, "finish_reason": reason,
                "scores": dict(zip(labels, scores)), "usage": usage(len(prompt_ids), 0), **guard_field(verdict)}

    if web.joinpath("index.html").is_file():
        @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
        async def index():
            return FileResponse(str(web.joinpath("index.html")), media_type="text/html; charset=utf-8")

        @app.get("/favicon.ico", include_in_schema=False)
        async def favicon():
            return Response(status_code=204)  # no icon; spares browsers a logged 404

        @app.api_route("/app.js", methods=["GET", "HEAD"], include_in_schema=False)
        async def script():
            return FileResponse(str(web.joinpath("app.js")), media_type="text/javascript; charset=utf-8")

        @app.api_route("/style.css", methods=["GET", "HEAD"], include_in_schema=False)
        async def style():
            return FileResponse(str(web.joinpath("style.css")), media_type="text/css; charset=utf-8")

    return app


def serve(engine, config: ServerConfig, host: str = "127.0.0.1", port: int = 8000, guard: Guard | None = None) -> None:
    import uvicorn

    # uvicorn shuts down on SIGTERM, then raises it again: by default that ends the process at once, and
    # vLLM's engine processes would outlive it. As an exit instead, `finally` stops the engine first.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        uvicorn.run(create_app(engine, config, guard), host=host, port=port, log_level="info", timeout_graceful_shutdown=5)
    finally:
        engine.close()
        if guard is not None:
            guard.close()
