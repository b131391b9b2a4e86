"""Gradio demo of the three caption models, plus a plain JSON API, in one FastAPI app.

    python app.py                       # http://127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT)
    uvicorn app:app --port 3000         # the same app under uvicorn
    curl -F image=@photo.jpg -F method=beam -F beam_width=3 http://127.0.0.1:3000/api/caption

Models come from weights/ (or CAPTION_WEIGHTS_DIR), or from the Hugging Face Hub
repository named by CAPTION_WEIGHTS_REPO; they are loaded once, when the app is built.
This file is the page's layout and its wiring; the handlers' work is done by
demo.models (captioning) and demo.ui (formatting), the JSON API lives in demo.api.
"""

from __future__ import annotations

import functools
import html
import io
import logging
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Gradio reads GRADIO_SERVER_PORT when it is imported, and a value that is not a number fails there
# with a traceback: say it in one line first.
if not os.environ.get("GRADIO_SERVER_PORT", "7860").strip().isdigit():
    raise SystemExit(f"error: GRADIO_SERVER_PORT must be a port number, not {os.environ['GRADIO_SERVER_PORT']!r}")

import gradio as gr
from fastapi import FastAPI

from captioning import ImageError
from captioning.bundle import BundleError
from captioning.familiarity import FamiliarityError
from captioning.settings import DEFAULT_BEAM_WIDTH, MAX_BEAM_WIDTH, METHODS, SettingsError
from demo import ui
from demo.admission import Busy
from demo.api import add_json_api
from demo.models import LABELS, MODELS, VARIANTS, ModelSet, WeightsSourceError, weights_dir_from_env
from demo.uploads import MAX_UPLOAD_BYTES, BodyLimit, UploadedImage

log = logging.getLogger("demo")

HERE = Path(__file__).resolve().parent
QUEUE_SIZE = 32  # waiting page events beyond this are turned away with "queue full"
LIVE_EVERY_SECONDS = 0.5  # a webcam frame every half second: ~2 caption grids a second
LIVE_TIME_LIMIT_SECONDS = 120  # one live session, then the visitor presses record again
LIVE_CAMERA = gr.WebcamOptions(mirror=False, constraints={"video": {"width": {"ideal": 640},
                                                                     "height": {"ideal": 480}}})
# On a phone the captions sit below the photo and the controls: bring them into view.
SCROLL_TO_CAPTIONS = ("() => { if (window.innerWidth < 700) document.getElementById('caption-grid')"
                      "?.scrollIntoView({behavior: 'smooth', block: 'start'}); }")
API_DESCRIPTION = ("Caption one photo with the three models and their ensemble. method: 'greedy', 'beam', 'consensus' "
                   "(beam search re-ranked by the captions of similar training photos) or 'guided'; "
                   f"beam_width 1-{MAX_BEAM_WIDTH}. Returns the learned, FastText, Word2Vec and all-three-together "
                   "captions, then the details "
                   "(words, probabilities, n-best, concepts, encoder labels). The same as plain HTTP: "
                   "curl -F image=@photo.jpg -F method=beam -F beam_width=3 <this address>/api/caption")


