"""``mmi-ray rationales``: ask a teacher LLM for chain-of-thought rationales of your own rows
(mmi_ray/teacher/)."""

from __future__ import annotations

import sys

from ..results.stats import wilson_interval
from . import shown
from .data import DATA_HELP, data_config


def register(sub) -> None:
    r = sub.add_parser("rationales", help="ask a teacher LLM for chain-of-thought rationales of your own rows")
    r.add_argument("data", help="a JSONL / CSV file, a folder of split files, a datasets folder, or hf:NAME")
    r.add_argument("settings", nargs="*", help=DATA_HELP)
    r.add_argument("--out", required=True, help="the folder to write (a rerun resumes it)")
    r.add_argument("--teacher", required=True, help="the model: its name on the server (openai) or a HF name / folder (ray-data)")
    r.add_argument("--backend", choices=["openai", "ray-data"], default="openai", help="who asks the teacher: an OpenAI-compatible server, or Ray Data actors that load it (default: openai)")
    r.add_argument("--prompt", default=None, help="a prompt template file or a shipped one (text, choice, number, class, cqa, svamp, anli1, esnli); default: the label kind's")
    r.add_argument("--splits", nargs="+", default=None, choices=["train", "valid", "test"], help="default: every split the data has")
    r.add_argument("--limit", type=int, default=None, help="only the first N rows of each split (a trial run)")
    r.add_argument("--force", action="store_true", help="ask again rows written with other settings (else refused)")
    c = r.add_argument_group("cost")
    c.add_argument("--dry-run", action="store_true", help="ask nothing: print the requests still to send, their "
                   "prompts' tokens and their cost at --price-in / --price-out")
    c.add_argument("--price-in", type=float, default=None, help="USD per million prompt tokens (with --dry-run)")
    c.add_argument("--price-out", type=float, default=None, help="USD per million reply tokens (with --dry-run)")
    c.add_argument("--tokenizer", default=None, help="a HF tokenizer name or folder to count the prompts' tokens "
                   "(default: the teacher's for ray-data; else 4 characters a token, an estimate)")
    g = r.add_argument_group("sampling")
    g.add_argument("--temperature", type=float, default=0.0, help="0: greedy, each distinct prompt asked once (default)")
    g.add_argument("--max-tokens", type=int, default=256, help="new tokens per reply at most (default 256)")
    g.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling (default 1.0: off)")
    g.add_argument("--seed", type=int, default=0, help="sampling seed, where the server honours one (default 0; "
                   "sample k of a row: seed + k)")
    g.add_argument("--samples", type=int, default=1, help="replies per row (diverse reasoning; needs --temperature > 0): "
                   "each resumable on its own, the majority answer recorded (default 1)")
    o = r.add_argument_group("openai backend")
    o.add_argument("--base-url", default="http://127.0.0.1:8000/v1", help="an OpenAI-compatible API (vLLM serve, TGI, llama.cpp, a hosted API)")
    o.add_argument("--api-key-env", default="OPENAI_API_KEY", help="the environment variable that holds the key (never a flag: it would show in ps)")
    o.add_argument("--api", choices=["chat", "completions"], default="chat", help="the chat or the plain completions endpoint (default: chat)")
    o.add_argument("--concurrency", type=int, default=8, help="requests in flight at once")
    o.add_argument("--rate-limit", type=float, default=None, help="requests per second at most")
    o.add_argument("--timeout", type=float, default=60.0, help="seconds per request before it is retried")
    o.add_argument("--retries", type=int, default=4, help="retries per request (429, 5xx, timeouts, malformed replies)")
    y = r.add_argument_group("ray-data backend")
    y.add_argument("--engine", choices=["hf", "vllm"], default="hf", help="transformers generation (CPU or GPU) or vLLM via ray.data.llm (GPU)")
    y.add_argument("--batch-size", type=int, default=16, help="rows per generation batch (default 16)")
    y.add_argument("--replicas", type=int, default=1, help="model replicas (Ray actors) at once")
    y.add_argument("--cpus-per-replica", type=float, default=1.0, help="CPUs each replica holds (default 1)")
    y.add_argument("--gpus-per-replica", type=float, default=0.0, help="GPUs each replica holds; fractions share a GPU (default 0)")
    r.set_defaults(fn=run)


