"""The built-in offline task: generated, deterministic from a seed, no files needed.

Three families mirror the DSS label kinds, and in each the label needs a few small computations
that the teacher's rationale spells out (so rationale supervision carries the reasoning):

- ``arith`` (as SVAMP): a three-step word problem; the label is the number (compared numerically).
- ``choice`` (as CQA): three named options, each a sum of two numbers; the label is the name of the
  largest (answer text, not the letter).
- ``nli`` (as ANLI): a premise with two quantities and a hypothesis about their total; the label is
  entailment, contradiction or neutral.

A fourth family, ``props``, is built for the label-only vs DSS ablation. A tiny student trained
from scratch learns none of the three above in a few hundred steps, with or without rationales, so
they cannot show what rationales add. In ``props`` the rationale carries knowledge that the labels
do not: the colour of each two-letter box, known only to the teacher. Validation and test ask
questions whose answers the training labels leave open, each split about its own boxes (see
``PropsWorld``): the test is sealed from validation, and a split asks as many independent
questions as it has boxes (60 by default).

A simulated teacher slips with probability ``teacher_error_rate``: one intermediate value is off,
and its label follows its own wrong working, as a real LLM teacher's does.
"""

from __future__ import annotations

import random

from .examples import Example, SplitData, Splits

NAMES = ["Ann", "Ben", "Cara", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jo", "Kim", "Lea", "Max", "Noa"]
THINGS = ["apples", "pens", "coins", "books", "shells", "cards", "stamps", "marbles", "eggs", "cups"]
COLORS = ["red", "blue", "green", "gold", "gray", "pink", "teal", "plum", "tan", "jade"]


def _slip(rng: random.Random, value: int) -> int:
    return value + rng.choice([-3, -2, -1, 1, 2, 3])


def gen_arith(rng: random.Random, err: bool, hi: int = 20, split: str = "train") -> Example:
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    a, b, c, d = (rng.randint(2, hi) for _ in range(4))
    ops = [rng.choice("+-") for _ in range(3)]
    # keep every intermediate value positive: a subtraction takes at most what is there
    vals, cur = [], a
    words = {"+": ["gets {n} more", "buys {n} more", "finds {n} more"], "-": ["gives {n} away", "loses {n}", "sells {n}"]}
    steps = []
    for op, n in zip(ops, (b, c, d)):
        if op == "-" and n >= cur:
            op = "+"
        steps.append((op, n))
        cur = cur + n if op == "+" else cur - n
        vals.append(cur)
    clauses = ", then ".join(rng.choice(words[op]).format(n=n) for op, n in steps)
    x = f"{name} has {a} {thing}. {name} {clauses}. How many {thing} does {name} have now?"
    gold = vals[-1]
    t_vals = list(vals)
    if err:
        k = rng.randrange(3)
        t_vals[k] = _slip(rng, vals[k])
        for j in range(k + 1, 3):
            op, n = steps[j]
            t_vals[j] = t_vals[j - 1] + n if op == "+" else t_vals[j - 1] - n
    prev = [a] + t_vals[:-1]
    rationale = " ".join(f"{p} {op} {n} = {v}." for p, (op, n), v in zip(prev, steps, t_vals))
    rationale += f" The answer is {t_vals[-1]}."
    return Example(x, str(gold), rationale, str(t_vals[-1]), "equation", "arith")


def gen_choice(rng: random.Random, err: bool, hi: int = 20, split: str = "train") -> Example:
    colors = rng.sample(COLORS, 3)
    while True:
        pairs = [(rng.randint(1, hi), rng.randint(1, hi)) for _ in range(3)]
        sums = [p + q for p, q in pairs]
        if len(set(sums)) == 3:
            break
    thing = rng.choice(THINGS)
    opts = "\n".join(f"({'abc'[i]}) {c}: {p}+{q}" for i, (c, (p, q)) in enumerate(zip(colors, pairs)))
    x = f"Which box holds the most {thing}?\nAnswer Choices:\n{opts}"
    gold = colors[max(range(3), key=lambda i: sums[i])]
    t_sums = list(sums)
    if err:
        k = rng.randrange(3)
        t_sums[k] = _slip(rng, sums[k])
    best = max(range(3), key=lambda i: (t_sums[i], -i))
    work = " ".join(f"{c} has {p}+{q}={s}." for c, (p, q), s in zip(colors, pairs, t_sums))
    rationale = f"{work} {t_sums[best]} is the most, so the answer is {colors[best]}."
    return Example(x, gold, rationale, colors[best], "text", "choice")


def gen_nli(rng: random.Random, err: bool, hi: int = 20, split: str = "train") -> Example:
    name, other = rng.sample(NAMES, 2)
    thing = rng.choice(THINGS)
    a, b = rng.randint(2, hi), rng.randint(2, hi)
    total = a + b
    label = rng.choice(["entailment", "contradiction", "neutral"])
    who = other if label == "neutral" else name
    claim = total if label != "contradiction" else total + rng.choice([-4, -3, -2, -1, 1, 2, 3, 4])
    if label == "neutral" and rng.random() < 0.5:
        claim = total + rng.choice([-2, -1, 1, 2])
    x = f"Premise: {name} had {a} {thing} and got {b} more. Hypothesis: {who} has {claim} {thing}."
    t_total = _slip(rng, total) if err else total
    if who != name:
        t_label = "neutral"
        rationale = f"{name} has {a} + {b} = {t_total} {thing}. The premise says nothing about {who}."
    elif claim == t_total:
        t_label = "entailment"
        rationale = f"{name} has {a} + {b} = {t_total} {thing}. The hypothesis says {claim}, which is right."
    else:
        t_label = "contradiction"
        rationale = f"{name} has {a} + {b} = {t_total} {thing}. The hypothesis says {claim}, not {t_total}."
    rationale += f" So the answer is {t_label}."
    return Example(x, label, rationale, t_label, "text", "nli")


PROP_COLORS = ["red", "gold", "blue", "green"]
PROP_LETTERS = "BCDFGHJKLMNPQRSTVXZ"  # 19 consonants (no box spells a word): 361 two-letter boxes
PROP_QUESTIONS = {"color": ["box {x}: what color?", "box {x}: which color?", "box {x}: its color?"],
                  "size": ["box {x}: is it big?", "box {x}: big or not?", "box {x}: a big one?"]}


class PropsWorld:
    """The simulated teacher's hidden knowledge for ``props``: two-letter boxes, each with a colour
    and a size drawn independently (balanced: every colour has as many big boxes as small ones).

    The boxes fall in three disjoint groups: ``taught`` (their colour is asked in training),
    ``valid`` and ``test`` (``held`` boxes each: in training only "is it big?" is asked about them,
    and validation / test ask their colour, each split its own boxes). So no test question is ever
    asked in validation, and neither in training. Each split asks each of its boxes in turn, so a
    split of ``held`` rows asks ``held`` independent questions. The world depends on the data seed."""

    def __init__(self, seed: int, held: int = 60, taught: int | None = None):
        taught = held if taught is None else taught
        keys = [a + b for a in PROP_LETTERS for b in PROP_LETTERS]
        if 2 * held + taught > len(keys):
            raise ValueError(f"props: {2 * held + taught} boxes asked for, {len(keys)} exist")
        rng = random.Random(f"props-world-{seed}")
        rng.shuffle(keys)
        self.boxes = {"train": keys[:taught], "valid": keys[taught:taught + held],
                      "test": keys[taught + held:taught + 2 * held]}
        self.all = keys[:taught + 2 * held]
        traits = [(c, s) for c in PROP_COLORS for s in ("big", "small")]
        self.color, self.size = {}, {}
        for i, k in enumerate(self.all):
            if i % len(traits) == 0:
                rng.shuffle(traits)
            self.color[k], self.size[k] = traits[i % len(traits)]
        self.asked = {"valid": 0, "test": 0}

    def __call__(self, rng: random.Random, err: bool, hi: int = 20, split: str = "train") -> Example:
        """What colour is a box (or: is it big)? Only the teacher knows the boxes; its rationale
        describes the box ("It is blue and small, so no."). Size says nothing about colour, so from
        the labels alone a held box's colour cannot be known (chance is 1 in 4): only the rationales
        carry it."""
        if split == "train":
            x = rng.choice(self.all)
            ask = "color" if x in self.boxes["train"] and rng.random() < 0.5 else "size"
        else:
            boxes = self.boxes[split]
            x, ask = boxes[self.asked[split] % len(boxes)], "color"
            self.asked[split] += 1
        q = rng.choice(PROP_QUESTIONS[ask]).format(x=x)
        c, sz = self.color[x], self.size[x]
        gold = c if ask == "color" else ("yes" if sz == "big" else "no")
        if err and ask == "color":
            c = rng.choice([k for k in PROP_COLORS if k != c])
        elif err:
            sz = "small" if sz == "big" else "big"
        t_label = c if ask == "color" else ("yes" if sz == "big" else "no")
        return Example(q, gold, f"{c}, {sz}", t_label, "text", "props")


# Every generator takes (rng, teacher slips, largest operand, split); only ``props`` draws differently
# per split (from a world made per data seed). Its training inputs repeat (each box is asked about
# many times) and its splits are disjoint by construction, so it is exempt from the distinct-input rule.
GENERATORS = {"arith": gen_arith, "choice": gen_choice, "nli": gen_nli}
WORLDS = {"props": PropsWorld}
"""Families drawn from a world made per data seed (a ``PropsWorld`` is called like a generator)."""
TASKS = (*GENERATORS, *WORLDS)
REPEATING = {"props"}


def generate(n: int, seed: int, tasks: list[str], error_rate: float, exclude: set[str] | None = None,
             max_operand: int = 20, split: str = "train", world: PropsWorld | None = None) -> list[Example]:
    """``n`` examples, the families in turn, none whose input is in ``exclude``."""
    rng = random.Random(seed)
    gens = {**GENERATORS, "props": world or WORLDS["props"](0)}
    out: list[Example] = []
    seen = set(exclude or ())
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 50 * n + 1000:
            raise RuntimeError(f"could not generate {n} distinct examples for tasks {tasks}")
        task = tasks[len(out) % len(tasks)]
        err = rng.random() < error_rate
        ex = gens[task](rng, err, max_operand, split)
        if ex.input in seen and task not in REPEATING:
            continue
        seen.add(ex.input)
        out.append(ex)
    return out


def builtin_splits(num_train: int, num_valid: int, num_test: int, seed: int, tasks: list[str],
                   teacher_error_rate: float, max_operand: int = 20, props_boxes: int = 60,
                   props_taught: int | None = None) -> Splits:
    """Train, validation and test with disjoint inputs (``props``: disjoint questions, each split its
    own boxes); only training rationales carry slips."""
    world = PropsWorld(seed, props_boxes, props_taught) if "props" in tasks else None
    train = generate(num_train, seed * 3 + 0, tasks, teacher_error_rate, max_operand=max_operand, world=world)
    seen = {e.input for e in train}
    valid = generate(num_valid, seed * 3 + 1, tasks, 0.0, exclude=seen, max_operand=max_operand, split="valid",
                     world=world)
    seen |= {e.input for e in valid}
    test = generate(num_test, seed * 3 + 2, tasks, 0.0, exclude=seen, max_operand=max_operand, split="test",
                    world=world)
    return Splits(SplitData("train", train, 0, "builtin"), SplitData("valid", valid, 0, "builtin"),
                  SplitData("test", test, 0, "builtin"))


def words_of(text: str) -> list[str]:
    """The ``words`` tokenizer's pieces of ``text``: runs of word characters, runs of punctuation."""
    import re

    return re.findall(r"\w+|[^\w\s]+", text)


def vocabulary() -> list[str]:
    """Every word the generators can write (the ``words`` tokenizer's vocabulary), sorted: the task
    prefixes, numbers 0-999, ``props`` boxes, and the words and marks of generated text."""

    words = {"predict", "explain", ":", *map(str, range(1000)), *(a + b for a in PROP_LETTERS for b in PROP_LETTERS)}
    world = PropsWorld(0)
    for split in ("train", "valid", "test"):
        for ex in generate(400, 0, ["arith", "choice", "nli", "props"], 0.5, split=split, max_operand=99, world=world):
            for text in (ex.input, ex.label, ex.rationale):
                words.update(words_of(text))
    return sorted(words)
