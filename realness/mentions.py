"""What a description talks about, in a fixed vocabulary, and how a describer's mentions compare with a
reference's (GPT-4.1's) and with what detectors found in the image.

The vocabulary: 12 categories, each a set of lower-case words; a description *mentions* a category when
any of its words occurs in it as a whole word (polarity is not read: "the face looks natural" mentions a
face, since a face that is not there is named either way).

    faces       face, facial, mouth, teeth, nose, lips, smile, head, portrait, cheek, chin, ear, ...
    eyes        eye(s), eyebrow(s), pupil(s), iris, gaze
    hands       hand(s), finger(s), thumb, palm, wrist, fist, nail(s), knuckle(s)
    body        body, person, people, man, woman, figure, limb(s), arm(s), leg(s), pose, torso, ...
    text        text, sign(s), letter(s), writing, word(s), label, logo, caption, font, ...
    animals     animal(s), dog, cat, bird, horse, fur, feather(s), paw(s), ...
    lighting    light, lighting, shadow(s), shading, glow, highlight(s), illumination, brightness, ...
    reflections reflection(s), reflective, mirror(s), glare, specular, shiny, glossy, ...
    skin        skin, texture(s), textured, plastic, waxy, airbrushed, pores, hair, smooth, ...
    background  background, backdrop, scenery, sky, horizon, landscape, surroundings, ...
    geometry    perspective, geometry, angle(s), alignment, symmetry, scale, depth, vanishing, ...
    objects     object(s), item(s), building(s), car(s), vehicle(s), furniture, tree(s), window(s), ...

The first four categories with the face's eye words are what the region detectors find (`DETECTABLE`:
face, hand, person, text); DREAM's evidence maps place a claim in the boxes of the kinds it names with the
same words (`realness.dream.evidence.GROUNDING` is built from these sets).

A *blanket list* is a sentence whose subject lists words of two or more categories and whose predicate is an
all-clear, with nothing about any one of them: "The skin, geometry, and transitions all appear natural", "The
person's face, hands, and body appear natural and proportionate". `blanket_lists` finds them: the subject is two
or more items joined by commas, "and" or "or", each at most three words besides determiners with at most one
outside the vocabulary, naming two categories or more; the verb is appear(s) / look(s) / seem(s) / is / are /
remain(s), with at most "all" / "both" (before or after it) and one adverb; then natural, realistic, consistent,
normal, proportionate, plausible, believable, convincing, correct, accurate or coherent, and nothing after it but
more adjectives ("and proportionate"; "consistent with the lighting" says something more and is not blanket).
A description that reads the aspects it was told back as such a list names them without discussing them, and a
word-level count rewards it. `discussed` is what a text mentions outside its blanket lists;
`mention_report(..., reader=discussed)` scores that (the *discussed* macro-F1, reported beside the plain one; the
same rule reads the reference).

Metrics (`mention_report`): per category precision, recall and F1 of the candidate's mentions against the
reference's on the same images (precision undefined when the candidate never mentions it, recall when the
reference never does; F1 is 0 when both are defined and zero), and macro-F1 over the categories either
side mentions at least once. `hallucination_report`: the share of candidate descriptions that name a
detectable kind the detectors did not find in the image and the reference did not mention either, and the
opposite miss: the share whose image has a kind the detectors found and the reference mentions, which the
candidate does not name. `paired_comparison`: two describers on the same images, the difference of their
macro-F1 and its 95 % paired bootstrap interval (images resampled, the same resamples for both), so a gain
on a hundred images can be told from the noise of which hundred.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

MENTIONS: dict[str, tuple[str, ...]] = {
    "faces": ("face", "faces", "facial", "mouth", "teeth", "tooth", "nose", "lips", "lip", "smile", "expression",
              "head", "heads", "portrait", "cheek", "cheeks", "chin", "forehead", "ear", "ears"),
    "eyes": ("eye", "eyes", "eyebrow", "eyebrows", "pupil", "pupils", "iris", "gaze"),
    "hands": ("hand", "hands", "finger", "fingers", "thumb", "thumbs", "palm", "palms", "wrist", "wrists", "fist",
              "nail", "nails", "knuckle", "knuckles"),
    "body": ("body", "bodies", "person", "persons", "people", "man", "men", "woman", "women", "figure", "figures",
             "limb", "limbs", "arm", "arms", "leg", "legs", "foot", "feet", "pose", "posture", "torso", "shoulder",
             "shoulders", "child", "children", "boy", "girl", "human", "humans", "anatomy", "proportions",
             "silhouette", "individual", "subject"),
    "text": ("text", "texts", "sign", "signs", "signage", "letter", "letters", "lettering", "writing", "written",
             "word", "words", "label", "labels", "logo", "logos", "caption", "font", "typography", "inscription",
             "characters", "numbers", "digits"),
    "animals": ("animal", "animals", "dog", "dogs", "cat", "cats", "bird", "birds", "horse", "horses", "cow", "cows",
                "sheep", "deer", "fish", "fur", "feather", "feathers", "paw", "paws", "tail", "tails", "pet", "pets",
                "wildlife", "lion", "tiger", "bear", "elephant", "insect", "insects", "butterfly", "beak", "wing",
                "wings"),
    "lighting": ("light", "lights", "lighting", "lit", "shadow", "shadows", "shading", "shade", "shaded", "glow", "glows",
                 "glowing", "highlight", "highlights", "illumination", "illuminated", "brightness", "bright",
                 "sunlight", "exposure", "overexposed", "underexposed", "backlit", "luminous"),
    "reflections": ("reflection", "reflections", "reflective", "reflect", "reflects", "reflected", "reflecting",
                    "mirror", "mirrors", "mirrored", "glare", "specular", "shiny", "glossy", "sheen"),
    "skin": ("skin", "texture", "textures", "textured", "plastic", "waxy", "airbrushed", "pores", "hair", "smooth",
             "smoothness", "wrinkles", "complexion", "grain", "grainy"),
    "background": ("background", "backgrounds", "backdrop", "scenery", "sky", "skies", "horizon", "landscape",
                   "surroundings", "environment", "setting", "foreground"),
    "geometry": ("perspective", "geometry", "geometric", "angle", "angles", "alignment", "aligned", "misaligned",
                 "symmetry", "symmetrical", "asymmetric", "asymmetrical", "scale", "scaling", "depth", "vanishing",
                 "straight", "parallel"),
    "objects": ("object", "objects", "item", "items", "building", "buildings", "house", "houses", "car", "cars",
                "vehicle", "vehicles", "furniture", "table", "chair", "tree", "trees", "plant", "plants", "flower",
                "flowers", "window", "windows", "door", "doors", "road", "roads", "wall", "walls", "food", "bottle",
                "clothing", "clothes", "shirt", "dress", "boat", "bridge", "fence", "roof", "rock", "rocks"),
}
CATEGORIES = tuple(MENTIONS)
# The categories the region detectors can confirm, by detector label.
DETECTABLE: dict[str, tuple[str, ...]] = {"face": ("faces", "eyes"), "hand": ("hands",), "person": ("body",),
                                          "text": ("text",)}
_WORD = re.compile(r"[a-z]+")
_INDEX = {word: category for category, words in MENTIONS.items() for word in words}
assert len(_INDEX) == sum(map(len, MENTIONS.values())), "a word belongs to one category"


def mentions(text: str) -> set[str]:
    """The categories `text` mentions."""
    return {_INDEX[w] for w in _WORD.findall((text or "").lower()) if w in _INDEX}


_SENTENCE = re.compile(r"[^.;!?\n]+")
_ALL_CLEAR = re.compile(
    r"^(?P<subject>.+?)\s+(?:all\s+|both\s+)?(?:appears?|looks?|seems?|is|are|remains?)\s+(?:all\s+|both\s+)?(?:[a-z]+ly\s+)?"
    r"(?:natural|realistic|consistent|normal|proportionate|plausible|believable|convincing|correct|accurate|coherent)(?:(?:\s*,\s*|\s+and\s+)[a-z-]+)*$")
_ITEMS = re.compile(r"\s*,\s*(?:and\s+|or\s+)?|\s+(?:and|or)\s+")
_DETERMINERS = frozenset("the a an its his her their this that these those overall".split())


def _is_list(subject: str) -> bool:
    """Two items or more ("A, B and C"), each a short noun phrase: at most three words once determiners go,
    at most one of them outside the vocabulary ("the person's face", "transitions"), and two categories named."""
    items = [i for i in _ITEMS.split(subject) if _WORD.sub("", i) != i and i.strip() not in _DETERMINERS]
    if len(items) < 2 or len(mentions(subject)) < 2:
        return False
    for item in items:
        words = [w for w in _WORD.findall(item.replace("'s", "")) if w not in _DETERMINERS]
        if len(words) > 3 or sum(w not in _INDEX for w in words) > 1:
            return False
    return True


def blanket_lists(text: str) -> list[str]:
    """The sentences of `text` that list two or more categories under one all-clear (see the module docstring)."""
    found = []
    for sentence in _SENTENCE.findall((text or "").lower()):
        m = _ALL_CLEAR.match(sentence.strip())
        if m and _is_list(m["subject"]):
            found.append(sentence.strip())
    return found


def discussed(text: str) -> set[str]:
    """The categories `text` mentions outside its blanket lists."""
    blanket = set(blanket_lists(text))
    return set().union(*(mentions(s) for s in _SENTENCE.findall((text or "").lower()) if s.strip() not in blanket))


def named_kinds(text: str) -> set[str]:
    """The detector labels (face, hand, person, text) `text` names."""
    found = mentions(text)
    return {kind for kind, categories in DETECTABLE.items() if found & set(categories)}


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def mention_report(references: Sequence[str], candidates: Sequence[str],
                   reader: Callable[[str], set[str]] = mentions) -> dict:
    """Per-category precision / recall / F1 of the candidates' mentions against the references', paired by
    position, and macro-F1 over the categories either side mentions; `reader` (`mentions` or `discussed`) reads
    both sides."""
    if len(references) != len(candidates):
        raise ValueError(f"{len(references)} references but {len(candidates)} candidates")
    ref = [reader(t) for t in references]
    cand = [reader(t) for t in candidates]
    per: dict[str, dict] = {}
    for c in CATEGORIES:
        tp = sum(c in r and c in k for r, k in zip(ref, cand))
        fp = sum(c not in r and c in k for r, k in zip(ref, cand))
        fn = sum(c in r and c not in k for r, k in zip(ref, cand))
        p, r = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
        f1 = None if p is None and r is None else (2 * p * r / (p + r) if p and r else 0.0)
        per[c] = {"precision": p, "recall": r, "f1": f1, "reference": tp + fn, "candidate": tp + fp, "both": tp}
    scored = [v["f1"] for v in per.values() if v["f1"] is not None]
    return {"n": len(ref), "categories": per, "macro_f1": sum(scored) / len(scored) if scored else None,
            "categories_scored": len(scored),
            "blanket_lists": {"candidate": _share(candidates), "reference": _share(references)}}


def _share(texts: Sequence[str]) -> float | None:
    """The share of `texts` with at least one blanket list."""
    return sum(bool(blanket_lists(t)) for t in texts) / len(texts) if texts else None


def hallucination_report(references: Sequence[str], candidates: Sequence[str],
                         detected: Sequence[set[str] | Sequence[str]]) -> dict:
    """Shares of candidate descriptions that name a detectable kind neither the detectors nor the reference
    saw (`hallucinated`), and that leave out a kind both saw (`missed`); per kind too."""
    if not len(references) == len(candidates) == len(detected):
        raise ValueError("references, candidates and detected labels must pair up")
    n = len(candidates)
    hallucinated, missed = [], []
    per = {k: {"hallucinated": 0, "missed": 0} for k in DETECTABLE}
    for ref_text, cand_text, found in zip(references, candidates, detected):
        ref, cand, found = named_kinds(ref_text), named_kinds(cand_text), set(found)
        made_up = cand - found - ref
        left_out = (found & ref) - cand
        hallucinated.append(bool(made_up))
        missed.append(bool(left_out))
        for k in made_up:
            per[k]["hallucinated"] += 1
        for k in left_out:
            per[k]["missed"] += 1
    return {"n": n, "hallucinated": sum(hallucinated) / n if n else None, "missed": sum(missed) / n if n else None,
            "per_kind": per}


def _macro_f1(ref: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Macro-F1 (`mention_report`'s) of (..., n, categories) bool mention matrices, over the leading axes:
    per category F1 = 2tp / (2tp + fp + fn), averaged over the categories either side mentions."""
    tp, fp, fn = (ref & cand).sum(-2), (~ref & cand).sum(-2), (ref & ~cand).sum(-2)
    scored = (tp + fp + fn) > 0
    f1 = np.where(scored, 2 * tp / np.maximum(1, 2 * tp + fp + fn), 0.0)
    return f1.sum(-1) / np.maximum(1, scored.sum(-1))


