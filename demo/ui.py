"""Formatting for the demo's UI: pure functions from library results to what Gradio shows.

No Gradio import here, so the helpers are cheap to test; app.py lays out the page.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np

from captioning import CaptionResult
from captioning.seed_runs import (SEED_RUNS_FILE, STAGE_LABELS, comparison_label, markdown_table, read_seed_runs,
                                  recipe_label, runs_of, seeds_rows, stored_comparisons, summary_settings,
                                  variants_of)
from captioning.settings import METHODS
from captioning.significance import comparison_table

from captioning.variants import LABELS, SHORT_LABELS, VARIANTS
from captioning.vocab import N_SPECIAL

from .models import CaptionSet, ModelSet, Seen

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
# Shown in the examples gallery, in this order; demo/README.md says where each comes from. First what
# the models do well (people outdoors, a motorcycle), then where guidance helps (a cat, a rocket,
# coffee), then the far side of their knowledge (the Hubble deep field).
EXAMPLES = ("motorcycle.jpg", "cameraman.jpg", "chelsea_cat.jpg", "rocket.jpg", "coffee.jpg", "astronaut.jpg",
            "hubble_deep_field.jpg")
END_TOKEN = "⟨end⟩"
METRIC_NAMES = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
SETTING_LABELS = {"greedy": "greedy", "beam3": "beam 3", "beam5": "beam 5", "consensus3": "beam 3 + consensus"}
METHOD_LABELS = {"greedy": "Greedy", "beam": "Beam search", "consensus": "Beam + consensus", "guided": "Guided beam"}

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
/* The caption grid: models down, methods across; on a phone each model becomes a card. */
.grid {display: grid; grid-template-columns: 7.5em repeat(var(--methods, 3), minmax(0, 1fr)); gap: 6px;
  align-items: stretch;}
.grid .head {font-weight: 600; font-size: 0.85em; opacity: 0.8; padding: 2px 6px;}
.grid .model {font-weight: 600; padding: 8px 6px;}
.grid .cell {border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 8px 10px;
  background: var(--background-fill-secondary);}
.grid .cell .caption {font-size: 1.05em; line-height: 1.35;}
.grid .cell .note {font-size: 0.75em; opacity: 0.75; margin-top: 3px;}
.grid .cell .method {display: none; font-size: 0.72em; opacity: 0.7; text-transform: uppercase;}
.grid-message {padding: 14px; border-radius: 8px; border: 1px solid var(--border-color-primary);}
.grid-message.error {border-color: #d33; color: #b00; background: #fff4f4;}
@media (max-width: 700px) {
  .grid {grid-template-columns: 1fr; gap: 4px;}
  .grid .head {display: none;}
  .grid .model {padding: 10px 2px 0;}
  .grid .cell {padding: 6px 8px;}
  .grid .cell .method {display: block;}
}
.seen .bar {display: flex; align-items: center; gap: 6px; font-size: 0.85em; margin: 2px 0;}
.seen .bar .fill {height: 8px; border-radius: 4px; background: var(--color-accent);}
.seen .unfamiliar {color: #a40; font-weight: 600;}
.seen .concepts span, .grid .concept {display: inline-block; padding: 0 6px; border-radius: 6px;
  background: #dbeafe; color: #1e3a8a; font-size: 0.85em; margin-right: 3px;}
.nbest {width: 100%; font-size: 0.85em; border-collapse: collapse;}
.nbest td, .nbest th {padding: 2px 6px; border-bottom: 1px solid var(--border-color-primary); text-align: left;}
.nbest td.num, .nbest th.num {text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap;}
.neighbours {width: 100%; border-collapse: collapse; font-size: 0.9em; table-layout: fixed;}
.neighbours td, .neighbours th {padding: 3px 4px; border-bottom: 1px solid var(--border-color-primary);}
.neighbours .sim {opacity: 0.7; font-size: 0.85em; font-variant-numeric: tabular-nums;}
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


def nbest_html(result: CaptionResult | None, method: str) -> str:
    """Beam search's n-best list, ranked by (and showing) the score it is ranked by (length-normalised
    log-probability; for consensus, agreement with the nearest training photos' captions), with
    the raw total log-probability beside it."""
    if result is None or not result.candidates:
        return ""
    rows = "".join(f'<tr><td class="num">{rank}</td><td>{html.escape(caption or "(empty)")}</td>'
                   f'<td class="num">{score:.2f}</td><td class="num">{logprob:.2f}</td></tr>'
                   for rank, (caption, logprob, score) in enumerate(result.ranked_candidates(), start=1))
    score = ('<th class="num" title="CIDEr-D against the captions of the training photos most like this one: '
             'the ranking score">consensus</th>' if method == "consensus" else
             '<th class="num" title="log-probability / length^0.7: the ranking score">score</th>')
    return (f'<table class="nbest"><caption>{METHOD_LABELS[method]}: n-best</caption>'
            f'<tr><th class="num">#</th><th>caption</th>{score}<th class="num">log p</th></tr>' + rows + "</table>")


def details_html(by_method: dict[str, CaptionResult] | None, name: str) -> str:
    """One model's details: how sure it was of each word, per method, and the n-best lists."""
    if not by_method:
        return ""
    parts = [word_probs_html(by_method[m], f"{SHORT_LABELS[name]}, {METHOD_LABELS[m].lower()}")
             for m in METHODS if m in by_method]
    parts += [nbest_html(by_method[m], m) for m in METHODS if m in by_method and m != "greedy"]
    return "".join(parts)


