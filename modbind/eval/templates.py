"""Zero-shot prompt templates: which one a language gets, and the anchor's own picture prompts.

The default prompt for a modality comes from its plugin (``EncoderPlugin.zeroshot_templates``, e.g. the
audio plugins' "This is a sound of {}." in 12 languages); the picture prompts below serve the anchor-only
baseline, whose items are the anchor's images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from modbind.errors import ConfigError

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
    builtin: Mapping[str, str],
) -> list[str] | None:
    """The prompt templates for ``language``, by priority: one template for every language, a
    per-language option, the class file's prompts, the ``builtin`` default (the plugin's templates, or
    :data:`IMAGE_TEMPLATES` for the anchor's pictures); None when there is none."""
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
