"""Gradio demo of the three caption models, plus a plain JSON API, in one FastAPI app.

    python app.py                       # http://127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT)
    uvicorn app:app --port 3000         # the same app under uvicorn
    curl -F image=@photo.jpg -F method=beam -F beam_width=3 http://127.0.0.1:3000/api/caption

Models come from weights/ (or CAPTION_WEIGHTS_DIR), or from the Hugging Face Hub
repository named by CAPTION_WEIGHTS_REPO; they are loaded once, when the app is built.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gradio as gr
from fastapi import FastAPI

from captioning import ImageError
from captioning.bundle import BundleError
from demo import ui
from demo.admission import Busy
from demo.api import add_json_api
from demo.models import (DEFAULT_BEAM_WIDTH, LABELS, MAX_BEAM_WIDTH, VARIANTS, ModelSet, SettingsError,
                         weights_dir_from_env)
from demo.uploads import MAX_UPLOAD_BYTES, BodyLimit, UploadedImage

log = logging.getLogger("demo")

HERE = Path(__file__).resolve().parent
QUEUE_SIZE = 32  # waiting requests beyond this are turned away with "queue full"


class _Outputs:
    """The captioning event's output components, in order: the three captions first."""

    def __init__(self):
        self.captions, self.probs, self.nbest, self.timing = {}, {}, {}, {}
        self.summary = None

    def all(self, nbest: bool = True) -> list:
        return ([self.captions[v] for v in VARIANTS] + [self.summary] + [self.probs[v] for v in VARIANTS]
                + ([self.nbest[v] for v in VARIANTS] if nbest else []) + [self.timing[v] for v in VARIANTS])

    @staticmethod
    def values(result=None, nbest: bool = True) -> list:
        """Values for all(nbest): blanks when ``result`` (a CaptionSet) is None."""
        r = result.results if result else {}
        beam = bool(result) and result.settings.method == "beam"
        return ([r[v].caption if r else "" for v in VARIANTS] + [ui.summary_text(result)]
                + [ui.word_probs_html(r.get(v), LABELS[v]) for v in VARIANTS]
                + ([gr.update(value=ui.candidate_rows(r.get(v)), visible=beam) for v in VARIANTS] if nbest else [])
                + [ui.timing_text(r.get(v)) for v in VARIANTS])


def _user_error(exc: Exception) -> gr.Error:
    if isinstance(exc, Busy):
        return gr.Error(f"{str(exc)[:1].upper()}{str(exc)[1:]}.", title="Busy", print_exception=False)
    if isinstance(exc, ImageError):
        return gr.Error(f"Cannot caption this image: {str(exc).rstrip('.')}.", title="Unusable image",
                        print_exception=False)
    return gr.Error(str(exc), title="Bad setting", print_exception=False)