def _guided_note(result: CaptionResult) -> str:
    if result.concepts:
        return "guided by " + " ".join(f'<span class="concept">{html.escape(c)}</span>' for c in result.concepts)
    if result.fallback:
        return "guidance (" + ", ".join(map(html.escape, result.rejected_concepts)) + ") read badly: plain beam"
    return "no confident concept: plain beam"


def cannot_caption(reason: Exception | str) -> str:
    """The one sentence every door shows for an unusable image or setting, or busy models."""
    return f"Cannot caption this image: {str(reason).rstrip('.')}."


def caption_grid_html(captions: CaptionSet | None, message: str = "", error: bool = False, footer: str = "") -> str:
    """Every model's captions by every method of the settings in one grid (models down, methods across);
    ``footer``: a line under it (the live tab counts its frames there)."""
    if captions is None:
        text = message or "Add a photo (upload, webcam, paste or an example) to see the captions here."
        return f'<div class="grid-message{" error" if error else ""}" role="status">{html.escape(text)}</div>'
    methods = [m for m in METHODS if m in captions.settings.methods]
    width = captions.settings.beam_width
    heads = {"greedy": "Greedy", "beam": f"Beam (width {width})", "consensus": f"Beam + consensus (width {width})",
             "guided": f"Guided beam (width {width})"}
    cells = ['<div class="head"></div>'] + [f'<div class="head">{heads[m]}</div>' for m in methods]
    for name, by_method in captions.results.items():
        cells.append(f'<div class="model">{html.escape(LABELS[name])}</div>')
        for m in methods:
            result = by_method[m]
            note = f'<div class="note">{_guided_note(result)}</div>' if m == "guided" else ""
            cells.append(f'<div class="cell" data-model="{name}" data-method="{m}"><span class="method">{heads[m]}'
                         f'</span><span class="caption">{html.escape(result.caption or "(empty)")}</span>{note}</div>')
    settings = f"beam width {width}, at most {captions.settings.max_length} words"
    footer = f'<p class="timing">{html.escape(footer)}</p>' if footer else ""
    return (f'<div class="grid" style="--methods: {len(methods)}" data-settings="{settings}">{"".join(cells)}</div>'
            f'{footer}')