def count_tokens(prompts: list[str], tokenizer: str | None) -> tuple[int, str]:
    """(tokens of ``prompts``, how they were counted): with a HF tokenizer where one is named, else
    estimated at 4 characters a token."""
    if tokenizer is None:
        return sum(-(-len(p) // 4) for p in prompts), "estimated at 4 characters a token"
    from ..errors import ConfigError

    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(tokenizer)
    except (OSError, ValueError) as e:
        raise ConfigError("command line", f"--tokenizer {tokenizer}: cannot load it ({str(e).splitlines()[0][:160]})") from None
    return sum(len(tok(p)["input_ids"]) for p in prompts), f"counted with {tokenizer}'s tokenizer"


def dry_run(args, data, prompt, backend) -> int:
    """What the command would ask and what it would cost; nothing asked, nothing written."""
    from ..teacher.run import pending_prompts

    rows, prompts = pending_prompts(data, prompt, backend, args.out, splits=args.splits, limit=args.limit,
                                    force=args.force, samples=args.samples)
    tokenizer = args.tokenizer or (args.teacher if args.backend == "ray-data" else None)
    tokens_in, how = count_tokens(prompts, tokenizer)
    tokens_out = len(prompts) * args.max_tokens
    cost_in, cost_out = tokens_in * args.price_in / 1e6, tokens_out * args.price_out / 1e6
    print(f"[mmi-ray] dry run: {rows} rows to answer with {len(prompts)} requests "
          f"({'one per distinct prompt: greedy' if args.temperature == 0 else 'one per row: sampled'}); nothing asked")
    print(f"[mmi-ray] prompts: {tokens_in:,} tokens ({how}); replies: at most {tokens_out:,} tokens "
          f"(--max-tokens {args.max_tokens} each)")
    print(f"[mmi-ray] cost at ${args.price_in:g} / ${args.price_out:g} per million tokens in / out: "
          f"${cost_in:,.2f} for the prompts + at most ${cost_out:,.2f} for the replies = at most "
          f"${cost_in + cost_out:,.2f} (retries not counted)")
    return 0


def _backend(args):
    from ..errors import ConfigError
    from ..teacher.backends import OpenAIBackend, RayDataBackend, Sampling

    if args.dry_run and (args.price_in is None or args.price_out is None):
        raise ConfigError("command line", "--dry-run: needs --price-in and --price-out (USD per million tokens in / out)")
    for flag, value in (("--price-in", args.price_in), ("--price-out", args.price_out)):
        if value is not None and value < 0:
            raise ConfigError("command line", f"{flag}: must be >= 0 (got {value})")

    for flag, value, low in (("--max-tokens", args.max_tokens, 1), ("--concurrency", args.concurrency, 1),
                             ("--batch-size", args.batch_size, 1), ("--replicas", args.replicas, 1)):
        if value < low:
            raise ConfigError("command line", f"{flag}: must be >= {low} (got {value})")
    if args.samples < 1:
        raise ConfigError("command line", f"--samples: must be >= 1 (got {args.samples})")
    if args.samples > 1 and args.temperature == 0:
        raise ConfigError("command line", f"--samples {args.samples}: needs --temperature > 0 (greedy replies to one "
                                          "prompt are all the same)")
    if args.temperature < 0 or not 0 < args.top_p <= 1:
        raise ConfigError("command line", "--temperature must be >= 0 and --top-p in (0, 1]")
    if args.rate_limit is not None and args.rate_limit <= 0:
        raise ConfigError("command line", f"--rate-limit: must be > 0 (got {args.rate_limit})")
    sampling = Sampling(args.temperature, args.max_tokens, args.top_p, args.seed)
    if args.backend == "openai":
        return OpenAIBackend(args.teacher, args.base_url, args.api_key_env, args.api, args.concurrency,
                             args.rate_limit, args.timeout, args.retries, sampling)
    return RayDataBackend(args.teacher, args.engine, args.batch_size, args.replicas, args.cpus_per_replica,
                          args.gpus_per_replica, sampling)


def run(args) -> int:
    from ..teacher.prompts import load_prompt
    from ..teacher.run import generate

    data = data_config(args.data, args.settings)
    prompt = load_prompt(args.prompt or data.custom.label_kind or "text")
    backend = _backend(args)
    if args.dry_run:
        return dry_run(args, data, prompt, backend)
    bar = None
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(unit="row", desc="teacher", file=sys.stderr)
    try:
        report = generate(data, prompt, backend, args.out, splits=args.splits, limit=args.limit, force=args.force,
                          progress=bar.update if bar else None, samples=args.samples)
    except KeyboardInterrupt as e:
        if bar is not None:
            bar.close()
            bar = None
        kept = getattr(e, "report", None)
        if kept is None:
            raise
        import shlex

        print(f"[mmi-ray] interrupted: {kept.reused + kept.answered} of {kept.rows} rows kept in {shown(kept.out)} "
              f"({kept.answered} this run); resume with: mmi-ray {shlex.join(args.argv)}", file=sys.stderr)
        return 130
    finally:
        if bar is not None:
            bar.close()
    print("\n".join(report_lines(report.meta, report.out, report)))
    if report.failed:
        print(f"[mmi-ray] {report.failed} rows failed after the retries (last: {report.last_error}); run the same "
              "command again to ask them again", file=sys.stderr)
    return 0 if report.complete else 1


def report_lines(meta: dict, out: str, report=None) -> list[str]:
    """The teacher report: who answered what, and how well, per split (with a 95% Wilson interval)."""
    t, p = meta["teacher"], meta["prompt"]
    where = f" at {t['base_url']}" if t.get("base_url") else ""
    lines = [f"[mmi-ray] teacher {t['model']} ({t['backend']}{where}), prompt {p['name']} ({p['sha']}), "
             f"label kind {meta['label_kind']}, temperature {t['sampling']['temperature']}"]
    if report is not None:
        rate = f" ({report.asked / report.wall_s:.0f} requests/s)" if report.wall_s > 0 and report.asked else ""
        lines.append(f"[mmi-ray] this run: {report.answered} rows answered with {report.asked} requests "
                     f"({report.http_requests} on the wire, the client's own retries included) in "
                     f"{report.wall_s:.1f} s{rate}, {report.reused} rows kept from before")
    lines.append(f"{'split':<7} {'rows':>6} {'parsed':>7}  teacher accuracy [95% Wilson]   tokens in / out")
    for split, s in meta["splits"].items():
        n = s.get("labelled", s["rows"])  # rows without gold: the accuracy is over those with it
        lo, hi = wilson_interval(s["teacher_correct"], n) if n else (0.0, 0.0)
        acc = f"{100 * s['teacher_accuracy']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]" + (
            f" of {n}" if n != s["rows"] else "")
        lines.append(f"{split:<7} {s['rows']:>6} {s['parsed']:>7}  {acc:<28} "
                     f"{s.get('tokens_in', 0):,} / {s.get('tokens_out', 0):,}")
        if s.get("majority_correct") is not None:
            n = s["rows"] // meta["samples_per_row"]
            lines.append(f"{'':<7} majority answer over {meta['samples_per_row']} samples (self-consistency): "
                         f"{100 * s['majority_correct'] / max(n, 1):.1f}% of {n} rows")
    state = "complete" if meta["complete"] else "NOT complete (run the same command again to finish)"
    lines.append(f"[mmi-ray] {shown(meta['source'])} -> {shown(out)}: {state}; rows hash {meta['rows_sha']}")
    return lines
