"""Formatting for the demo's UI: pure functions from library results to what Gradio shows.

No Gradio import here, so the helpers are cheap to test; app.py lays out the page.
"""

from __future__ import annotations

import hashlib
import html
import math
from pathlib import Path

import numpy as np

from captioning import CaptionResult

from .models import LABELS, VARIANTS, CaptionSet, ModelSet

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
# Shown in the examples gallery, in this order; demo/README.md says where each comes from.
EXAMPLES = ("astronaut.jpg", "chelsea_cat.jpg", "coffee.jpg", "rocket.jpg", "cameraman.jpg", "hubble_deep_field.jpg")
END_TOKEN = "⟨end⟩"
METRIC_NAMES = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
SETTING_LABELS = {"greedy": "greedy", "beam3": "beam 3", "beam5": "beam 5"}
CANDIDATE_HEADERS = ["#", "caption", "log p"]
NEIGHBOUR_HEADERS = ["word", "cosine"]
# Bump when what the captioning event returns changes, so cached example outputs are redone.
OUTPUT_FORMAT = 2

CSS = """
.wordprobs {display: flex; flex-wrap: wrap; gap: 4px; margin: 2px 0 4px;}
.wordprobs .wp {display: inline-flex; flex-direction: column; align-items: center; padding: 2px 6px;
  border-radius: 6px; color: #111; line-height: 1.2; min-width: 2.2em;}
.wordprobs .wp .w {font-size: 0.95em;}
.wordprobs .wp .p {font-size: 0.72em; opacity: 0.8; font-variant-numeric: tabular-nums;}
.wordprobs .wp.end {font-style: italic;}
.wordprobs-title {font-weight: 600; margin: 0 0 2px;}
.wordprobs-legend {font-size: 0.75em; opacity: 0.75; margin: 0;}
.timing {font-size: 0.85em; opacity: 0.85;}
.model-title h3 {margin: 0 !important;}
.scores table {font-size: 0.8em;}
.scores td, .scores th {padding: 2px 6px !important;}
"""


def example_files() -> list[str]:
    return [str(EXAMPLES_DIR / name) for name in EXAMPLES if (EXAMPLES_DIR / name).is_file()]


# -- one caption ----------------------------------------------------------------------
def probability_colour(p: float) -> str:
    """Red (unsure) through yellow to green (confident), light enough for dark text."""
    p = min(max(float(p), 0.0), 1.0)
    return f"hsl({round(120 * p)}, 75%, 80%)"


def word_probs_html(result: CaptionResult | None, title: str = "") -> str:
    """The caption's words as chips coloured by the model's probability for each, plus the
    end token's (a merge model has no attention map: this is how sure it was of each word)."""
    if result is None:
        return ""
    words = list(result.words)
    if len(result.word_probs) > len(words):
        words.append(END_TOKEN)
    chips = []
    for word, p in zip(words, result.word_probs):
        cls = "wp end" if word == END_TOKEN else "wp"
        chips.append(f'<span class="{cls}" style="background:{probability_colour(p)}" '
                     f'title="p({html.escape(word)}) = {p:.3f}"><span class="w">{html.escape(word)}</span>'
                     f'<span class="p">{p:.2f}</span></span>')
    if not chips:
        return ""
    heading = f'<p class="wordprobs-title">{html.escape(title)}: how sure of each word</p>' if title else ""
    return (f'{heading}<div class="wordprobs">{"".join(chips)}</div>'
            '<p class="wordprobs-legend">probability of each word (and of ending there): '
            'red unsure, green confident</p>')


def candidate_rows(result: CaptionResult | None) -> list[list]:
    """Beam search's n-best list as table rows: rank, caption, total log-probability."""
    if result is None:
        return []
    return [[rank, caption or "(empty)", f"{logprob:.2f}"]
            for rank, (caption, logprob) in enumerate(result.candidates, start=1)]


def format_seconds(seconds: float) -> str:
    if seconds < 0.01:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def timing_text(result: CaptionResult | None) -> str:
    if result is None:
        return ""
    return f"decoded in {format_seconds(result.seconds)}"


