"""Teachers that turn prompts into replies: any OpenAI-compatible endpoint, or Ray Data batch inference.

A backend gets the requests still to be asked (``(id, prompt, sample)``: sample k of a row asks
with seed + k) and calls ``done(id, text, tokens)`` as each reply arrives, so the runner writes it at once (a crash loses only the requests in flight).
``openai``: the ``openai`` client (its retries with backoff on 429 / 5xx / timeouts, ``Retry-After``
honoured), a concurrency cap and a request-rate limit of ours. ``ray-data``: ``map_batches`` over a
Ray Dataset, HF ``transformers`` generation on CPU (or GPU), or vLLM through ``ray.data.llm``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

from ..errors import MmiError


class TeacherError(MmiError):
    """The teacher cannot be asked at all (unreachable, wrong key, unknown model): exit 2, rows kept."""


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0
    """0: greedy (the default: one rationale per row, reproducible where the server is)."""
    max_tokens: int = 256
    top_p: float = 1.0
    seed: int | None = 0
    stop: tuple[str, ...] = ("\n\n",)
    """A few-shot teacher goes on to write the next exemplar after a blank line: cut there."""

    def as_dict(self) -> dict:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d


def cut_at_stop(text: str, stop: Iterable[str]) -> str:
    for s in stop:
        at = text.find(s)
        if at >= 0:
            text = text[:at]
    return text


Done = Callable[..., None]
"""``done(id, text, tokens)``: a reply, with its request's (prompt tokens, reply tokens) where known."""


@dataclass
class Outcome:
    http_requests: int = 0
    """HTTP requests sent, the client's own retries included (``asked`` counts ours)."""
    asked: int = 0
    failed: int = 0
    """Requests that still failed after the retries (transient errors): not written, asked again next run."""
    last_error: str = ""


# --- openai


class RateLimiter:
    """At most ``rate`` request starts per second (None: no limit), spaced evenly."""

    def __init__(self, rate: float | None):
        self.interval = 1.0 / rate if rate else 0.0
        self.next = 0.0
        self.lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self.interval:
            return
        async with self.lock:
            now = time.monotonic()
            at = max(now, self.next)
            self.next = at + self.interval
        if at > now:
            await asyncio.sleep(at - now)