def seen_html(seen: Seen | None, captions: CaptionSet | None = None) -> str:
    """What the encoder sees: its top ImageNet labels, the concept words that guided the captions,
    and how familiar the photo is to the training photos."""
    if seen is None:
        return ""
    bars = "".join(f'<div class="bar"><span class="fill" style="width:{max(2, round(80 * p))}px"></span>'
                   f'<span>{html.escape(label)} {p:.0%}</span></div>' for label, p in seen.labels)
    used = sorted({c for by_method in (captions.results.values() if captions else [])
                   for c in by_method.get("guided", CaptionResult("", [], [])).concepts})
    concepts = ('<p class="concepts">Guided the captions: ' + " ".join(f"<span>{html.escape(c)}</span>" for c in used)
                + "</p>") if used else "<p>No concept was confident enough to guide the captions.</p>"
    familiarity = ""
    if seen.familiarity is not None:
        f = seen.familiarity
        cls = "" if f.familiar else ' class="unfamiliar"'
        familiarity = (f"<p{cls}>Familiarity: closer to the training photos than {f.percentile:.0f}% of "
                       f"Flickr8k test photos. {html.escape(f.note)}</p>")
    return (f'<div class="seen"><p><b>What the encoder sees</b> (its ImageNet classifier, same pass as the '
            f"caption features)</p>{bars}{concepts}{familiarity}</div>")


def format_seconds(seconds: float) -> str:
    if seconds < 0.01:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def summary_text(captions: CaptionSet | None) -> str:
    if captions is None:
        return ""
    s = captions.settings
    encoded = ("image features reused from the cache" if captions.features_cached
               else f"image encoded in {format_seconds(captions.encode_seconds)} (once, shared by every model)")
    decoded = sum(r.seconds for by_method in captions.results.values() for r in by_method.values())
    return f"at most {s.max_length} words; {encoded}; all captions decoded in {format_seconds(decoded)}"


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


def _stages(metrics: dict) -> list[tuple[str, dict]]:
    """(stage label, scores by setting) of one model's metrics.json: both training stages when it
    records them (the shipped one marked), else its scores, labelled with the stage they are."""
    if not metrics:
        return []
    shipped = metrics.get("shipped_stage", "cross_entropy")
    stages = metrics.get("stages")
    if not stages:
        return [(STAGE_LABELS.get(shipped, shipped), metrics.get("scores") or {})]
    return [(label + (" (shipped)" if stage == shipped else ""), stages[stage])
            for stage, label in STAGE_LABELS.items() if stages.get(stage)]


def results_table(models: ModelSet) -> tuple[list[str], list[list]]:
    """(headers, rows) of every model's scores under every decoding setting, for the About tab:
    both training stages of each model (cross-entropy, then SCST), the shipped one marked."""
    headers = ["model", "stage", "decoding", *TABLE_METRICS, "words used", "mean length"]
    rows = []
    for name, metrics in models.test_scores().items():
        stages = _stages(metrics) if name in VARIANTS else [("the shipped models", (metrics or {}).get("scores") or {})]
        for stage, by_setting in stages:
            for setting, scores in by_setting.items():
                rows.append([SHORT_LABELS[name], stage, SETTING_LABELS.get(setting, setting),
                             *[_fixed(scores.get(m), 3) for m in TABLE_METRICS],
                             _fixed(scores.get("vocabulary_used"), 0), _fixed(scores.get("mean_length"), 1)])
    return headers, rows


def _fixed(value, digits: int) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "–"


