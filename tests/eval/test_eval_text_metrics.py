"""pycocoevalcap wrappers: hand-computed BLEU, METEOR via Java, parity with COCOEvalCap, no-Java behaviour."""

import json
import math

import pytest

from medground.eval import text_metrics
from medground.eval.text_metrics import caption_scores, java_available, simple_tokenize

needs_java = pytest.mark.skipif(not java_available(), reason="Java runtime not installed")


def test_simple_tokenizer():
    assert simple_tokenize("The Liver, enlarged (12 mm)!") == "the liver enlarged 12 mm"


def test_bleu_hand_computed_without_java():
    # ref "the liver is enlarged" vs cand "the liver is normal": 3 of 4 unigrams, 2 of 3 bigrams, same length
    result = caption_scores(
        ["the liver is enlarged"], ["the liver is normal"], tokenizer="simple", meteor=False
    )
    assert result.scores["Bleu_1"] == pytest.approx(0.75, abs=1e-6)
    assert result.scores["Bleu_2"] == pytest.approx(math.sqrt(0.75 * 2 / 3), abs=1e-6)
    assert "METEOR" not in result.scores and "METEOR" in result.skipped


def test_corpus_bleu1_with_brevity_penalty():
    # clipped matches 3 + 2 over 4 + 2 candidate words; reference length 4 + 3 = 7 > 6 -> BP = exp(1 - 7/6)
    result = caption_scores(
        ["the liver is enlarged", "a b c"], ["the liver is normal", "a b"], tokenizer="simple", meteor=False
    )
    assert result.scores["Bleu_1"] == pytest.approx(5 / 6 * math.exp(1 - 7 / 6), abs=1e-6)


@needs_java
def test_ptb_bleu_and_meteor():
    # PTB lower-cases and drops the period: "the liver" vs "liver the"
    result = caption_scores(["The Liver."], ["liver the"], tokenizer="ptb")
    assert result.scores["Bleu_1"] == pytest.approx(1.0, abs=1e-6)  # 2 of 2 unigrams, same length
    # METEOR 1.5 (en: gamma .6, beta .2): P = R = 1, 2 chunks over 2 matches -> 1 - 0.6 * (2/2) ** 0.2
    assert result.scores["METEOR"] == pytest.approx(0.4, abs=1e-4)


def test_without_java_nothing_is_invented(monkeypatch):
    monkeypatch.setattr(text_metrics.shutil, "which", lambda name: None)
    result = caption_scores(["a b"], ["a b"], tokenizer="ptb")
    assert result.scores == {} and set(result.skipped) == set(text_metrics.TEXT_METRICS)
    simple = caption_scores(["a b"], ["a b"], tokenizer="simple")
    assert "Bleu_1" in simple.scores and "METEOR" not in simple.scores
    assert "Java" in simple.skipped["METEOR"]


class _NoSpice:
    def compute_score(self, gts, res):
        return 0.0, [0.0] * len(gts)

    def method(self):
        return "SPICE"


@needs_java
def test_bird_text_matches_cocoevalcap_per_modality(tmp_path, monkeypatch):
    """Parity: our RC numbers equal pycocotools + COCOEvalCap run as BiRD's script runs them.

    Both sides use the one METEOR process of conftest.py (its start-up is most of the cost), so this
    runs in the default test run.
    """
    from pycocoevalcap import eval as coco_eval_module
    from pycocotools.coco import COCO

    from medground.eval.bird import bird_text
    from medground.eval.postprocess import bird_regularize
    from medground.eval.rows import PredRow, bird_modality_key

    items = [
        ("ct_1.png", "The liver is enlarged with a lesion.", "The liver is normal.<|im_end|>"),
        (
            "ct_2.png",
            "A small cyst\rin the kidney.",
            "A small cyst in the left kidney.",
        ),  # \r shifts PTB lines
        ("ct_3.png", "Fluid near the liver.", "Sure\nFluid near liver\nthanks"),
        ("mr_4.png", "Brain tumor in the frontal lobe.", "Tumor of the brain."),
        ("oct_5.png", "Fluid under the retina.", "Retinal fluid."),  # outside BiRD's eight: "other"
    ]
    rows = [
        PredRow(
            id=str(i),
            image=img,
            modality=img.split("_")[0],
            bird_modality=bird_modality_key(img.split("_")[0]),
            task="reg",
            question="q",
            annotation=a,
            response=r,
            origin="bird",
            line=i,
        )
        for i, (img, a, r) in enumerate(items, 1)
    ]
    monkeypatch.setattr(coco_eval_module, "Spice", _NoSpice)
    ours = bird_text(rows, "reg")
    for modality in ("ct",):  # one modality keeps the Java start-ups few; mr/oct rows must not leak into ct
        subset = [(i, img, a, r) for i, (img, a, r) in enumerate(items, 1) if img.startswith(modality)]
        anno = {
            "annotations": [{"image_id": i, "id": i, "caption": a} for i, _, a, _ in subset],
            "images": [{"id": i, "image": img} for i, img, _, _ in subset],
        }
        res = [{"image_id": i, "caption": bird_regularize(r)} for i, _, _, r in subset]
        (tmp_path / "anno.json").write_text(json.dumps(anno))
        (tmp_path / "res.json").write_text(json.dumps(res))
        coco = COCO(str(tmp_path / "anno.json"))
        evaluator = coco_eval_module.COCOEvalCap(coco, coco.loadRes(str(tmp_path / "res.json")))
        evaluator.evaluate()
        assert set(ours["per_modality"][modality]) == set(evaluator.eval) - {"SPICE"}
        for metric, value in ours["per_modality"][modality].items():
            assert value == round(evaluator.eval[metric], 6), (modality, metric)
    expected_mean = round((ours["per_modality"]["ct"]["CIDEr"] + ours["per_modality"]["mr"]["CIDEr"]) / 2, 6)
    assert ours["mean"]["CIDEr"] == expected_mean  # the "other" row is not in the mean
    # mr by hand: "tumor of the brain" vs 6 reference words: 3 of 4 unigrams, BP = exp(1 - 6/4)
    assert ours["per_modality"]["mr"]["Bleu_1"] == pytest.approx(0.75 * math.exp(1 - 6 / 4), abs=2e-6)
    # other by hand: "retinal fluid" vs "fluid under the retina": 1 of 2 unigrams, BP = exp(1 - 4/2)
    assert ours["other"]["modalities"] == {"oct": 1}
    assert ours["other"]["scores"]["Bleu_1"] == pytest.approx(0.5 * math.exp(1 - 4 / 2), abs=2e-6)
