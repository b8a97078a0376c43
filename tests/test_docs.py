"""The README and docs/ stay true: every command they show parses (its flags exist), their figures
equal what tools/readme_figures.py renders from the committed records, the docs site builds
without a warning, and the README stays short."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from mmi_ray.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "cluster" / "README.md"]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def shown_commands(text: str) -> list[str]:
    """The command lines in a page's shell blocks (``bash``/``sh``/``console``/unnamed): backslash
    continuations joined, ``$ `` prompts and trailing comments dropped."""
    out = []
    for lang, body in FENCE.findall(text):
        if lang not in ("", "bash", "sh", "shell", "console"):
            continue
        joined = re.sub(r"\\\n\s*", " ", body)
        for line in joined.splitlines():
            if lang == "console" and not line.startswith("$ "):
                continue  # a console block: commands behind "$ ", the rest is what they printed
            tokens = shlex.split(line.strip().removeprefix("$ "), comments=True)
            while tokens[:1] == ["time"] or (tokens and re.fullmatch(r"[A-Z_]+=\S*", tokens[0])):
                tokens = tokens[1:]  # `time ...`, `VAR=value ...`: the command is what follows
            if tokens:
                out.append(shlex.join(tokens))
    return out


def _all_commands() -> list[tuple[str, str]]:
    return [(p.relative_to(REPO).as_posix(), c) for p in PAGES for c in shown_commands(p.read_text())]


def test_the_pages_show_commands_of_every_kind():
    cmds = [c for _, c in _all_commands()]
    for kind in ("mmi-ray sweep", "mmi-ray train", "mmi-ray confirm", "mmi-ray analyze", "mmi-ray table",
                 "mmi-ray plan", "mmi-ray data", "mmi-ray rationales", "mmi-ray export", "mmi-ray predict", "mmi-ray evaluate", "python benchmarks/", "make "):
        assert any(c.startswith(kind) for c in cmds), f"no page shows `{kind} ...`"


@pytest.mark.parametrize("page,cmd", [x for x in _all_commands() if x[1].startswith("mmi-ray ")],
                         ids=lambda x: x if len(x) < 60 else x[:60])
def test_every_mmi_ray_command_shown_parses(page, cmd):
    """Each ``mmi-ray ...`` line of the README and docs/ is read by the CLI's own parser: a flag or
    subcommand that does not exist (or a missing argument) fails here, naming the page."""
    rest = shlex.split(cmd)[1:]
    ap = build_parser()
    try:
        ap.parse_args(rest)
    except SystemExit as e:
        pytest.fail(f"{page}: `{cmd}` does not parse (exit {e.code})")
    flags = _flags_of(ap, rest)
    for token in rest:  # argparse takes a prefix of a flag: the docs spell each one out
        if token.startswith("--"):
            assert token.split("=", 1)[0] in flags, f"{page}: `{cmd}`: no flag {token}"


def _flags_of(ap, argv: list[str]) -> set[str]:
    """The option strings of the (sub)parser that reads ``argv``."""
    import argparse

    for action in ap._actions:
        if isinstance(action, argparse._SubParsersAction) and argv and argv[0] in action.choices:
            return _flags_of(action.choices[argv[0]], argv[1:])
    return {s for a in ap._actions for s in a.option_strings}


@pytest.mark.parametrize("page,cmd", [x for x in _all_commands() if x[1].startswith("python ")],
                         ids=lambda x: x if len(x) < 60 else x[:60])
def test_every_script_command_shown_names_flags_the_script_has(page, cmd):
    argv = shlex.split(cmd)
    script = next((a for a in argv[1:] if a.endswith(".py")), None)
    if script is None:  # python -m mmi_ray.offline_student ...
        module = argv[argv.index("-m") + 1]
        script = module.replace(".", "/") + ".py"
    source = (REPO / script).read_text()
    for flag in (a.split("=", 1)[0] for a in argv if a.startswith("--")):
        assert f'"{flag}"' in source, f"{page}: `{cmd}`: {script} has no flag {flag}"


def test_every_make_target_shown_exists():
    targets = set(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), re.M))
    for page, cmd in _all_commands():
        if cmd.startswith("make "):
            for t in shlex.split(cmd)[1:]:
                if "=" not in t:
                    assert t in targets, f"{page}: `{cmd}`: the Makefile has no target {t}"


def test_a_command_with_a_flag_that_does_not_exist_fails_the_check():
    ap, rest = build_parser(), ["sweep", "sweeps/quickstart.yaml", "--resumee"]
    with pytest.raises(SystemExit):
        ap.parse_args(rest)
    ap, rest = build_parser(), ["analyze", "results/x", "--test-method"]  # argparse takes the prefix ...
    assert "--test-method" not in _flags_of(ap, rest)  # ... the check does not
    assert "--top-k" in _flags_of(build_parser(), ["confirm", "results/x"])


def test_the_figures_in_the_readme_and_docs_are_rendered_from_the_committed_records():
    sys.path.insert(0, str(REPO / "tools"))
    import readme_figures

    blocks = [m.group("name") for p in readme_figures.FILES for m in readme_figures.BLOCK.finditer(p.read_text())]
    assert {"quickstart", "quickstart_export", "ablation", "props_spread"} <= set(blocks)
    assert readme_figures.stale_blocks() == []
    # and a changed figure is caught
    readme = (REPO / "README.md").read_text()
    m = next(m for m in readme_figures.BLOCK.finditer(readme) if m.group("name") == "quickstart")
    changed = readme[:m.start("body")] + m.group("body").replace("n=", "n =", 1) + readme[m.end("body"):]
    assert readme_figures.rendered(changed, readme_figures.load_records(), "README.md") == readme


def test_the_readme_stays_short():
    lines = (REPO / "README.md").read_text().count("\n")
    assert lines <= 205, f"README.md has {lines} lines: move detail to docs/"


def test_the_docs_site_builds_without_warnings(tmp_path):
    pytest.importorskip("mkdocs")
    import os

    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # mkdocs-material's banner about its successor
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                       cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not re.search(r"^WARNING", r.stderr, re.M), r.stderr
    assert (tmp_path / "site" / "index.html").exists()
    assert (tmp_path / "site" / "builtin-task" / "index.html").exists()


def test_the_readme_sweep_spec_is_a_valid_spec_with_a_conditional_critic_size(tmp_path):
    import yaml

    from mmi_ray.sweep import load_sweep

    readme = (REPO / "README.md").read_text()
    body = next(b for lang, b in FENCE.findall(readme) if lang == "yaml" and b.startswith("name: mi_search"))
    spec = yaml.safe_load(body)
    spec["base"] = str(REPO / "configs" / "tiny_props.yaml")  # the README's path is relative to sweeps/
    assert (REPO / "sweeps" / yaml.safe_load(body)["base"]).resolve() == Path(spec["base"])
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    sweep = load_sweep(tmp_path / "s.yaml")
    assert sweep.spec.confirm is not None and sweep.spec.seeds == [0, 1]
    space = sweep.space()
    assert space.canonical({"loss.mi_weight": 0.1, "loss.mi_estimator": "maxpool", "loss.critic_size": 16}) == {
        "loss.mi_weight": 0.1, "loss.mi_estimator": "maxpool", "loss.critic_size": 128}