def variant_markdown(name: str, config: dict) -> str:
    """What one model variant is and how it was trained, stage by stage, from its config.json."""
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
        f"- cross-entropy on {data.get('train_captions', '?')} captions of {data.get('train_images', '?')} images: "
        f"{training.get('epochs_run', '?')} epochs (best {training.get('best_epoch', '?')}, "
        f"validation loss {training.get('best_val_loss', '?')})"
        + (f", {_duration(seconds)}" if isinstance(seconds, (int, float)) else ""),
    ]
    fine_tuning = config.get("fine_tuning")
    if fine_tuning:
        dev = fine_tuning.get("dev_cider") or []
        best = fine_tuning.get("best_epoch", 0)
        progress = f", dev CIDEr-D {dev[0]:.3f} → {dev[best]:.3f}" if len(dev) > best else ""
        spent = fine_tuning.get("seconds")
        mixed = fine_tuning.get("cross_entropy_weight")
        lines.append(f"- self-critical fine-tuning (reward CIDEr-D): {max(len(dev) - 1, 0)} epochs (best {best}"
                     f"{progress})" + (f", {_duration(spent)}" if isinstance(spent, (int, float)) else "")
                     + (f"; plus {mixed:g} x the references' cross-entropy" if mixed else ""))
    shipped = config.get("shipped_stage")
    if shipped == "scst":
        lines.append("- ships the fine-tuned (SCST) weights")
    elif fine_tuning:
        lines.append("- ships the cross-entropy weights: no SCST epoch beat them on dev CIDEr-D")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


ABOUT_INTRO = """
### Three models, one difference
Each model is the classic *merge* captioner: a pretrained **CNN** turns the photo into a vector
of numbers (computed once and shared by the three models; which CNN is said below), an **LSTM** reads the caption
so far, and a small dense network merges the two to predict the next word.
The three decoders are identical except for their **word embeddings**:

* **Learned embedding**: word vectors start random and are trained together with the decoder.
* **FastText**: skip-gram vectors trained with gensim FastText on the training captions
  (words are built from character n-grams), then frozen.
* **Word2Vec**: skip-gram vectors trained with gensim Word2Vec on the same captions, then frozen.

**Greedy search** takes the single most likely word at every step. **Beam search** keeps the
*k* best partial captions (*k* = beam width) and returns the best complete ones, ranked by
log-probability normalised by length; the n-best list shows them all. **Beam + consensus** takes
the same *k* captions and keeps the one that agrees best (CIDEr-D) with what people wrote about
the 20 training photos most like this one (consensus re-ranking, Devlin et al. 2015): the model
still writes every word, the neighbours only choose. **Guided beam** is beam
search that must say the things the encoder's own ImageNet classifier is confident about
(constrained beam search, Anderson et al. 2017): "Persian cat" becomes the concept *cat*,
"espresso" *coffee*; a concept the plain beam already says, or one that would make the caption
read badly, is left out. Every method says each content word at most once (so not "a boy rides
a bike on a bike"); words like *a*, *in* and *and* may repeat.

**What the models know.** They learned from 6,000 Flickr photos, mostly people and dogs
outdoors. On such photos they do well; on cats, food, rooms and objects the plain decoders
still describe people and dogs, which is why the page shows what the encoder sees and how
familiar the photo is to the training photos.
"""


TRAINING_STAGES = """

**Training, in two stages.** First *cross-entropy*: the decoder learns to predict each next word
of the reference captions (teacher forcing), stopped early on the dev split's loss. Then
*self-critical sequence training* (SCST, Rennie et al. 2017): the model captions training photos
itself, several samples each, and is pushed towards the samples that score a higher CIDEr-D
against the references than its other samples, while a small share of the references'
cross-entropy keeps its vocabulary. Each model ships the stage that scored higher CIDEr-D on the
dev split; the table below scores both on the test split."""


def about_intro(models: ModelSet) -> str:
    config = models.captioners["learned"].config
    data = config.get("data") or {}
    metrics = models.captioners["learned"].metrics or {}
    trained = (f"All three were trained on the same {data.get('train_images', '?')} {data.get('corpus', '')} "
               f"training images ({data.get('train_captions', '?')} captions)")
    if metrics.get("images"):
        trained += f" and scored on {metrics['images']} {metrics.get('split', 'test')} images"
    staged = any(c.config.get("fine_tuning") for c in models.captioners.values())
    return (ABOUT_INTRO + trained + ", with the image encoder " + str(config.get("encoder", "?")) + "."
            + (TRAINING_STAGES if staged else ""))