def build_demo(models: ModelSet) -> gr.Blocks:
    longest = models.max_length

    with gr.Blocks(title="Image captioning: three word embeddings compared", analytics_enabled=False,
                   delete_cache=(3600, 3600)) as demo:  # uploads older than an hour are deleted hourly
        gr.Markdown(ui.intro_markdown())
        with gr.Tabs() as tabs:
            with gr.Tab("Caption", id="caption"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=3, min_width=300):
                        photo = UploadedImage(sources=["upload", "webcam", "clipboard"], image_mode=None, format="png",
                                              label="Photo", height=320, elem_id="photo")
                        gr.Examples(ui.example_files(), inputs=photo, examples_per_page=8, elem_id="examples",
                                    label="Examples: public-domain photos (not from Flickr8k)")
                    with gr.Column(scale=2, min_width=260):
                        beam_width = gr.Slider(1, MAX_BEAM_WIDTH, value=DEFAULT_BEAM_WIDTH, step=1,
                                               label="Beam width", elem_id="beam-width",
                                               info="partial captions kept by beam, consensus and guided beam search")
                        max_length = gr.Slider(1, longest, value=longest, step=1, elem_id="max-length",
                                               label="Maximum caption length (words)")
                        seen = gr.HTML(elem_id="seen")
                grid = gr.HTML(ui.caption_grid_html(None), elem_id="caption-grid")
                summary = gr.Markdown(elem_id="summary", elem_classes="timing")
                with gr.Accordion("Word by word: how sure each model was, and the n-best lists", open=False):
                    with gr.Row(equal_height=False):
                        details = {v: gr.HTML(elem_id=f"details-{v}", min_height=0) for v in MODELS}
                with gr.Accordion("Test-set scores of each model", open=False):
                    with gr.Row(equal_height=False):
                        for v in VARIANTS:
                            gr.Markdown(f"**{LABELS[v]}**\n\n" + ui.metrics_markdown(models.captioners[v].metrics),
                                        elem_classes="scores")

            with gr.Tab("Live", id="live"):
                gr.Markdown("Press record: the captions follow the camera, about two updates a second "
                            "(every method, the three models and their ensemble). *Caption this frame* keeps the "
                            "current frame on the Caption tab with all its details.")
                with gr.Row(equal_height=False):
                    with gr.Column(scale=2, min_width=300):
                        live = UploadedImage(sources=["webcam"], streaming=True, webcam_options=LIVE_CAMERA,
                                             label="Webcam", elem_id="live")
                        keep = gr.Button("Caption this frame", elem_id="keep-frame")
                    with gr.Column(scale=3, min_width=300):
                        live_grid = gr.HTML(ui.caption_grid_html(None, "Start the webcam to caption it live."),
                                            elem_id="live-grid")
                last_frame, frames = gr.State(None), gr.State(0)

            with gr.Tab("Embeddings", id="embeddings"):
                start_word = "dog" if "dog" in models.captioners["learned"].vocab else ui.suggestion_words(models, 1)[0]
                gr.Markdown("Type a word to see its nearest neighbours (cosine similarity) in each model's "
                            "embedding, highlighted on each model's map. Try: " + ", ".join(ui.suggestion_words(models)))
                word = gr.Textbox(label="Word", value=start_word, elem_id="word", submit_btn="Look up")
                found = models.neighbours(start_word)
                neighbours = gr.HTML(ui.neighbours_html(found, start_word), label="nearest words", elem_id="neighbours")
                with gr.Row(equal_height=False):
                    plots = {v: gr.Plot(_projection(models, v, start_word, found), label=f"{LABELS[v]} map",
                                        show_label=False, elem_id=f"projection-{v}", min_width=280) for v in VARIANTS}

            with gr.Tab("About", id="about"):
                gr.Markdown(ui.about_intro(models))
                with gr.Row(equal_height=False):
                    for v in VARIANTS:
                        with gr.Column(min_width=280):
                            gr.Markdown(ui.variant_markdown(v, models.captioners[v].config))
                headers, rows = ui.results_table(models)
                gr.Dataframe(value=rows, headers=headers, label="Test-set scores (higher is better)",
                             interactive=False, elem_id="results")
                gr.Plot(ui.loss_figure(models), label="Loss per epoch", show_label=False, elem_id="loss-curves")
                gr.Markdown(ui.seeds_markdown(models), elem_id="seeds", elem_classes="scores")
                seeds_plot = ui.seeds_figure(models)
                if seeds_plot is not None:
                    gr.Plot(seeds_plot, label="Scores across seeds", show_label=False, elem_id="seed-scores")

        # The public `caption` endpoint for API clients: (image, method, beam_width) -> three captions,
        # then the details. Its components are hidden; the page itself shows every method at once.
        with gr.Column(visible=False):
            api_method = gr.Radio(list(METHODS), value="greedy", label="method")
            api_captions = [gr.Textbox(label=f"{LABELS[v]} caption") for v in MODELS]
            api_details = gr.JSON(label="details")
            api_button = gr.Button()

        # -- handlers: each one small; the work is in demo.models and demo.ui --------------------
        page = [grid, seen, summary, *details.values()]  # every output a photo changes

        def show(captions) -> dict:
            return {grid: ui.caption_grid_html(captions), seen: ui.seen_html(captions.seen, captions),
                    summary: ui.summary_text(captions),
                    **{box: ui.details_html(captions.results[v], v) for v, box in details.items()}}

        def show_message(message: str, error: bool = False) -> dict:
            return {grid: ui.caption_grid_html(None, message, error), seen: "", summary: "",
                    **{box: "" for box in details.values()}}

        def caption_photo(image: bytes | None, width, length) -> dict:
            if image is None:
                return show_message("")
            try:
                return show(models.caption(image, models.page_settings(width, length)))
            except (ImageError, SettingsError, Busy) as exc:
                return show_message(ui.cannot_caption(exc), error=True)
            except Exception:
                log.exception("captioning failed")
                return show_message("Something went wrong while captioning this image (the server logged "
                                    "the details). Try another photo.", error=True)

        def caption_frame(frame: bytes | None, width, length, count: int):
            if frame is None:
                return gr.skip(), gr.skip(), gr.skip()
            try:
                captions = models.caption(frame, models.page_settings(width, length))
            except (ImageError, Busy):
                return gr.skip(), gr.skip(), gr.skip()  # a frame dropped while the models are busy: the next comes soon
            return ui.caption_grid_html(captions, footer=f"live: frame {count + 1}"), frame, count + 1

        def keep_frame(frame: bytes | None):
            if frame is None:
                raise gr.Error("Start the webcam first: there is no frame to keep yet.", print_exception=False)
            from PIL import Image

            return Image.open(io.BytesIO(frame)), gr.Tabs(selected="caption")

        def caption_for_api(image: bytes | None, method, beam_width):
            """Caption the image with the three models and their ensemble; returns the learned, FastText,
            Word2Vec and all-three-together captions, then a JSON object of details."""
            try:
                captions = models.caption(image, models.settings(method, beam_width))
            except (ImageError, SettingsError, Busy) as exc:
                raise gr.Error(ui.cannot_caption(exc), print_exception=False) from None
            return *captions.captions().values(), captions.as_json()

        def look_up(text: str):
            text = (text or "").strip().lower()
            if not text:
                raise gr.Error("Type a word to look up.", print_exception=False)
            near = models.neighbours(text, k=10)
            if all(v is None for v in near.values()):
                gr.Warning(f"'{html.escape(text)}' is in none of the vocabularies (words seen at least a few times in the "
                           "training captions). Try: " + ", ".join(ui.suggestion_words(models, 6)))
            return [ui.neighbours_html(near, text), *(_projection(models, v, text, near) for v in VARIANTS)]

        # -- wiring --------------------------------------------------------------------------------
        # A live stream holds its concurrency slot for the whole session, so it has a group of its own;
        # the models still caption one image at a time (models.admission).
        gr.on([photo.change, beam_width.input, max_length.input], caption_photo,
              inputs=[photo, beam_width, max_length], outputs=page, trigger_mode="always_last",
              concurrency_limit=1, concurrency_id="models", api_visibility="private", show_progress="minimal")
        photo.change(None, js=SCROLL_TO_CAPTIONS, queue=False, api_visibility="private")
        live.stream(caption_frame, inputs=[live, beam_width, max_length, frames], outputs=[live_grid, last_frame, frames],
                    stream_every=LIVE_EVERY_SECONDS, time_limit=LIVE_TIME_LIMIT_SECONDS, concurrency_limit=1,
                    concurrency_id="live", api_visibility="private", show_progress="hidden")
        keep.click(keep_frame, inputs=last_frame, outputs=[photo, tabs], api_visibility="private")
        api_button.click(caption_for_api, inputs=[photo, api_method, beam_width],
                         outputs=[*api_captions, api_details], api_name="caption", api_description=API_DESCRIPTION,
                         concurrency_limit=1, concurrency_id="models")
        word.submit(look_up, word, [neighbours, *plots.values()], api_name="neighbours", concurrency_limit=4)
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)
    return demo


def _projection(models: ModelSet, variant: str, word: str, found: dict):
    return ui.projection_figure(models, variant, word, [w for w, _ in (found.get(variant) or [])])


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
    except (FileNotFoundError, BundleError, FamiliarityError, WeightsSourceError) as exc:
        raise SystemExit(f"error: cannot start the demo: {exc}") from None
    log.info("serving on http://%s:%d", host, port)
    uvicorn.run(application, host=host, port=port, log_level="info")


if __name__ == "__main__":
    main()