def paired_comparison(references: Sequence[str], candidates: Sequence[str], baseline: Sequence[str],
                      reader: Callable[[str], set[str]] = mentions, n_boot: int = 2000, level: float = 0.95,
                      seed: int = 0) -> dict:
    """The candidates' macro-F1 against the references minus the baseline's (all three paired by position),
    with a percentile interval from `n_boot` resamples of the images (each resample scores both describers
    on the same images) and the share of resamples where the candidate is not ahead."""
    if not len(references) == len(candidates) == len(baseline):
        raise ValueError(f"{len(references)} references, {len(candidates)} candidates, {len(baseline)} baseline "
                         "descriptions: they must pair up")

    def as_matrix(texts: Sequence[str]) -> np.ndarray:
        rows = [[c in reader(t) for c in CATEGORIES] for t in texts]
        return np.array(rows, bool).reshape(len(texts), len(CATEGORIES))

    ref, cand, base = as_matrix(references), as_matrix(candidates), as_matrix(baseline)
    ours, theirs = float(_macro_f1(ref, cand)), float(_macro_f1(ref, base))
    out = {"n": len(ref), "candidate": ours, "baseline": theirs, "difference": ours - theirs,
           "ci": [None, None], "level": level, "not_ahead": None}
    if len(ref) and n_boot:
        idx = np.random.default_rng(seed).integers(0, len(ref), (n_boot, len(ref)))
        diff = _macro_f1(ref[idx], cand[idx]) - _macro_f1(ref[idx], base[idx])
        alpha = (1 - level) / 2
        out.update(ci=[float(np.quantile(diff, alpha)), float(np.quantile(diff, 1 - alpha))],
                   not_ahead=float((diff <= 0).mean()))
    return out