def build_demo(models: ModelSet) -> gr.Blocks:
    longest = models.max_length
    out = _Outputs()

    def run(image, method, beam_width, max_length) -> list:
        try:
            return out.values(models.caption(image, models.settings(method, beam_width, max_length)))
        except (ImageError, SettingsError, Busy) as exc:
            raise _user_error(exc) from None
        except Exception:
            log.exception("captioning failed")
            raise gr.Error("Something went wrong while captioning this image (the server logged the details). "
                           "Try another photo.", print_exception=False) from None

    def caption(image, method, beam_width, max_length, evt: gr.EventData):
        """Caption the image with the three models; returns the learned, FastText and Word2Vec captions
        first, then details (summary, per-word probabilities, n-best lists, timings)."""
        if image is None:
            trigger = getattr(getattr(evt, "target", None), "_id", None)
            if trigger == photo._id:  # the photo was removed: clear the outputs
                return out.values()
            if trigger is not None:  # a control moved with no photo in place
                return no_photo_yet()
            raise gr.Error("No image: send a photo to caption.", title="No image", print_exception=False)
        return run(image, method, beam_width, max_length)

    def recaption(image, method, beam_width, max_length):
        """After the length slider moved: caption the current photo again, if there is one."""
        return no_photo_yet() if image is None else run(image, method, beam_width, max_length)

    def no_photo_yet() -> list:
        gr.Warning("Add a photo first: upload one, take one with the webcam or pick an example.")
        return out.values()

    def caption_example(image, method, beam_width, max_length):
        # Cached once per example, on first use. An example also sets the controls to the settings it
        # was cached with, so the photo's change event (which fills the n-best tables) agrees with it.
        return out.values(models.caption(image, models.settings(method, beam_width, max_length)), nbest=False)

    def neighbours(word):
        word = (word or "").strip().lower()
        if not word:
            raise gr.Error("Type a word to look up.", print_exception=False)
        found = models.neighbours(word, k=10)
        if all(v is None for v in found.values()):
            gr.Warning(f"'{word}' is in none of the vocabularies (words seen at least a few times in the "
                       "training captions). Try: " + ", ".join(ui.suggestion_words(models, 6)))
        return [gr.update(value=ui.neighbour_rows(found[v]),
                          label=f"nearest to '{word}'" if found[v] is not None else f"'{word}' not in vocabulary")
                for v in VARIANTS]

    with gr.Blocks(title="Image captioning: three word embeddings compared", analytics_enabled=False,
                   delete_cache=(3600, 3600)) as demo:  # uploads older than an hour are deleted hourly
        gr.Markdown("# What do three caption models see?\n"
                    "One image encoder, three LSTM decoders that differ only in their word embeddings "
                    "(learned, FastText, Word2Vec). Drop in a photo, take one with the webcam, or pick an "
                    "example, then compare greedy and beam search.")
        with gr.Tab("Caption"):
            # Outputs are made first (unrendered) so the examples, which need them, can sit under the photo.
            for v in VARIANTS:
                out.captions[v] = gr.Textbox(label=LABELS[v], lines=2, interactive=False, render=False,
                                             elem_id=f"caption-{v}", buttons=["copy"])
                out.timing[v] = gr.Markdown(elem_id=f"timing-{v}", elem_classes="timing", render=False)
                out.probs[v] = gr.HTML(render=False, elem_id=f"probs-{v}")
                out.nbest[v] = gr.Dataframe(headers=ui.CANDIDATE_HEADERS, label=f"{LABELS[v]}: beam search n-best",
                                            datatype=["number", "str", "str"], interactive=False, wrap=True,
                                            visible=False, column_widths=["12%", "63%", "25%"], render=False,
                                            elem_id=f"nbest-{v}")
            out.summary = gr.Markdown(elem_id="summary", elem_classes="timing", render=False)
            with gr.Row(equal_height=False):
                with gr.Column(scale=3, min_width=300):
                    photo = UploadedImage(sources=["upload", "webcam", "clipboard"], image_mode=None, label="Photo",
                                          height=340, elem_id="photo")
                with gr.Column(scale=2, min_width=260):
                    method = gr.Radio([("Greedy", "greedy"), ("Beam search", "beam")], value="greedy",
                                      label="Decoding", elem_id="method")
                    beam_width = gr.Slider(1, MAX_BEAM_WIDTH, value=DEFAULT_BEAM_WIDTH, step=1, label="Beam width",
                                           info="beam search keeps this many partial captions", elem_id="beam-width")
                    max_length = gr.Slider(1, longest, value=longest, step=1, label="Maximum caption length (words)",
                                           elem_id="max-length")
                    with _examples_cache(models):
                        gr.Examples([[path, "beam", DEFAULT_BEAM_WIDTH, longest] for path in ui.example_files()],
                                    inputs=[photo, method, beam_width, max_length], visible_columns=[0],
                                    outputs=out.all(nbest=False), fn=caption_example, cache_examples=True,
                                    cache_mode="lazy", examples_per_page=8,
                                    label="Examples: public-domain photos, shown with beam search",
                                    elem_id="examples")
            length_state = gr.State(longest)
            # Captions side by side (stacked on a phone, still together), then each model's details.
            with gr.Row(equal_height=True, elem_id="captions"):
                for v in VARIANTS:
                    with gr.Column(min_width=260):
                        out.captions[v].render()
                        out.timing[v].render()
            out.summary.render()
            with gr.Row(equal_height=False, elem_id="details"):
                for v in VARIANTS:
                    with gr.Column(min_width=260, elem_id=f"column-{v}"):
                        out.probs[v].render()
                        out.nbest[v].render()
                        with gr.Accordion(f"{LABELS[v]}: test-set scores", open=True):
                            gr.Markdown(ui.metrics_markdown(models.captioners[v].metrics), elem_classes="scores")

        with gr.Tab("Embeddings"):
            start_word = "dog" if "dog" in models.captioners["learned"].vocab else ui.suggestion_words(models, 1)[0]
            gr.Markdown("Type a word to see its nearest neighbours (cosine similarity) in each model's "
                        "embedding. Try: " + ", ".join(ui.suggestion_words(models)))
            with gr.Row():
                word = gr.Textbox(label="Word", value=start_word, scale=4, elem_id="word", submit_btn="Look up")
            tables, plots = [], []
            with gr.Row(equal_height=False):
                for v in VARIANTS:
                    with gr.Column(min_width=280):
                        gr.Markdown(f"### {LABELS[v]}", elem_classes="model-title")
                        tables.append(gr.Dataframe(value=ui.neighbour_rows(models.neighbours(start_word).get(v)),
                                                   headers=ui.NEIGHBOUR_HEADERS, label=f"nearest to '{start_word}'",
                                                   interactive=False, elem_id=f"neighbours-{v}"))
                        plots.append(gr.Plot(ui.projection_figure(models, v), label="2-D PCA projection",
                                             show_label=False, elem_id=f"projection-{v}"))
            word.submit(neighbours, word, tables, api_name="neighbours", concurrency_limit=4)

        with gr.Tab("About"):
            gr.Markdown(ui.about_intro(models))
            with gr.Row(equal_height=False):
                for v in VARIANTS:
                    with gr.Column(min_width=280):
                        gr.Markdown(ui.variant_markdown(v, models.captioners[v].config))
            headers, rows = ui.results_table(models)
            gr.Dataframe(value=rows, headers=headers, label="Test-set scores (higher is better)",
                         interactive=False, elem_id="results")
            gr.Plot(ui.loss_figure(models), label="Loss per epoch", show_label=False, elem_id="loss-curves")

        # The captioning event, public API endpoint /caption: takes (image, method, beam_width). The maximum
        # length comes from the session: the page copies the slider into it first; API callers get the
        # models' limit.
        gr.on([photo.change, method.input, beam_width.release], lambda n: n, inputs=max_length,
              outputs=length_state, queue=False, api_visibility="private", trigger_mode="always_last").then(
            caption, inputs=[photo, method, beam_width, length_state], outputs=out.all(), api_name="caption",
            concurrency_limit=1, concurrency_id="models")
        max_length.release(recaption, inputs=[photo, method, beam_width, max_length], outputs=out.all(),
                           concurrency_limit=1, concurrency_id="models", api_visibility="private")
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)
    return demo


