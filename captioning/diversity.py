"""Diversity and novelty of generated captions, after van Miltenburg, Elliott and Vossen (2018),
"Measuring the diversity of automatic image descriptions" (COLING).

Pure functions over cleaned captions (lowercase words separated by single spaces, as
:func:`captioning.text.clean_caption` makes them and the decoders produce them); words are
compared as they are written (no lemmatising: "dog" and "dogs" are two words).

* :func:`types` -- distinct words used over all captions.
* :func:`type_token_ratio` -- corpus-level TTR: distinct n-grams / n-grams, counted over all
  captions together (n-grams do not cross captions).  ``n=1`` is TTR1, ``n=2`` TTR2.  Not the
  mean of per-caption ratios, nor a segmental (MSTTR) variant: it falls as the corpus grows, so
  compare sets of the same number of captions (here 1,000, one per test image).
* :func:`novelty` -- share of captions not found verbatim among the training captions.
* :func:`coverage` -- share of the learnable vocabulary (the words seen at least ``min_count``
  times in the training captions: a model's vocabulary without its special tokens) used at least
  once.
* :func:`local_recall` / :func:`mean_local_recall` -- "Loc5": for each image, the content words
  (:func:`content_words`: every word not in :data:`STOPWORDS`, i.e. nouns, verbs, adjectives and
  content adverbs) that ALL its references use; the share of those the caption says.  Images
  whose references share no content word are left out of the mean (their recall is undefined);
  the count of images used is returned with it.
* :func:`held_out_references` -- the human ceiling: one reference per image as the "caption",
  scored against the remaining references.
* :func:`diversity` -- all of the above in one flat dict.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

# Function words, which Loc5 ignores: articles and determiners, pronouns, prepositions and
# particles, conjunctions, auxiliary and copular verbs, number words, and a few function adverbs.
# Everything else counts as a content word (noun, verb, adjective or content adverb).
STOPWORDS = frozenset("""
a an the this that these those some any each every another other such no
i me my mine we us our you your he him his she her hers it its they them their theirs
one ones someone something somebody anyone anything everyone everything who whom whose which what
in on at of to for with from by about above across after against along among around as before
behind below beneath beside besides between beyond down during except inside into near off onto
out outside over past through throughout toward towards under underneath up upon within without
and or but nor so yet while because if than then though although whether
is are was were be been being am do does did has have had having will would can could may might
shall should must
two three four five six seven eight nine ten twelve several many few more most much lots lot
there here where when how why not very too also just only all both either neither
""".split())


def words(caption: str) -> list[str]:
    return caption.split()


def ngrams(caption: str, n: int) -> list[tuple[str, ...]]:
    w = words(caption)
    return [tuple(w[i:i + n]) for i in range(len(w) - n + 1)]


def types(captions: Iterable[str]) -> int:
    """Number of distinct words over all captions."""
    return len({w for c in captions for w in words(c)})


def type_token_ratio(captions: Iterable[str], n: int = 1) -> float:
    """Distinct n-grams / n-grams over all captions together (corpus-level TTR; see the module)."""
    grams = [g for c in captions for g in ngrams(c, n)]
    if not grams:
        raise ValueError(f"no {n}-grams in the captions")
    return len(set(grams)) / len(grams)


def novelty(captions: Sequence[str], training_captions: Iterable[str]) -> float:
    """Share (0..1) of ``captions`` not found verbatim (after whitespace normalisation) in training."""
    if not captions:
        raise ValueError("no captions")
    seen = {" ".join(words(c)) for c in training_captions}
    return sum(" ".join(words(c)) not in seen for c in captions) / len(captions)


def coverage(captions: Iterable[str], vocabulary: Iterable[str]) -> float:
    """Share (0..1) of the ``vocabulary`` words that some caption uses."""
    vocabulary = set(vocabulary)
    if not vocabulary:
        raise ValueError("empty vocabulary")
    used = {w for c in captions for w in words(c)}
    return len(used & vocabulary) / len(vocabulary)


def content_words(caption: str, stopwords: frozenset[str] = STOPWORDS) -> set[str]:
    return {w for w in words(caption) if w not in stopwords}


def shared_content_words(references: Sequence[str], stopwords: frozenset[str] = STOPWORDS) -> set[str]:
    """The content words that every one of ``references`` uses."""
    if not references:
        return set()
    shared = content_words(references[0], stopwords)
    for reference in references[1:]:
        shared &= content_words(reference, stopwords)
    return shared


def local_recall(caption: str, references: Sequence[str], stopwords: frozenset[str] = STOPWORDS) -> float | None:
    """Share of the content words shared by all ``references`` that ``caption`` uses; None if
    the references share none."""
    shared = shared_content_words(references, stopwords)
    if not shared:
        return None
    return len(shared & set(words(caption))) / len(shared)


def mean_local_recall(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]],
                      stopwords: frozenset[str] = STOPWORDS) -> tuple[float, int]:
    """(mean :func:`local_recall` over the images where it is defined, how many images that is)."""
    recalls = [r for image, caption in predictions.items()
               if (r := local_recall(caption, references[image], stopwords)) is not None]
    if not recalls:
        raise ValueError("no image's references share a content word")
    return sum(recalls) / len(recalls), len(recalls)


def held_out_references(references: Mapping[str, Sequence[str]], index: int = 0
                        ) -> tuple[dict[str, str], dict[str, list[str]]]:
    """(reference ``index`` of each image as its "caption", the other references of each image)."""
    held = {image: refs[index] for image, refs in references.items()}
    rest = {image: [r for i, r in enumerate(refs) if i != index] for image, refs in references.items()}
    return held, rest


def diversity(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]],
              training_captions: Iterable[str], vocabulary: Iterable[str],
              stopwords: frozenset[str] = STOPWORDS) -> dict[str, float | int]:
    """Every measure of the module for captions keyed by image, in one flat dict:
    "types", "ttr1", "ttr2", "novelty", "coverage", "mean_length", "loc" (mean local recall against
    ``references``) and "loc_images" (images it is defined for)."""
    captions = list(predictions.values())
    loc, loc_images = mean_local_recall(predictions, references, stopwords)
    return {
        "types": types(captions),
        "ttr1": type_token_ratio(captions, 1),
        "ttr2": type_token_ratio(captions, 2),
        "novelty": novelty(captions, training_captions),
        "coverage": coverage(captions, vocabulary),
        "mean_length": sum(len(words(c)) for c in captions) / len(captions),
        "loc": loc,
        "loc_images": loc_images,
    }
