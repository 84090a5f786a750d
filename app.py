"""Hugging Face Spaces entry point: the fakenews REST API and web app on 0.0.0.0:7860 (see docker/SPACE_README.md).

Thin on purpose: everything lives in the package (`fakenews.serve`, written in nbs/06_serve.ipynb). It serves the
registry reference in $FAKENEWS_MODEL (default: the `serving` alias, else `production`) from the registry under
$FAKENEWS_HOME (default ./artifacts).
"""
import os

from fakenews.core import Config, override
from fakenews.serve import serve

if __name__ == "__main__":
    settings = {"serve.host": "0.0.0.0", "serve.port": 7860}
    if os.environ.get("FAKENEWS_MODEL"): settings["serve.model"] = os.environ["FAKENEWS_MODEL"]
    serve(override(Config(), settings))
