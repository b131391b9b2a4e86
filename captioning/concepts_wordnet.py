"""A minimal reader of the WordNet 3.0 noun database, as Debian's ``wordnet-base`` installs it.

Used only by :mod:`captioning.concepts_build` to generate the ImageNet-class -> caption-word
mapping once; nothing at run time reads WordNet.  Formats (``man 5 wndb``, ``man 5 lexnames``):

    data.noun:  offset lex_filenum ss_type w_cnt(hex) word lex_id ... p_cnt(3 digits)
                pointer_symbol offset pos source/target ... | gloss
    index.noun: lemma pos synset_cnt p_cnt [ptr_symbol ...] sense_cnt tagsense_cnt offset ...
                (the offsets are the lemma's senses, most frequent first)
    noun.exc:   inflected_form base_form ...      (irregular plurals such as "mice mouse")
    lexnames:   number<TAB>name<TAB>category      (table in the lexnames(5) man page)

NLTK's reader is not used: it wants a ``lexnames`` file that ``wordnet-base`` lacks and tries
to map any non-NLTK WordNet copy onto its own download.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass, field
from pathlib import Path

WORDNET_DIR = Path("/usr/share/wordnet")
LEXNAMES_MAN_PAGE = Path("/usr/share/man/man5/lexnames.5WN.gz")
HYPERNYM_POINTERS = {"@", "@i"}  # hypernym, instance hypernym
HYPONYM_POINTERS = {"~", "~i"}


@dataclass
class Synset:
    offset: int
    lexname: str  # lexicographer file, e.g. "noun.animal"
    lemmas: list[str]  # lowercase, multi-word lemmas joined by "_" as in the database
    hypernyms: list[int] = field(default_factory=list)
    hyponyms: list[int] = field(default_factory=list)


def read_lexnames(man_page: Path = LEXNAMES_MAN_PAGE) -> dict[int, str]:
    """Lexicographer file number -> name, from the table in the lexnames(5) man page."""
    if man_page.suffix == ".gz":
        with gzip.open(man_page, "rt", encoding="utf-8") as f:
            text = f.read()
    else:
        text = man_page.read_text(encoding="utf-8")
    return {int(number): name for number, name in re.findall(r"^(\d\d)\s+((?:noun|verb|adj|adv)\.\w+)", text, re.M)}


def _lemma(word: str) -> str:
    # Adjective markers such as "(a)" follow some lemmas in data.adj; harmless to strip here too.
    return re.sub(r"\(\w+\)$", "", word).lower()


def read_nouns(wordnet_dir: Path = WORDNET_DIR, man_page: Path = LEXNAMES_MAN_PAGE) -> dict[int, Synset]:
    """Every noun synset of ``data.noun``, keyed by its byte offset (the number in a wnid)."""
    lexnames = read_lexnames(man_page)
    synsets: dict[int, Synset] = {}
    with open(wordnet_dir / "data.noun", encoding="utf-8") as f:
        for line in f:
            if line.startswith("  "):  # licence header
                continue
            fields = line.split(" | ", 1)[0].split()
            offset, lex_filenum, word_count = int(fields[0]), int(fields[1]), int(fields[3], 16)
            lemmas = [_lemma(fields[4 + 2 * i]) for i in range(word_count)]
            at = 4 + 2 * word_count
            pointer_count = int(fields[at])
            synset = Synset(offset, lexnames[lex_filenum], lemmas)
            for p in range(pointer_count):
                symbol, target, pos = fields[at + 1 + 4 * p: at + 4 + 4 * p]
                if pos != "n":
                    continue
                if symbol in HYPERNYM_POINTERS:
                    synset.hypernyms.append(int(target))
                elif symbol in HYPONYM_POINTERS:
                    synset.hyponyms.append(int(target))
            synsets[offset] = synset
    return synsets


def read_senses(wordnet_dir: Path = WORDNET_DIR) -> dict[str, list[int]]:
    """Lemma -> offsets of its noun senses, most frequent first, from ``index.noun``."""
    senses: dict[str, list[int]] = {}
    with open(wordnet_dir / "index.noun", encoding="utf-8") as f:
        for line in f:
            if line.startswith("  "):  # licence header
                continue
            fields = line.split()
            synset_count = int(fields[2])
            senses[fields[0].lower()] = [int(o) for o in fields[-synset_count:]]
    return senses


def read_irregular_plurals(wordnet_dir: Path = WORDNET_DIR) -> dict[str, list[str]]:
    """Base noun -> its irregular inflected forms from ``noun.exc`` (``mouse`` -> ``[mice]``)."""
    plurals: dict[str, list[str]] = {}
    for line in (wordnet_dir / "noun.exc").read_text(encoding="utf-8").splitlines():
        inflected, *bases = line.split()
        for base in bases:
            plurals.setdefault(base, []).append(inflected)
    return plurals
