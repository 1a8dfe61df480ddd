"""The mention vocabulary and the hallucination shares on hand-written descriptions with known answers."""

from __future__ import annotations

import pytest

from realness.mentions import (
    CATEGORIES,
    blanket_lists,
    discussed,
    hallucination_report,
    mention_report,
    mentions,
    named_kinds,
    paired_comparison,
)


def test_mentions_are_whole_words_of_one_category_each():
    assert mentions("Yes, the face and the eyes look warped; the shadows fall the wrong way.") == {
        "faces", "eyes", "lighting"}
    assert mentions("The building's reflection in the window is missing.") == {"reflections", "objects"}
    assert mentions("Surface sheen") == {"reflections"} and mentions("") == set()
    assert mentions("interface, handsome, eyeing") == set()  # parts of words are not mentions
    assert named_kinds("The person's fingers and the sign") == {"person", "hand", "text"}
    assert named_kinds("Her eyes") == {"face"} and named_kinds("No, it looks natural.") == set()
    assert len(CATEGORIES) == 12


def test_mention_report_counts_precision_recall_and_macro_f1():
    refs = ["The face is distorted.", "The hands have six fingers.", "No.", "The sky glows oddly."]
    cands = ["The face looks odd.", "The face is smooth.", "The text is garbled.", "Nothing odd."]
    r = mention_report(refs, cands)
    faces, hands, text = (r["categories"][c] for c in ("faces", "hands", "text"))
    assert (faces["precision"], faces["recall"], faces["f1"]) == (0.5, 1.0, pytest.approx(2 / 3))
    assert (hands["precision"], hands["recall"], hands["f1"]) == (None, 0.0, 0.0)  # never named by the candidate
    assert (text["precision"], text["recall"], text["f1"]) == (0.0, None, 0.0)  # never named by the reference
    assert r["categories"]["animals"]["f1"] is None  # neither side: not scored
    # scored: faces 2/3, hands 0, text 0, skin 0 (candidate only), background 0 and lighting 0 (reference only)
    assert r["categories_scored"] == 6 and r["macro_f1"] == pytest.approx((2 / 3) / 6)
    assert mention_report(refs, refs)["macro_f1"] == 1.0
    with pytest.raises(ValueError):
        mention_report(refs, cands[:2])


@pytest.mark.parametrize("text, blanket, left", [
    ("The skin, geometry, and transitions all appear natural.", 1, set()),  # the aspects line read back
    ("The person's face, hands, and body all appear natural and proportionate.", 1, set()),
    ("Overall, the face and the lighting are entirely consistent.", 1, set()),
    ("The woman's skin texture and the background both look realistic; her fingers are fused.", 1, {"hands"}),
    ("The lighting and shadows appear natural.", 0, {"lighting"}),  # one category: a claim, not a list
    ("The building appears natural.", 0, {"objects"}),
    ("The face and hands look slightly warped.", 0, {"faces", "hands"}),  # not an all-clear
    ("The hands have six fingers, and the face appears natural.", 0, {"hands", "faces"}),  # a clause, not a list
    ("The sky and the car are consistent with the lighting.", 0, {"background", "objects", "lighting"}),
])
def test_blanket_lists_name_without_discussing(text, blanket, left):
    assert len(blanket_lists(text)) == blanket
    assert discussed(text) == left and discussed(text) <= mentions(text)


def test_discussed_macro_f1_leaves_the_lists_out():
    refs = ["The face is distorted and the lighting is flat.", "The hands have six fingers."]
    cands = ["The face, the hands and the lighting all appear natural.", "The fingers are fused."]
    plain, kept = mention_report(refs, cands), mention_report(refs, cands, reader=discussed)
    assert plain["categories"]["faces"]["both"] == 1 and kept["categories"]["faces"]["both"] == 0
    assert kept["categories"]["hands"]["f1"] == 1.0 and kept["macro_f1"] < plain["macro_f1"]
    assert kept["blanket_lists"] == {"candidate": 0.5, "reference": 0.0}


def test_hallucination_names_what_neither_detectors_nor_reference_saw():
    refs = ["The face is warped.", "The sign is garbled.", "The hand is fine.", "No."]
    cands = ["The face and hands are warped.", "The sign is garbled.", "Looks natural.", "The face looks plastic."]
    detected = [{"face"}, {"text"}, {"hand", "person"}, set()]
    r = hallucination_report(refs, cands, detected)
    # 1: hands named, not detected, not in the reference; 4: a face named in an image with none: 2 of 4
    assert r["hallucinated"] == 0.5 and r["per_kind"]["hand"]["hallucinated"] == 1
    assert r["per_kind"]["face"]["hallucinated"] == 1
    # 3: a hand detected and named by the reference, left out by the candidate
    assert r["missed"] == 0.25 and r["per_kind"]["hand"]["missed"] == 1
    same = hallucination_report(refs, refs, detected)
    assert same["hallucinated"] == 0.0 and same["missed"] == 0.0


def test_eval_mentions_script_scores_given_descriptions(tmp_path):
    """eval/eval_mentions.py on the sample images with their own descriptions as both sides: perfect match."""
    import json
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "eval"))
    from eval_mentions import main

    samples = root / "realness" / "samples"
    names = sorted(p.name for p in (samples / "images").iterdir())
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "split.json").write_text(json.dumps({"held_out": names, "train": []}))
    report = main(["--run", str(tmp_path / "run"), "--candidate", str(samples / "descriptions.csv"), "--reference",
                   str(samples / "descriptions.csv"), "--images", str(samples / "images"), "--out",
                   str(tmp_path / "out"), "--no_regions"])
    assert report["images"] == 6 and report["mentions"]["macro_f1"] == 1.0 and "hallucination" not in report
    assert "macro-F1" in (tmp_path / "out" / "mentions.md").read_text()


def test_the_paired_comparison_scores_like_mention_report_and_its_interval_can_exclude_zero():
    refs = ["The hand has six fingers.", "Shadows fall the wrong way.", "The sign's letters are garbled.",
            "The dog's fur is smudged.", "The sky is flat."] * 8
    good = list(refs)
    good[0] = "The lighting is odd."  # one miss
    bad = ["The background looks fine."] * len(refs)
    r = paired_comparison(refs, good, bad, n_boot=500)
    assert r["candidate"] == pytest.approx(mention_report(refs, good)["macro_f1"])
    assert r["baseline"] == pytest.approx(mention_report(refs, bad)["macro_f1"])
    assert r["difference"] == pytest.approx(r["candidate"] - r["baseline"])
    assert 0 < r["ci"][0] <= r["difference"] <= r["ci"][1] and r["not_ahead"] == 0.0
    same = paired_comparison(refs, good, good, n_boot=200)
    assert same["difference"] == 0 and same["ci"] == [0.0, 0.0] and same["not_ahead"] == 1.0
    kept = paired_comparison(refs, good, bad, reader=discussed, n_boot=0)
    assert kept["candidate"] == pytest.approx(mention_report(refs, good, reader=discussed)["macro_f1"])
    assert kept["ci"] == [None, None]
    with pytest.raises(ValueError, match="pair up"):
        paired_comparison(refs, good, bad[:3])