# -- across training seeds -------------------------------------------------------------------
def seed_results(models: ModelSet) -> dict | None:
    """The multi-seed results beside the models (weights/seed_runs.json, training.seeds); None
    when there are none (or the file is unreadable)."""
    source = getattr(models, "source", None)
    if source is None:
        return None
    try:
        results = read_seed_runs(source)
    except (ValueError, OSError):
        return None
    return results if results and results["runs"] else None


def seeds_markdown(models: ModelSet) -> str:
    """Mean ± standard deviation over training seeds, and the variants compared across seeds and
    test images; or a line saying there are no multi-seed results."""
    results = seed_results(models)
    if results is None:
        return (f"### Across training seeds\n*No multi-seed results here (`{SEED_RUNS_FILE}`, written by "
                "`python -m training.seeds`): the scores above come from one training run per model, so they "
                "do not show how much a retrain with another seed would change them.*")
    parts = [f"### Across training seeds\nEach model trained with the same recipe ({recipe_label(results)}) and "
             "several seeds (seed 0 read from the bundle shipped when they were recorded), scored on "
             f"{len(results['images'])} "
             f"{results['split']} images: mean ± standard deviation over the seeds.",
             markdown_table(*seeds_rows(results))]
    comparisons = stored_comparisons(results)
    if comparisons:
        sig = results["significance"]
        parts.append(f"Differences between the models (first minus second), with a {sig['confidence']:.0%} "
                     "interval from a bootstrap over both the test images and the seeds: a difference is "
                     "significant when its interval excludes 0.")
        parts += [comparison_table(rows, comparison_label(results, setting), sig["confidence"])
                  for setting, rows in comparisons.items() if rows]
    return "\n\n".join(parts)


def seeds_figure(models: ModelSet):
    """BLEU-4 and CIDEr of every seed of every model (points; seed 0, read from the shipped bundle, a
    star) with the mean ± standard deviation over seeds (error bars), one row per decoding setting; None without
    multi-seed results."""
    results = seed_results(models)
    settings = summary_settings(results) if results else []
    if not settings:
        return None
    fig = _figure(6.4, 2.6 * len(settings) + 0.4)
    axes = np.atleast_2d(fig.subplots(len(settings), 2, squeeze=False))
    colours = {"learned": "tab:blue", "fasttext": "tab:orange", "word2vec": "tab:green"}
    variants = variants_of(results)
    for row, setting in zip(axes, settings):
        for ax, metric in zip(row, ("BLEU-4", "CIDEr")):
            for x, name in enumerate(variants):
                runs = [r for r in runs_of(results, name) if setting in r["scores"]]
                values = np.array([r["scores"][setting][metric] for r in runs], dtype=float)
                if not len(values):
                    continue
                offsets = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else np.zeros(1)
                colour = colours.get(name, "tab:grey")
                for offset, value, run in zip(offsets, values, runs):
                    ax.plot(x + offset, value, marker="*" if run.get("shipped_bundle") else "o",
                            ms=9 if run.get("shipped_bundle") else 5, color=colour, alpha=0.6, linestyle="none")
                sd = values.std(ddof=1) if len(values) > 1 else 0.0
                ax.errorbar(x + 0.3, values.mean(), yerr=sd, fmt="s", color=colour, ms=6, capsize=5, elinewidth=1.5)
            ax.set_xticks(range(len(variants)), [SHORT_LABELS.get(v, v) for v in variants], fontsize=8)
            ax.set_xlim(-0.5, len(variants) - 0.3)
            ax.set_title(f"{metric}, {SETTING_LABELS.get(setting, setting)}", fontsize=10)
            ax.tick_params(axis="y", labelsize=7)
            ax.grid(alpha=0.3, axis="y")
    fig.suptitle("Each seed (dots; star: seed 0, from the shipped bundle) and mean ± sd over seeds (squares, bars)",
                 fontsize=8)
    return fig


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
    ax.set(xlabel="epoch", ylabel="loss (cross-entropy, padding counted)", title="Loss curves")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7, ncols=2, loc="upper right")
    return fig