@dataclass
class OpenAIBackend:
    model: str
    base_url: str
    api_key_env: str = "OPENAI_API_KEY"
    api: str = "chat"
    """``chat`` (``/chat/completions``, the prompt as one user message) or ``completions`` (``/completions``,
    the raw few-shot prompt, as the DSS teacher was asked)."""
    concurrency: int = 8
    rate_limit: float | None = None
    """Requests per second (None: as fast as the concurrency allows)."""
    timeout_s: float = 60.0
    retries: int = 4
    """Retries per request on 429, 5xx, timeouts, dropped connections and malformed replies."""
    sampling: Sampling = Sampling()

    name = "openai"

    def describe(self) -> dict:
        return {"backend": self.name, "model": self.model, "base_url": self.base_url, "api": self.api,
                "sampling": self.sampling.as_dict()}

    def run(self, requests: list[tuple], done: Done) -> Outcome:
        return asyncio.run(self._run(requests, done))

    def _client(self, out: Outcome):
        try:
            import openai  # noqa: PLC0415
        except ImportError:
            raise TeacherError("--backend openai needs the openai client: pip install 'mmi-ray[teacher]'") from None
        key = os.environ.get(self.api_key_env) or "EMPTY"  # local servers (vLLM, llama.cpp) take any key

        async def count(_request) -> None:  # every request on the wire, the client's own retries too
            out.http_requests += 1

        http = openai.DefaultAsyncHttpxClient(event_hooks={"request": [count]})
        return openai, openai.AsyncOpenAI(base_url=self.base_url, api_key=key, timeout=self.timeout_s,
                                          max_retries=self.retries, http_client=http)

    async def _ask(self, client, prompt: str, sample: int = 0) -> tuple[str, tuple[int, int] | None]:
        s = self.sampling
        extra = {"seed": s.seed + sample} if s.seed is not None else {}
        if self.api == "completions":
            r = await client.completions.create(model=self.model, prompt=prompt, temperature=s.temperature,
                                                max_tokens=s.max_tokens, top_p=s.top_p, stop=list(s.stop), **extra)
            text = r.choices[0].text if r.choices else None
        else:
            r = await client.chat.completions.create(model=self.model, messages=[{"role": "user", "content": prompt}],
                                                     temperature=s.temperature, max_tokens=s.max_tokens,
                                                     top_p=s.top_p, stop=list(s.stop), **extra)
            text = r.choices[0].message.content if r.choices else None
        if not isinstance(text, str):
            raise ValueError("reply without choices[0] text")
        u = getattr(r, "usage", None)
        tokens = (u.prompt_tokens or 0, u.completion_tokens or 0) if u is not None else None
        return cut_at_stop(text, s.stop), tokens

    def _fatal(self, openai, e: Exception) -> str | None:
        """The one line for errors no retry fixes, or None for a transient one."""
        where = f"--base-url {self.base_url}"
        if isinstance(e, openai.AuthenticationError | openai.PermissionDeniedError):
            return f"{where}: the server refused the key (HTTP {e.status_code}); set ${self.api_key_env} (--api-key-env)"
        if isinstance(e, openai.NotFoundError):
            return (f"--teacher {self.model}: the server at {self.base_url} refused the model or the path "
                    f"(HTTP 404: {_short(e)}); check the model name and --api {self.api}")
        if isinstance(e, openai.BadRequestError | openai.UnprocessableEntityError):
            return f"--teacher {self.model}: the server refused the request (HTTP {e.status_code}: {_short(e)})"
        if isinstance(e, openai.APIConnectionError) and not isinstance(e, openai.APITimeoutError):
            return f"{where}: cannot reach the teacher ({_short(e)}; after {self.retries} retries)"
        return None

    async def _run(self, requests: list[tuple], done: Done) -> Outcome:
        out = Outcome()
        openai, client = self._client(out)
        limiter = RateLimiter(self.rate_limit)
        gate = asyncio.Semaphore(self.concurrency)
        stop = asyncio.Event()
        fatal: list[str] = []

        async def one(rid: str, prompt: str, sample: int = 0) -> None:
            async with gate:
                if stop.is_set():
                    return
                for attempt in range(self.retries + 1):
                    await limiter.wait()
                    out.asked += 1
                    try:
                        text, tokens = await self._ask(client, prompt, sample)
                    except ValueError as e:  # a malformed reply: the client's retries do not cover it
                        out.last_error = str(e)
                        await asyncio.sleep(min(8.0, 0.25 * 2 ** attempt))
                        continue
                    except openai.APIResponseValidationError as e:
                        out.last_error = _short(e)
                        await asyncio.sleep(min(8.0, 0.25 * 2 ** attempt))
                        continue
                    except openai.APIError as e:
                        line = self._fatal(openai, e)
                        if line:
                            fatal.append(line)
                            stop.set()
                        else:
                            out.failed += 1
                            out.last_error = _short(e)
                        return
                    done(rid, text, tokens)
                    return
                out.failed += 1

        try:
            if requests:  # the first request alone: a wrong URL, key or model fails before the rest are sent
                await one(*requests[0])
            if not fatal:
                await asyncio.gather(*(one(*r) for r in requests[1:]))
        finally:
            await client.close()
        if fatal:
            raise TeacherError(fatal[0])
        return out


def _short(e: Exception) -> str:
    s = str(e).strip().splitlines()
    return (s[0][:200] if s else type(e).__name__) or type(e).__name__


# --- ray-data