def summary_text(captions: CaptionSet | None) -> str:
    if captions is None:
        return ""
    s = captions.settings
    how = "greedy search" if s.method == "greedy" else f"beam search, width {s.beam_width}"
    encoded = ("image features reused from the cache" if captions.features_cached
               else f"image encoded in {format_seconds(captions.encode_seconds)} (once, shared by the three models)")
    return f"{how}, at most {s.max_length} words; {encoded}"


# -- scores and training facts ----------------------------------------------------------
def _score(value) -> str:
    if isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)):
        return f"{value:.3f}" if isinstance(value, float) else str(value)
    return "–"


def metrics_markdown(metrics: dict) -> str:
    """A small table of one model's test-set scores, one column per decoding setting."""
    scores = (metrics or {}).get("scores") or {}
    if not scores:
        return "*No test-set scores: metrics.json is missing.*"
    settings = list(scores)
    head = "| test set | " + " | ".join(SETTING_LABELS.get(s, s) for s in settings) + " |"
    rule = "|---|" + "---:|" * len(settings)
    rows = [f"| {m} | " + " | ".join(_score(scores[s].get(m)) for s in settings) + " |"
            for m in METRIC_NAMES if any(m in scores[s] for s in settings)]
    where = f"{metrics.get('images', '?')} {metrics.get('split', 'test')} images"
    return "\n".join([head, rule, *rows]) + f"\n\n<small>{where}, scored {metrics.get('date', '')}</small>"


# The headline metrics first: on a phone only the first columns show without scrolling.
TABLE_METRICS = ("BLEU-4", "METEOR", "CIDEr", "ROUGE-L", "BLEU-1", "BLEU-2", "BLEU-3")
SHORT_LABELS = {"learned": "Learned", "fasttext": "FastText", "word2vec": "Word2Vec"}


def results_table(models: ModelSet) -> tuple[list[str], list[list]]:
    """(headers, rows) of every model's scores under every decoding setting, for the About tab."""
    headers = ["model", "decoding", *TABLE_METRICS, "words used", "mean length"]
    rows = []
    for name, captioner in models.captioners.items():
        for setting, scores in ((captioner.metrics or {}).get("scores") or {}).items():
            rows.append([SHORT_LABELS[name], SETTING_LABELS.get(setting, setting),
                         *[_fixed(scores.get(m), 3) for m in TABLE_METRICS],
                         _fixed(scores.get("vocabulary_used"), 0), _fixed(scores.get("mean_length"), 1)])
    return headers, rows


def _fixed(value, digits: int) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "–"


def variant_markdown(name: str, config: dict) -> str:
    """What one model variant is, from its config.json."""
    emb = config.get("embedding") or {}
    training = config.get("training") or {}
    decoder = config.get("decoder") or {}
    data = config.get("data") or {}
    frozen = "trained with the decoder" if emb.get("trainable") else "frozen during decoder training"
    seconds = training.get("seconds")
    lines = [
        f"**{LABELS.get(name, name)}** (`weights/{name}/`)",
        f"- word vectors: {emb.get('source', '?')}; {emb.get('dim', '?')} dimensions, {frozen}",
        f"- vocabulary: {decoder.get('vocab_size', '?')} words; LSTM of {decoder.get('units', '?')} units",
        f"- trained on {data.get('train_captions', '?')} captions of {data.get('train_images', '?')} images: "
        f"{training.get('epochs_run', '?')} epochs (best {training.get('best_epoch', '?')}, "
        f"validation loss {training.get('best_val_loss', '?')})"
        + (f", {_duration(seconds)}" if isinstance(seconds, (int, float)) else ""),
    ]
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


ABOUT_INTRO = """
### Three models, one difference
Each model is the classic *merge* captioner: a pretrained **EfficientNet-Lite0** turns the photo
into 1280 numbers (computed once and shared by the three models), an **LSTM** reads the caption
so far, and a small dense network merges the two to predict the next word.
The three decoders are identical except for their **word embeddings**:

* **Learned embedding**: word vectors start random and are trained together with the decoder.
* **FastText**: skip-gram vectors trained with gensim FastText on the training captions
  (words are built from character n-grams), then frozen.
* **Word2Vec**: skip-gram vectors trained with gensim Word2Vec on the same captions, then frozen.

**Greedy search** takes the single most likely word at every step. **Beam search** keeps the
*k* best partial captions (*k* = beam width) and returns the best complete ones, ranked by
log-probability normalised by length; the n-best list shows them all.
"""


