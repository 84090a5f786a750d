"""Classify news headlines as fake or real: data, training, evaluation, compression, serving and monitoring, written as notebooks.

Modules:

- `fakenews.acquire`: Gets a corpus's files from HTTP, Kaggle or a local mirror into `$FAKENEWS_HOME/data/raw/<corpus>/`, checked against their pinned sha256 and read once before they are kept, so a corrupt download or a malformed CSV leaves nothing behind.
- `fakenews.data`: A catalog of real fake-news corpora, where each can be fetched from, and readers that turn each raw format into one frame of `title, label` rows, or stop with an error that names the file, line and column.
- `fakenews.prepare`: From raw corpora to `train` / `valid` / `test` files that share no title, with a manifest of hashes and a data card that shows what the model could learn by accident."""

__version__ = "0.1.0"
