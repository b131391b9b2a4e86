"""The Gradio demo's building blocks: model loading (:mod:`demo.models`) and UI formatting
(:mod:`demo.ui`). The page itself and the HTTP routes are in ``app.py``."""
