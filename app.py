"""Hugging Face Spaces entry point of this checkout: the fakenews REST API and web app on 0.0.0.0:7860.

A Space is built with `fakenews space build DIR` (see docker/SPACE_README.md): its app.py is this one with the
bundled model written in. Here `run_space` serves $FAKENEWS_MODEL, else the `serving` alias, else `production`,
from the registry under $FAKENEWS_HOME, on $GRADIO_SERVER_NAME:$GRADIO_SERVER_PORT (default 0.0.0.0:7860).
"""
from fakenews.space import run_space

if __name__ == "__main__":
    run_space()