@contextlib.contextmanager
def _examples_cache(models: ModelSet):
    """Cache example outputs in a folder named after the weights, so retrained models never show
    captions cached by the old ones."""
    original = os.environ.get("GRADIO_EXAMPLES_CACHE")
    base = original or ".gradio/cached_examples"
    os.environ["GRADIO_EXAMPLES_CACHE"] = os.path.join(base, ui.weights_fingerprint(models))
    try:
        yield
    finally:
        if original is None:
            del os.environ["GRADIO_EXAMPLES_CACHE"]
        else:
            os.environ["GRADIO_EXAMPLES_CACHE"] = original


def create_app(weights_dir=None, models: ModelSet | None = None) -> FastAPI:
    """The whole app: JSON routes under /api, the Gradio UI at /. Loads the models once, here."""
    models = models or ModelSet.load(weights_dir or weights_dir_from_env(default=HERE / "weights"))
    api = FastAPI(title="Image captioning demo", docs_url="/api/docs", openapi_url="/api/openapi.json")
    api.add_middleware(BodyLimit)
    add_json_api(api, models)
    demo = build_demo(models)
    app = gr.mount_gradio_app(api, demo, path="/", max_file_size=MAX_UPLOAD_BYTES, ssr_mode=False,
                              css=ui.CSS, theme=gr.themes.Soft(), show_error=True, footer_links=["api"])
    # Gradio refuses files that were not uploaded through it only once Blocks.launch() has run
    # (processing_utils._check_allowed returns early before); a mounted app never launches.
    # show_error=True lets that refusal's reason through; our own handlers raise only gr.Error
    # with messages meant for users and log anything unexpected.
    demo.has_launched = True
    return app


def server_host(environ=os.environ) -> str:
    """Where `python app.py` listens: GRADIO_SERVER_NAME if set; else every interface inside a
    Hugging Face Space (SPACE_ID is set there; the Space's proxy must reach the container); else
    loopback only, so a laptop does not expose the demo to its network by accident."""
    if environ.get("GRADIO_SERVER_NAME"):
        return environ["GRADIO_SERVER_NAME"]
    return "0.0.0.0" if environ.get("SPACE_ID") else "127.0.0.1"


@functools.cache
def _default_app() -> FastAPI:
    return create_app()


def __getattr__(name: str):
    """``app`` for `uvicorn app:app`, built (models loaded) on first access, not at import."""
    if name == "app":
        return _default_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host = server_host()
    port = int(os.environ.get("GRADIO_SERVER_PORT", "7860"))
    try:
        application = _default_app()
    except (FileNotFoundError, BundleError) as exc:
        raise SystemExit(f"error: cannot start the demo: {exc}") from None
    log.info("serving on http://%s:%d", host, port)
    uvicorn.run(application, host=host, port=port, log_level="info")


if __name__ == "__main__":
    main()
