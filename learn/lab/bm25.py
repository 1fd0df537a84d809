"""BM25: the lexical ranking function behind Lucene, Elasticsearch and most keyword search.

From Robertson & Zaragoza, "The Probabilistic Relevance Framework: BM25 and Beyond"
(2009). A document d's score for a query q sums, over the query's terms t:

    idf(t) * tf(t, d) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl))

    idf(t) = log(1 + (N - df(t) + 0.5) / (df(t) + 0.5))

tf is how often t occurs in d, df in how many of the N documents it occurs, |d| the
document's length in tokens and avgdl the mean length. k1 sets how fast repeated terms
saturate, b how much long documents are penalised. This is the variant Lucene uses (its
idf is never negative, and it drops Robertson's constant (k1 + 1) factor, which does not
change the ranking), called "lucene" in Kamphuis et al., "Which BM25 Do You Mean?"
(ECIR 2020) and in the ``bm25s`` package, which the tests check our scores against.

The index is a dict of posting lists: term -> (document ids, precomputed term weights), so
scoring a query adds one short array per query term.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import NamedTuple

import numpy as np

# Words too common to say anything about relevance; short on purpose.
_STOP_WORDS = (
    "a an and are as at be but by can do does for from had has have he her his how i if in "
    "into is it its me my no not of on or our s she so t than that the their them then there "
    "these they this to was we were what when where which who why will with you your"
)
STOP_WORDS = frozenset(_STOP_WORDS.split())
_TOKEN = re.compile(r"[^\W_]+")  # runs of letters and digits, any script


def tokens(text: str) -> list[str]:
    """Lower-case words and numbers of ``text``, stop words removed ("The GPU's 80 GB" ->
    ["gpu", "80", "gb"])."""
    return [t for t in _TOKEN.findall(text.lower()) if t not in STOP_WORDS]


class Ranked(NamedTuple):
    """The best documents for a query, best first: ids (k,) int64, scores (k,) float64."""

    ids: np.ndarray
    scores: np.ndarray


class BM25:
    """A BM25 index over ``corpus`` (one list of tokens per document, ids 0..N-1)."""

    def __init__(self, corpus: list[list[str]], *, k1: float = 1.5, b: float = 0.75) -> None:
        if k1 < 0 or not 0 <= b <= 1:
            raise ValueError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}.")
        self.k1, self.b = k1, b
        self.n_docs = len(corpus)
        lengths = np.array([len(d) for d in corpus], dtype=np.float64)  # (N,) tokens
        self.avgdl = float(lengths.mean()) if self.n_docs and lengths.any() else 1.0
        norm = k1 * (1 - b + b * lengths / self.avgdl)  # (N,) per-document tf damping

        postings: dict[str, tuple[list[int], list[int]]] = {}
        for doc_id, doc in enumerate(corpus):
            for term, tf in Counter(doc).items():
                ids, tfs = postings.setdefault(term, ([], []))
                ids.append(doc_id)
                tfs.append(tf)
        self.idf: dict[str, float] = {}
        self.postings: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for term, (id_list, tf_list) in postings.items():
            ids = np.array(id_list, dtype=np.int64)  # (df,)
            tf = np.array(tf_list, dtype=np.float64)  # (df,)
            df = len(ids)
            self.idf[term] = math.log(1 + (self.n_docs - df + 0.5) / (df + 0.5))
            self.postings[term] = (ids, self.idf[term] * tf / (tf + norm[ids]))

    def scores(self, query_tokens: list[str]) -> np.ndarray:
        """(N,) float64: every document's score; a term repeated in the query counts twice,
        and a term no document contains adds nothing."""
        out = np.zeros(self.n_docs, dtype=np.float64)
        for term in query_tokens:
            if term in self.postings:
                ids, weights = self.postings[term]
                out[ids] += weights  # ids are unique within one posting list
        return out

    def top(self, query_tokens: list[str], k: int, *, positive_only: bool = False) -> Ranked:
        """The ``k`` best documents (fewer if the corpus is smaller), ties broken by lower id.

        ``positive_only`` leaves out documents that share no term with the query (score 0),
        which is what a keyword retriever should hand to a fusion step.
        """
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}.")
        s = self.scores(query_tokens)
        ids = np.argsort(-s, kind="stable")[:k]  # stable: equal scores keep id order
        if positive_only:
            ids = ids[s[ids] > 0]
        return Ranked(ids.astype(np.int64), s[ids])
