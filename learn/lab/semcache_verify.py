"""The second look a semantic cache takes before it serves a stored answer.

A sentence embedding such as MiniLM's is close to a bag of meanings: "flight time from
Paris to New York" and "… from New York to Paris" hold the same words, so they land at
cosine ≈ 1.0; so do "Why does PCA preserve distances?" and "Why doesn't PCA …", and
"vocabulary size 512" against "50,000". An answer to one is wrong for the other. So a
production cache makes a hit two-stage, as GPTCache does with its "similarity evaluation"
step after the vector search: the nearest stored question must pass the cosine threshold
*and* a cheap check of the features an embedding blurs. This module is that check. It
compares the two questions' words exactly and refuses the hit when

- **numbers** differ: each side has a number the other lacks (digits, "1,024", number
  words, "first"; "int4" counts as 4);
- **negation** differs: one side has more negation cues (not, n't, never, no, without,
  avoid…, the cue words of NegEx-style lists), or one word is another with a negating
  prefix (safe / unsafe, like / dislike);
- **roles are swapped**: two shared words trade places (cats eat dog food / dogs eat
  cat food), or move across a directional word such as "to", "than" or "for" (miles to
  kilometres / kilometres to miles); words joined by "and", "or", "vs" may swap freely;
- **one term is replaced** and the rest is the same: a near-identical question with a
  word or two swapped (top-k / top-p sampling, train / bus station) asks about a
  different thing, and a listed opposite (raise / lower, input / output) always does.

It reads words, never meanings, so it also refuses a few true paraphrases ("fix" for
"repair" in an otherwise identical question): a cache gives up those hits to serve no
wrong answers, which is the trade the sweep measures. Pure Python: no model, microseconds
per pair. Words are stemmed with the Snowball (Porter2) English stemmer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from difflib import SequenceMatcher
from functools import cache

import snowballstemmer

_STEM = snowballstemmer.stemmer("english")

# Function words: they carry the grammar, not what is asked about.
STOP = frozenset(  # one string, split: a word list reads better than 100 quoted words
    """a an the is are was were be been being am do does did doing done i me my mine you your
    yours we us our it its they them their he she his her this that these those what which
    who whom whose when where why how can could should would will shall may might must of in
    on at to from for with by about as into onto than over and or vs versus if then so there
    here some any explain tell please give show let s way get gets got go going use using
    just also very really many much per""".split()  # noqa: SIM905
)
NEGATION = frozenset(
    {"not", "no", "never", "none", "nothing", "nobody", "nowhere", "neither", "nor", "without"}
    | {"avoid", "avoiding", "lack", "lacks"}
)
NEGATING_PREFIXES = ("un", "dis", "non", "in", "im", "ir", "il")
# Words that give a sentence a direction: what is before them and after them has a role.
DIRECTIONAL = frozenset(
    {"to", "than", "from", "for", "into", "onto", "over"}
    | {"on", "with", "by", "against", "of", "in", "at"}
)
NUMBER_WORDS = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12",
    "twenty": "20", "thirty": "30", "forty": "40", "fifty": "50", "hundred": "100",
    "thousand": "1000", "first": "1", "second": "2", "third": "3", "last": "last",
    "once": "1", "twice": "2", "half": "0.5", "double": "2x", "triple": "3x",
}  # fmt: skip
# Common English opposites (and a few of this course's: dense/sparse, encoder/decoder).
OPPOSITES = [
    ("above", "below"), ("before", "after"), ("first", "last"), ("more", "less"),
    ("more", "fewer"), ("most", "least"), ("many", "few"), ("increase", "decrease"),
    ("raise", "lower"), ("rise", "fall"), ("high", "low"), ("higher", "lower"),
    ("big", "small"), ("bigger", "smaller"), ("large", "small"), ("larger", "smaller"),
    ("fast", "slow"), ("faster", "slower"), ("long", "short"), ("longer", "shorter"),
    ("old", "new"), ("old", "young"), ("early", "late"), ("earlier", "later"),
    ("sooner", "later"), ("good", "bad"), ("better", "worse"), ("best", "worst"),
    ("true", "false"), ("positive", "negative"), ("input", "output"), ("open", "closed"),
    ("open", "close"), ("on", "off"), ("add", "remove"), ("add", "delete"),
    ("insert", "delete"), ("push", "pull"), ("buy", "sell"), ("send", "receive"),
    ("win", "lose"), ("start", "end"), ("start", "stop"), ("begin", "end"), ("min", "max"),
    ("minimum", "maximum"), ("upper", "lower"), ("up", "down"), ("left", "right"),
    ("top", "bottom"), ("hot", "cold"), ("warm", "cold"), ("heavy", "light"),
    ("wide", "narrow"), ("thick", "thin"), ("cheap", "expensive"), ("easy", "hard"),
    ("easy", "difficult"), ("soft", "hard"), ("safe", "dangerous"), ("love", "hate"),
    ("accept", "reject"), ("allow", "block"), ("allow", "deny"), ("enable", "disable"),
    ("include", "exclude"), ("import", "export"), ("encode", "decode"),
    ("compress", "decompress"), ("learn", "teach"), ("lend", "borrow"), ("give", "take"),
    ("arrive", "leave"), ("enter", "exit"), ("upload", "download"), ("inside", "outside"),
    ("internal", "external"), ("public", "private"), ("always", "never"), ("all", "none"),
    ("same", "different"), ("similar", "different"), ("dense", "sparse"),
    ("exact", "approximate"), ("encoder", "decoder"), ("success", "failure"),
    ("pass", "fail"), ("strong", "weak"), ("rich", "poor"), ("full", "empty"),
]  # fmt: skip
_SPELLING = {"tyre": "tire", "colour": "color", "metre": "meter", "centre": "center"}

_WORD = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?|[a-z]+")


@dataclass(frozen=True)
class Verdict:
    """``same``: the check found nothing that tells the two questions apart. ``reasons``:
    what did (empty when ``same``), each a short sentence a learner can read."""

    same: bool
    reasons: tuple[str, ...] = ()
    only_stored: tuple[str, ...] = ()  # content words (stems) of the stored question alone
    only_asked: tuple[str, ...] = ()  # … and of the asked one: what the check looked past


def words(text: str) -> list[str]:
    """Lower-case words and numbers in order; "n't" and "cannot" become a separate "not",
    "1,024" becomes "1024", "int4" becomes "int", "4"."""
    text = text.lower().replace("’", "'").replace("cannot", "can not").replace("can't", "can not")
    text = re.sub(r"n't\b", " not", text.replace("won't", "will not"))
    text = re.sub(r"'(s|re|ve|ll|d|m)\b", "", text)
    out = []
    for w in _WORD.findall(text):
        w = w.replace(",", "") if w[0].isdigit() else _SPELLING.get(w, w)
        out.append(w)
    return out


@cache
def stem(word: str) -> str:
    """Snowball's English stem, with British -ise spelt -ize first (visualise → visual)."""
    return _STEM.stemWord(re.sub(r"is(e|ed|es|ing)$", r"iz\1", word) if len(word) > 5 else word)