def about_intro(models: ModelSet) -> str:
    config = models.captioners["learned"].config
    data = config.get("data") or {}
    metrics = models.captioners["learned"].metrics or {}
    trained = (f"All three were trained on the same {data.get('train_images', '?')} {data.get('corpus', '')} "
               f"training images ({data.get('train_captions', '?')} captions)")
    if metrics.get("images"):
        trained += f" and scored on {metrics['images']} {metrics.get('split', 'test')} images"
    return ABOUT_INTRO + trained + ", with the image encoder " + str(config.get("encoder", "?")) + "."


# -- plots --------------------------------------------------------------------------------
def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # no pyplot: thread-safe, no global state

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def loss_figure(models: ModelSet):
    """Training and validation loss per epoch of the three models on one plot."""
    fig = _figure(6.4, 3.6)
    ax = fig.add_subplot()
    colours = {"learned": "tab:blue", "fasttext": "tab:orange", "word2vec": "tab:green"}
    for name, captioner in models.captioners.items():
        history = captioner.bundle.history or {}
        if not history.get("loss"):
            continue
        epochs = np.arange(1, len(history["loss"]) + 1)
        ax.plot(epochs, history["loss"], color=colours[name], marker="o", ms=3, label=f"{LABELS[name]} train")
        if history.get("val_loss"):
            ax.plot(epochs, history["val_loss"], color=colours[name], marker="o", ms=3, linestyle="--",
                    label=f"{LABELS[name]} validation")
    ax.set(xlabel="epoch", ylabel="cross-entropy per word", title="Loss curves")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7, ncols=2, loc="upper right")
    return fig


def projection_figure(models: ModelSet, name: str, n_words: int = 60):
    """The most frequent caption words of one model, placed by a 2-D PCA of its embedding."""
    words, coords, ratio = models.projection(name, n_words)
    fig = _figure(4.6, 4.2)
    ax = fig.add_subplot()
    ax.scatter(coords[:, 0], coords[:, 1], s=8, color="tab:blue", alpha=0.6)
    for word, (x, y) in zip(words, coords):
        ax.annotate(word, (x, y), fontsize=7, xytext=(2, 2), textcoords="offset points")
    ax.set_title(f"{LABELS[name]}: {len(words)} most frequent words", fontsize=10)
    ax.set_xlabel(f"PC 1 ({ratio[0]:.0%} of variance)", fontsize=8)
    ax.set_ylabel(f"PC 2 ({ratio[1]:.0%} of variance)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    return fig


def neighbour_rows(found: list[tuple[str, float]] | None) -> list[list]:
    return [[word, round(sim, 3)] for word, sim in (found or [])]


def suggestion_words(models: ModelSet, n: int = 12) -> list[str]:
    """Frequent content words to try in the Embeddings tab."""
    skip = {"a", "an", "the", "is", "are", "of", "in", "on", "and", "with", "at", "to", "his", "her", "its",
            "their", "while", "through", "into", "some", "one", "two", "for", "by", "from", "up", "down"}
    vocab = models.captioners["learned"].vocab.words[4:]
    return [w for w in vocab if w not in skip and len(w) > 2][:n]


# -- example cache ------------------------------------------------------------------------
def weights_fingerprint(models: ModelSet) -> str:
    """Changes whenever any model (or the shape of the app's outputs) changes, so examples
    cached by one set of weights are never shown for another."""
    digest = hashlib.sha1(f"format {OUTPUT_FORMAT}".encode())
    for name in VARIANTS:
        folder = models.captioners[name].bundle.path
        for file in ("config.json", "decoder.weights.h5"):
            path = folder / file
            if path.is_file():
                digest.update(path.read_bytes())
    return digest.hexdigest()[:12]
