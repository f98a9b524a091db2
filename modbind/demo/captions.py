"""Captions of the demo world: templates in four languages for one-concept clips and two-concept scenes.

Templates are sentences ("a dog barks while the rain falls"), not class names, so the text side has to
learn words in context. :data:`PROMPTS` is the zero-shot prompt per language; it also appears among the
training templates, as real prompts appear in web captions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from modbind.demo.concepts import Concept

PROMPTS: dict[str, str] = {
    "en": "the sound of {}",
    "pt": "o som de {}",
    "de": "Geräusch: {}",
    "ru": "звук: {}",
}
"""Zero-shot prompt template per language; ``{}`` takes a class label."""

SINGLE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "en": ("{n} {v}", "{n} {v} nearby", "you can hear {n}", "the sound of {l}"),
    "pt": ("{n} {v}", "{n} {v} perto daqui", "ouve-se {n}", "o som de {l}"),
    "de": ("{n} {v}", "{n} {v} in der Nähe", "zu hören: {n}", "Geräusch: {l}"),
    "ru": ("{n} {v}", "{n} {v} рядом", "слышно, как {n} {v}", "звук: {l}"),
}

PAIR_TEMPLATES: dict[str, tuple[str, ...]] = {
    "en": ("{n1} {v1} while {n2} {v2}", "{n1} {v1} and {n2} {v2}", "you can hear {n1} and {n2}",
           "the sound of {l1} and {l2}"),
    "pt": ("{n1} {v1} enquanto {n2} {v2}", "{n1} {v1} e {n2} {v2}", "ouve-se {n1} e {n2}", "o som de {l1} e {l2}"),
    "de": ("{n1} {v1}, während {n2} {v2}", "{n1} {v1} und {n2} {v2}", "zu hören: {n1} und {n2}",
           "Geräusch: {l1} und {l2}"),
    "ru": ("{n1} {v1}, пока {n2} {v2}", "{n1} {v1} и {n2} {v2}", "слышно, как {n1} {v1} и {n2} {v2}",
           "звук: {l1} и {l2}"),
}


def describe(concepts: Sequence[Concept], language: str, rng: np.random.Generator, count: int) -> list[str]:
    """``count`` distinct captions of a one- or two-concept clip in ``language`` (random templates, order)."""
    if language not in PROMPTS:
        raise ValueError(f"the demo world has no captions in language '{language}' (it has {sorted(PROMPTS)})")
    if len(concepts) == 1:
        templates = SINGLE_TEMPLATES[language]
    elif len(concepts) == 2:
        templates = PAIR_TEMPLATES[language]
    else:
        raise ValueError(f"scenes have one or two concepts, got {len(concepts)}")
    chosen = rng.choice(len(templates), size=min(count, len(templates)), replace=False)
    captions = []
    for index in chosen:
        order = rng.permutation(len(concepts))
        fields: dict[str, str] = {}
        for slot, which in enumerate(order, start=1):
            words = concepts[int(which)].words[language]
            suffix = "" if len(concepts) == 1 else str(slot)
            fields.update({f"n{suffix}": words.noun, f"v{suffix}": words.verb, f"l{suffix}": words.label})
        captions.append(templates[int(index)].format(**fields))
    return captions


def all_template_texts(concepts: Sequence[Concept], languages: Sequence[str]) -> list[str]:
    """Every caption and prompt the world can produce (the tokenizer's training text)."""
    texts = []
    for language in languages:
        for concept in concepts:
            fields = {"n": concept.words[language].noun, "v": concept.words[language].verb,
                      "l": concept.words[language].label}
            texts.extend(t.format(**fields) for t in SINGLE_TEMPLATES[language])
            texts.append(PROMPTS[language].format(concept.words[language].label))
        for first in concepts:
            for second in concepts:
                if first is second:
                    continue
                a, b = first.words[language], second.words[language]
                fields = {"n1": a.noun, "v1": a.verb, "l1": a.label, "n2": b.noun, "v2": b.verb, "l2": b.label}
                texts.extend(t.format(**fields) for t in PAIR_TEMPLATES[language])
    return texts
