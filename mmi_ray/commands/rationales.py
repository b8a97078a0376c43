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
    g = r.add_argument_group("sampling")
    g.add_argument("--temperature", type=float, default=0.0, help="0: greedy, each distinct prompt asked once (default)")
    g.add_argument("--max-tokens", type=int, default=256, help="new tokens per reply at most (default 256)")
    g.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling (default 1.0: off)")
    g.add_argument("--seed", type=int, default=0, help="sampling seed, where the server honours one (default 0)")
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


def _backend(args):
    from ..errors import ConfigError
    from ..teacher.backends import OpenAIBackend, RayDataBackend, Sampling

    for flag, value, low in (("--max-tokens", args.max_tokens, 1), ("--concurrency", args.concurrency, 1),
                             ("--batch-size", args.batch_size, 1), ("--replicas", args.replicas, 1)):
        if value < low:
            raise ConfigError("command line", f"{flag}: must be >= {low} (got {value})")
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
    bar = None
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(unit="row", desc="teacher", file=sys.stderr)
    try:
        report = generate(data, prompt, backend, args.out, splits=args.splits, limit=args.limit, force=args.force,
                          progress=bar.update if bar else None)
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
        lines.append(f"[mmi-ray] this run: {report.answered} rows answered with {report.asked} requests in "
                     f"{report.wall_s:.1f} s{rate}, {report.reused} rows kept from before")
    lines.append(f"{'split':<7} {'rows':>6} {'parsed':>7}  teacher accuracy [95% Wilson]")
    for split, s in meta["splits"].items():
        lo, hi = wilson_interval(s["teacher_correct"], s["rows"]) if s["rows"] else (0.0, 0.0)
        lines.append(f"{split:<7} {s['rows']:>6} {s['parsed']:>7}  {100 * s['teacher_accuracy']:.1f}% "
                     f"[{100 * lo:.1f}, {100 * hi:.1f}]")
    state = "complete" if meta["complete"] else "NOT complete (run the same command again to finish)"
    lines.append(f"[mmi-ray] {shown(meta['source'])} -> {shown(out)}: {state}; rows hash {meta['rows_sha']}")
    return lines
