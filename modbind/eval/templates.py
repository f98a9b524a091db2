"""Zero-shot prompt templates: the LAION-CLAP default and its translations for the paper's 12 languages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from modbind.errors import ConfigError

DEFAULT_TEMPLATE = "This is a sound of {}."
"""LAION-CLAP's zero-shot prompt (``f"This is a sound of {t}."``)."""

TRANSLATED_TEMPLATES: dict[str, str] = {
    "en": DEFAULT_TEMPLATE,
    "pt": "Este é um som de {}.",
    "es": "Este es un sonido de {}.",
    "fr": "Ceci est un son de {}.",
    "de": "Das ist ein Geräusch von {}.",
    "zh": "这是{}的声音。",
    "ja": "これは{}の音です。",
    "ru": "Это звук: {}.",
    "tr": "Bu bir {} sesidir.",
    "hi": "यह {} की आवाज़ है।",
    "ar": "هذا صوت {}.",
    "sw": "Hii ni sauti ya {}.",
}
"""Translations of :data:`DEFAULT_TEMPLATE`; ``{}`` takes the class name in the same language."""

IMAGE_TEMPLATES: dict[str, str] = {
    "en": "a photo of {}.",
    "pt": "uma foto de {}.",
    "es": "una foto de {}.",
    "fr": "une photo de {}.",
    "de": "ein Foto von {}.",
    "zh": "{}的照片。",
    "ja": "{}の写真。",
    "ru": "фотография: {}.",
    "tr": "bir {} fotoğrafı.",
    "hi": "{} की एक तस्वीर।",
    "ar": "صورة {}.",
    "sw": "picha ya {}.",
}
"""CLIP-style picture prompts for the anchor-only baseline (zero-shot on the paired images)."""


def templates_for(
    language: str,
    *,
    override: str | Sequence[str] | None = None,
    per_language: Mapping[str, str | Sequence[str]] | None = None,
    from_classes: Mapping[str, str | Sequence[str]] | None = None,
    images: bool = False,
) -> list[str] | None:
    """The prompt templates for ``language``, by priority: one template for every language, a
    per-language option, the class file's prompts, the built-in translation (of the sound prompt, or
    of the picture prompt when ``images``); None when there is none."""
    builtin = IMAGE_TEMPLATES if images else TRANSLATED_TEMPLATES
    for source in (override, (per_language or {}).get(language), (from_classes or {}).get(language),
                   builtin.get(language)):
        if source:
            return [source] if isinstance(source, str) else list(source)
    return None


def check_template(template: str) -> str:
    """A template must hold exactly one ``{}`` for the class name."""
    if template.count("{}") != 1:
        raise ConfigError(f"prompt template {template!r} must contain exactly one '{{}}' where the class name goes")
    return template
