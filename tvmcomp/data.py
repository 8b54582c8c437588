"""Real text that ships inside PyPI packages (gensim's test corpora), for calibration and evaluation.

Nothing is downloaded: the files are read from the installed gensim wheel. Calibration uses the
Lee corpus (sentences and phrases of them); evaluation uses the Pang & Lee polarity sentences, so
the two never overlap.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib.resources import files

from .errors import TvmcompError


def _corpus_file(name: str):
    try:
        return files("gensim") / "test" / "test_data" / name
    except ModuleNotFoundError:
        raise TvmcompError("calibration data comes from gensim's bundled corpora: pip install gensim") from None


@lru_cache(maxsize=1)
def lee_sentences() -> tuple[str, ...]:
    """Sentences of the Lee news corpus (50 documents), in file order."""
    text = _corpus_file("lee.cor").read_text(encoding="latin-1")
    sentences = (s.strip() for line in text.splitlines() for s in re.split(r"(?<=[.!?])\s+", line))
    return tuple(s for s in sentences if len(s.split()) >= 4)


PHRASE_EVERY = 4  # every 4th calibration text is a phrase


@lru_cache(maxsize=1)
def lee_calibration_texts() -> tuple[str, ...]:
    """The Lee sentences with every :data:`PHRASE_EVERY`-th replaced by a phrase of its own: 1, 2 or
    3 words (in turn) from its longest word on, punctuation dropped.

    A sentence encoder also embeds short queries, and a text of a word or two drives channels that
    no sentence does: in MiniLM pruned to 0.7, FFN neurons that no calibration sentence fired reach
    1.05 on a one-word input's ``[SEP]`` (:func:`~.quant.balance.balance_factors`). Ranges,
    balancing factors and pruning's least-squares fits taken on sentences alone do not hold there.
    """
    texts = []
    for k, sentence in enumerate(lee_sentences()):
        if k % PHRASE_EVERY != PHRASE_EVERY - 1:
            texts.append(sentence)
            continue
        words = [re.sub(r"[^\w'-]", "", word) for word in sentence.split()]
        start = max(range(len(words)), key=lambda i: len(words[i]))
        texts.append(" ".join(words[start:start + 1 + (k // PHRASE_EVERY) % 3]))
    return tuple(texts)


@lru_cache(maxsize=1)
def pang_lee_polarity() -> tuple[tuple[str, int], ...]:
    """(sentence, label) pairs: 1 for a positive movie-review sentence, 0 for a negative one."""
    pairs = []
    for line in _corpus_file("pang_lee_polarity.cor").read_text(encoding="latin-1").splitlines():
        label, _, sentence = line.partition(" ")
        if label in ("__label__pos", "__label__neg") and sentence.strip():
            pairs.append((sentence.strip(), int(label == "__label__pos")))
    return tuple(pairs)


@lru_cache(maxsize=1)
def wordsim353_pairs() -> tuple[tuple[str, str, float], ...]:
    """(word, word, human similarity score) for the WordSim-353 pairs."""
    pairs = []
    for line in _corpus_file("wordsim353.tsv").read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) == 3:
            pairs.append((fields[0], fields[1], float(fields[2])))
    return tuple(pairs)