class HFGenerate:
    """A Ray Data actor: a causal LM with HF ``transformers``, batched greedy (or sampled) generation."""

    def __init__(self, model: str, sampling: dict, device: str | None = None):
        import torch  # noqa: PLC0415
        from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tok = AutoTokenizer.from_pretrained(model)
        self.tok.padding_side = "left"
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model).to(self.device).eval()
        self.sampling = sampling

    def __call__(self, batch: dict) -> dict:
        s = self.sampling
        enc = self.tok(list(batch["prompt"]), return_tensors="pt", padding=True).to(self.device)
        gen = {"max_new_tokens": s["max_tokens"], "pad_token_id": self.tok.pad_token_id}
        if s["temperature"] > 0:
            gen.update(do_sample=True, temperature=s["temperature"], top_p=s["top_p"])
            if s.get("seed") is not None:
                self.torch.manual_seed(s["seed"])
        else:
            gen.update(do_sample=False)
        with self.torch.no_grad():
            ids = self.model.generate(**enc, **gen)
        new = ids[:, enc["input_ids"].shape[1]:]
        texts = [cut_at_stop(t, s["stop"]) for t in self.tok.batch_decode(new, skip_special_tokens=True)]
        return {"id": list(batch["id"]), "text": texts,  # tokens as the teacher's tokenizer counts them
                "tokens_in": enc["attention_mask"].sum(dim=1).tolist(),
                "tokens_out": (new != self.tok.pad_token_id).sum(dim=1).tolist()}


@dataclass
class RayDataBackend:
    model: str
    """A HF model name or local folder (a causal LM)."""
    engine: str = "hf"
    """``hf``: transformers generation in each actor (CPU or one GPU); ``vllm``: ``ray.data.llm``'s vLLM
    processor (GPU nodes, vLLM installed)."""
    batch_size: int = 16
    concurrency: int = 1
    """Model replicas (actors) at once."""
    cpus_per_replica: float = 1.0
    gpus_per_replica: float = 0.0
    sampling: Sampling = Sampling()

    name = "ray-data"

    def describe(self) -> dict:
        return {"backend": self.name, "model": self.model, "engine": self.engine, "sampling": self.sampling.as_dict()}

    def _dataset(self, requests):
        import ray  # noqa: PLC0415

        ds = ray.data.from_items([{"id": r[0], "prompt": r[1]} for r in requests])
        s = self.sampling.as_dict()
        if self.engine == "vllm":  # pragma: no cover - needs GPUs and vLLM
            from ray.data.llm import build_processor, vLLMEngineProcessorConfig  # noqa: PLC0415

            config = vLLMEngineProcessorConfig(model_source=self.model, batch_size=self.batch_size,
                                               concurrency=self.concurrency, chat_template_stage=False,
                                               engine_kwargs={"max_model_len": 8192})
            params = {"temperature": s["temperature"], "max_tokens": s["max_tokens"], "top_p": s["top_p"],
                      "stop": s["stop"], "seed": s["seed"]}
            processor = build_processor(
                config,
                preprocess=lambda row: {"id": row["id"], "prompt": row["prompt"], "sampling_params": params},
                postprocess=lambda row: {"id": row["id"], "text": row["generated_text"]},
            )
            return processor(ds)
        gpus = {"num_gpus": self.gpus_per_replica} if self.gpus_per_replica else {}
        return ds.map_batches(HFGenerate, fn_constructor_kwargs={"model": self.model, "sampling": s},
                              batch_size=self.batch_size, compute=ray.data.ActorPoolStrategy(size=self.concurrency),
                              num_cpus=self.cpus_per_replica, **gpus)

    def run(self, requests: list[tuple], done: Done) -> Outcome:
        from ..ray_init import init_ray  # noqa: PLC0415

        out = Outcome()
        if not requests:
            return out
        init_ray()
        try:
            for batch in self._dataset(requests).iter_batches(batch_size=None, batch_format="numpy"):
                tokens = list(zip(batch["tokens_in"], batch["tokens_out"])) if "tokens_in" in batch else None
                for i, (rid, text) in enumerate(zip(batch["id"], batch["text"])):
                    out.asked += 1
                    out.http_requests += 1
                    done(str(rid), str(text), tuple(int(x) for x in tokens[i]) if tokens else None)
        except Exception as e:  # noqa: BLE001 - a model that cannot load is one line, rows written stay
            from ..errors import root_cause  # noqa: PLC0415

            cause = root_cause(e)
            raise TeacherError(f"--teacher {self.model}: the ray-data backend failed "
                               f"({type(cause).__name__}: {_short(cause)})") from None
        return out
