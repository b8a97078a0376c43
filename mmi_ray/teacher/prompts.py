"""Few-shot prompt templates: plain text files with a small YAML front matter.

```
---
kind: choice                 # the label kind the template is written for
marker: So the answer is     # the words before the answer (the parser's cue)
classes: [a, b]              # optional: a class template's closed set
---
<exemplars> ... Q: {input}\nA:
```
``{input}`` is the row's question (with its options for ``choice``), ``{choices}`` the options,
``{classes}`` the closed set; any other ``{name}`` is a column of the row (``{premise}``); ``{{``
is a brace. Shipped: ``text``, ``choice``, ``number``, ``class`` and the DSS four (``cqa``,
``svamp``, ``anli1``, ``esnli``) in ``mmi_ray/teacher/prompts/``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..config import LABEL_KINDS
from ..data.custom import fill
from ..errors import ConfigError
from .parse import DEFAULT_MARKER

PROMPT_DIR = Path(__file__).parent / "prompts"


def shipped() -> list[str]:
    return sorted(p.stem for p in PROMPT_DIR.glob("*.txt"))


@dataclass(frozen=True)
class Prompt:
    name: str
    text: str
    """The template after the front matter."""
    kind: str | None
    marker: str
    classes: tuple[str, ...] | None
    source: str

    @property
    def sha(self) -> str:
        return hashlib.sha256(f"{self.marker}\0{self.text}".encode()).hexdigest()[:16]

    def render(self, values: dict, where: str) -> str:
        return fill(self.text, values, where, f"prompt {self.source}")


def load_prompt(name_or_path: str) -> Prompt:
    """A shipped template by name (``cqa``) or a file; errors name the file and key."""
    p = Path(name_or_path).expanduser()
    if not p.is_file():
        if (PROMPT_DIR / f"{name_or_path}.txt").is_file():
            p = PROMPT_DIR / f"{name_or_path}.txt"
        else:
            raise ConfigError("--prompt", f"'{name_or_path}' is neither a file nor a shipped prompt ({', '.join(shipped())})")
    try:
        raw = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(str(p), f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    head: dict = {}
    body = raw
    if raw.startswith("---\n"):
        end = raw.find("\n---\n", 4)
        if end < 0:
            raise ConfigError(str(p), "front matter opened with '---' but not closed")
        try:
            head = yaml.safe_load(raw[4:end]) or {}
        except yaml.YAMLError as e:
            raise ConfigError(str(p), f"front matter: invalid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(head, dict):
            raise ConfigError(str(p), "front matter must be a mapping")
        body = raw[end + 5:]
    unknown = set(head) - {"kind", "marker", "classes"}
    if unknown:
        raise ConfigError(str(p), f"{sorted(unknown)[0]}: unknown key (kind, marker, classes)")
    kind = head.get("kind")
    if kind is not None and kind not in LABEL_KINDS:
        raise ConfigError(str(p), f"kind: must be one of {', '.join(LABEL_KINDS)} (got {kind!r})")
    classes = head.get("classes")
    if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise ConfigError(str(p), "classes: must be a list of strings")
    marker = head.get("marker", DEFAULT_MARKER)
    if not isinstance(marker, str) or not marker.strip():
        raise ConfigError(str(p), "marker: must be a non-empty string")
    if "{" not in body.replace("{{", ""):
        raise ConfigError(str(p), "the template has no {input} (or other {column}) placeholder")
    return Prompt(p.stem, body, kind, marker.strip(), tuple(classes) if classes else None, str(p))
