#!/usr/bin/env python3
"""Writes an editing workload as JSONL (one JSON string per line, for `epas-loadtest --prompts
FILE.jsonl`): prompts that carry a passage of the State of the Union text to be reproduced with
small changes, so that a completion mostly copies it. Three kinds, in turn:

  corrections  the passage with a few letters swapped, then "The same text with the spelling
               corrected:" and the passage's first three words;
  replace      the passage, then "The same text with every "W" replaced by "R":" and the first
               three words of the edited passage;
  quote        the passage, then a request for a summary that quotes its first sentences word
               for word, and the opening of the quote.

Each prompt ends inside the text to reproduce, so a completion (POST /v1/completions) goes on
copying. The same seed gives the same file.

usage: editing_prompts.py [--corpus data/sotu-eval.txt] [--count 48] [--words 150] [--seed 0]
"""
import argparse
import json
import random
import re
import sys

KINDS = ("corrections", "replace", "quote")
# Stand-ins for the replaced word: plain words the model copies as one or two tokens.
REPLACEMENTS = ("country", "family", "future", "program", "promise", "freedom", "budget")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")
WORD = re.compile(r"[A-Za-z]+")
# Words too plain to make the replacement kind an edit of the content.
FUNCTION_WORDS = {"about", "after", "again", "because", "being", "could", "every", "other",
                  "should", "their", "there", "these", "those", "where", "which", "while",
                  "would"}


def sentences(corpus_text):
    """Sentences of each speech (one speech per non-blank line), as lists per speech."""
    speeches = [line.strip() for line in corpus_text.splitlines() if line.strip()]
    return [SENTENCE_END.split(s) for s in speeches]


def passage(speeches, words, rng):
    """Whole consecutive sentences of one speech, at least `words` words long."""
    while True:
        speech = rng.choice(speeches)
        start = rng.randrange(len(speech))
        taken = []
        for s in speech[start:]:
            taken.append(s)
            if sum(len(t.split()) for t in taken) >= words:
                return " ".join(taken)


def first_words(text, n=3):
    return " ".join(text.split()[:n])


def swap_letters(word, rng):
    """Two neighbouring inner letters exchanged (the first and last letters stay)."""
    i = rng.randrange(1, len(word) - 2)
    return word[:i] + word[i + 1] + word[i] + word[i + 2:]


def with_typos(text, rng, typos=4):
    """`typos` words of five letters or more, past the first three words, misspelt."""
    tokens = text.split(" ")
    candidates = [
        i for i, t in enumerate(tokens)
        if i >= 3 and t.isalpha() and len(t) >= 5 and len(set(t[1:-1])) > 1
    ]
    for i in rng.sample(candidates, min(typos, len(candidates))):
        misspelt = swap_letters(tokens[i], rng)
        while misspelt == tokens[i]:
            misspelt = swap_letters(tokens[i], rng)
        tokens[i] = misspelt
    return " ".join(tokens)


def corrections(text, rng):
    return (f"{with_typos(text, rng)}\n\nThe same text with the spelling corrected:\n"
            f"{first_words(text)}")


def replace(text, rng):
    counts = {}
    for w in WORD.findall(text):
        if len(w) >= 5 and w.islower() and w not in FUNCTION_WORDS:
            counts[w] = counts.get(w, 0) + 1
    # The most frequent word (ties: the first in the text); a lone word if nothing repeats.
    word = max(counts, key=lambda w: counts[w]) if counts else WORD.findall(text)[-1]
    stand_in = rng.choice([r for r in REPLACEMENTS if r != word])
    edited = re.sub(rf"\b{re.escape(word)}\b", stand_in, text)
    return (f"{text}\n\nThe same text with every \"{word}\" replaced by \"{stand_in}\":\n"
            f"{first_words(edited)}")


def quote(text, _rng):
    return (f"{text}\n\nSummarize the passage above. Begin by quoting its first three sentences "
            f"word for word, then sum up the rest in one sentence.\n\nSummary: The passage "
            f"opens: \"{first_words(text)}")


def prompts(corpus_text, count, words, seed):
    rng = random.Random(seed)
    speeches = [s for s in sentences(corpus_text) if len(" ".join(s).split()) >= words]
    if not speeches:
        raise ValueError(f"no speech of the corpus has {words} words")
    make = {"corrections": corrections, "replace": replace, "quote": quote}
    return [make[KINDS[i % len(KINDS)]](passage(speeches, words, rng), rng)
            for i in range(count)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default="data/sotu-eval.txt")
    ap.add_argument("--count", type=int, default=48, help="prompts to write (kinds in turn)")
    ap.add_argument("--words", type=int, default=150, help="words per passage, at least")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.count < 1 or args.words < 10:
        ap.error("--count must be at least 1 and --words at least 10")
    with open(args.corpus, encoding="utf-8") as f:
        text = f.read()
    try:
        lines = prompts(text, args.count, args.words, args.seed)
    except ValueError as e:
        sys.exit(f"{args.corpus}: {e}")
    for p in lines:
        print(json.dumps(p, ensure_ascii=False))


if __name__ == "__main__":
    main()