_OPPOSITE: dict[str, set[str]] = {}  # stem -> the stems of its opposites
for _x, _y in OPPOSITES:
    _OPPOSITE.setdefault(stem(_x), set()).add(stem(_y))
    _OPPOSITE.setdefault(stem(_y), set()).add(stem(_x))


def numbers(ws: list[str]) -> set[str]:
    """The numbers a question names, as strings: digits as written, number words mapped."""
    return {
        w if w[0].isdigit() else NUMBER_WORDS[w] for w in ws if w[0].isdigit() or w in NUMBER_WORDS
    }


def content(ws: list[str]) -> list[str]:
    """Stems of the words that say what is asked about: no function words, no negation."""
    return [stem(w) for w in ws if w not in STOP and w not in NEGATION]


def _numbers(a: list[str], b: list[str]) -> str | None:
    """Each side names a number the other does not (one side adding a number is allowed)."""
    na, nb = numbers(a), numbers(b)
    if na - nb and nb - na:
        return f"the numbers differ: {', '.join(sorted(na - nb))} vs {', '.join(sorted(nb - na))}"
    return None


def _negation(a: list[str], b: list[str]) -> str | None:
    """A different count of negation cues, or a word and its negating-prefix form."""
    cues_a, cues_b = [w for w in a if w in NEGATION], [w for w in b if w in NEGATION]
    if len(cues_a) != len(cues_b):
        more = cues_a if len(cues_a) > len(cues_b) else cues_b
        return f"one is negated and the other is not (“{more[0]}”)"
    only_a, only_b = set(a) - set(b), set(b) - set(a)
    for x in only_a:
        for y in only_b:
            short, long_ = (x, y) if len(x) < len(y) else (y, x)
            if len(short) >= 3 and any(long_ == p + short for p in NEGATING_PREFIXES):
                return f"“{long_}” negates “{short}”"
    return None