def projection_figure(models: ModelSet, name: str, word: str = "", neighbours=(), n_words: int = 60):
    """The most frequent caption words of one model placed by a 2-D PCA of its embedding, with
    ``word`` and its ``neighbours`` highlighted; only labels that do not overlap are drawn."""
    words, coords, ratio = models.projection(name, n_words, extra=(word, *neighbours))
    marked = {word, *neighbours} - {""}
    fig = _figure(4.6, 4.2)
    ax = fig.add_subplot()
    colours = ["tab:red" if w == word else "tab:orange" if w in marked else "tab:blue" for w in words]
    ax.scatter(coords[:, 0], coords[:, 1], s=[40 if w in marked else 10 for w in words], c=colours, alpha=0.7)
    span = np.ptp(coords, axis=0) + 1e-9
    placed: list[tuple[np.ndarray, int]] = []
    # Highlighted words first, then by frequency (the order of ``words``); a label that would sit
    # on one already drawn (about a word's width in x, 3% of the plot in y) is left out.
    for index in sorted(range(len(words)), key=lambda i: (words[i] not in marked, i)):
        point = coords[index] / span
        if any(abs(point[1] - q[1]) < 0.03 and abs(point[0] - q[0]) < 0.012 * max(n, len(words[index]))
               for q, n in placed):
            continue
        placed.append((point, len(words[index])))
        ax.annotate(words[index], coords[index], fontsize=8 if words[index] in marked else 7, xytext=(2, 2),
                    textcoords="offset points", color="black" if words[index] in marked else "dimgray",
                    fontweight="bold" if words[index] == word else "normal")
    ax.set_title(f"{LABELS[name]}: the {n_words} most frequent words" + (f" and '{word}'" if word in words else ""),
                 fontsize=10)
    ax.set_xlabel(f"PC 1 ({ratio[0]:.0%} of variance)", fontsize=8)
    ax.set_ylabel(f"PC 2 ({ratio[1]:.0%} of variance)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    return fig


def neighbours_html(found: dict[str, list[tuple[str, float]] | None], word: str) -> str:
    """The three models' nearest words side by side: one row per rank, one column per model."""
    heads = "".join(f"<th>{SHORT_LABELS[v]}</th>" for v in found)
    depth = max((len(n) for n in found.values() if n), default=1)
    rows = []
    for rank in range(depth):
        cells = []
        for neighbours in found.values():
            if neighbours and rank < len(neighbours):
                near, sim = neighbours[rank]
                cells.append(f'<td>{html.escape(near)} <span class="sim">{sim:.2f}</span></td>')
            else:
                cells.append("<td>" + ("not in vocabulary" if not neighbours and rank == 0 else "") + "</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<table class="neighbours" id="neighbour-table"><caption>nearest to <b>{html.escape(word)}</b> '
            f"(cosine similarity)</caption><tr>{heads}</tr>{''.join(rows)}</table>")


def suggestion_words(models: ModelSet, n: int = 12) -> list[str]:
    """Frequent content words to try in the Embeddings tab."""
    skip = {"a", "an", "the", "is", "are", "of", "in", "on", "and", "with", "at", "to", "his", "her", "its",
            "their", "while", "through", "into", "some", "one", "two", "for", "by", "from", "up", "down"}
    vocab = models.captioners["learned"].vocab.words[N_SPECIAL:]
    return [w for w in vocab if w not in skip and len(w) > 2][:n]


def intro_markdown() -> str:
    return ("# What do three caption models see?\n"
            "Three LSTM captioners that differ only in their word embeddings, each decoding greedily, with beam "
            "search, with beam search re-ranked by similar training photos' captions, and guided by the encoder's "
            "ImageNet labels. They learned from 6,000 Flickr photos, mostly "
            "people and dogs outdoors.")
