"clean_title is the one normaliser: a served model sees typographic variants and publisher furniture as the same title."
import numpy as np

from fakenews.core import ModelConfig, Paths
from fakenews.model import build_classifier, load_tokenizer
from fakenews.predict import Predictor
from fakenews.prepare import clean_title
from fakenews.registry import register

VARIANTS = [  # each group: one headline in several typographic and house styles
    ['Trump says he will "totally destroy" North Korea', "Trump says he will \u201ctotally destroy\u201d North Korea",
     "Trump says he will \u00abtotally destroy\u00bb North Korea", "  Trump\u00a0says he will \u201ctotally\u200b destroy\u201d North Korea ",
     'BREAKING: Trump says he will "totally destroy" North Korea [VIDEO]', 'Trump says he will "totally destroy" North Korea - Breitbart'],
    ["Obama's plan - what it means...", "Obama\u2019s plan \u2014 what it means\u2026", "Obama\u2032s plan \u2013 what it means\u2026 | Daily Kos"],
]


def test_every_variant_cleans_to_one_title():
    for group in VARIANTS:
        assert len({clean_title(t) for t in group}) == 1, [clean_title(t) for t in group]
        assert all(clean_title(clean_title(t)) == clean_title(t) for t in group)


def test_the_predictor_scores_every_variant_alike(tmp_path):
    paths = Paths.from_env(tmp_path / "home")
    version = register(build_classifier(ModelConfig(backbone="tiny")), load_tokenizer("tiny"), {}, paths=paths)
    predictor = Predictor.load(version.ref, paths)
    for group in VARIANTS:
        prob = predictor.predict_proba(group)
        np.testing.assert_allclose(prob, prob[0], atol=1e-6)
    assert predictor.predict(VARIANTS[0][1:2]).title.tolist() == VARIANTS[0][1:2]  # the caller's title is echoed as sent