def _block_swap(a: list[str], b: list[str]) -> tuple[list[str], list[str]] | None:
    """Spans X and Y when ``a`` is P X M Y S and ``b`` is P Y M X S with M not empty: two
    things trade places around what relates them ("cats eat dog food"). With M empty it
    is a mere reordering ("rain in London" / "London rain"), which keeps the meaning."""
    if len(a) != len(b) or a == b:
        return None
    p = 0
    while a[p] == b[p]:
        p += 1
    s = 0
    while a[-1 - s] == b[-1 - s]:
        s += 1
    ra, rb = a[p : len(a) - s], b[p : len(b) - s]
    n = len(ra)
    for lx in range(1, n - 1):
        for ly in range(1, n - lx):
            x, m, y = ra[:lx], ra[lx : n - ly], ra[n - ly :]
            if x != y and y + m + x == rb:
                return x, y
    return None


def _roles(a: list[str], b: list[str]) -> str | None:
    """Shared words that trade places around a relation, or cross a directional word."""
    ca, cb = content(a), content(b)
    shared = set(ca) & set(cb)  # words on one side only take no part in a swap
    swap = _block_swap([w for w in ca if w in shared], [w for w in cb if w in shared])
    if swap:
        return f"“{' '.join(swap[0])}” and “{' '.join(swap[1])}” trade places"
    for pivot in DIRECTIONAL:  # words that cross a directional word one way and back
        if a.count(pivot) != 1 or b.count(pivot) != 1:
            continue
        ia, ib = a.index(pivot), b.index(pivot)
        before_a, after_a = set(content(a[:ia])), set(content(a[ia + 1 :]))
        before_b, after_b = set(content(b[:ib])), set(content(b[ib + 1 :]))
        right, left = (
            (before_a - after_a) & (after_b - before_b),
            (after_a - before_a) & (before_b - after_b),
        )
        if right and left:
            return f"“{min(right)}” and “{min(left)}” swap sides of “{pivot}”"
    return None


def _replaced(a: list[str], b: list[str]) -> str | None:
    """A listed opposite, or a near-copy (half the content words or more in common, in
    order) with a span of one or two new words in place of others."""
    ca, cb = content(a), content(b)
    for x in set(ca) - set(cb):
        for y in set(cb) - set(ca):
            if y in _OPPOSITE.get(x, ()):
                return f"opposites: “{x}” vs “{y}”"
    blocks = SequenceMatcher(None, ca, cb, autojunk=False).get_opcodes()
    equal = sum(i2 - i1 for op, i1, i2, _, _ in blocks if op == "equal")
    if equal < 0.5 * max(len(ca), len(cb)):
        return None  # not a near-copy: the embedding's judgement stands
    for op, i1, i2, j1, j2 in blocks:
        gone, new = set(ca[i1:i2]) - set(cb), set(cb[j1:j2]) - set(ca)
        if op == "replace" and i2 - i1 <= 2 and j2 - j1 <= 2 and gone and new:
            return f"one term replaced: “{' '.join(ca[i1:i2])}” → “{' '.join(cb[j1:j2])}”"
    return None


CHECKS = {"numbers": _numbers, "negation": _negation, "roles": _roles, "term": _replaced}


def verify(stored: str, asked: str) -> Verdict:
    """Whether a stored question's answer may serve the asked one, by exact features.

    Symmetric in its two arguments. Run it only on pairs the embedding already calls
    close (cosine ≥ the threshold): it can only refuse a hit, never make one.
    """
    a, b = words(stored), words(asked)
    reasons = tuple(r for check in CHECKS.values() if (r := check(a, b)) is not None)
    ca, cb = content(a), content(b)
    only_a = tuple(dict.fromkeys(w for w in ca if w not in cb))
    only_b = tuple(dict.fromkeys(w for w in cb if w not in ca))
    return Verdict(not reasons, reasons, only_a, only_b)
