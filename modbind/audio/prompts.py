"""Zero-shot prompts for sounds: LAION-CLAP's default and its translations for the paper's 12 languages.

The audio plugins declare these as their ``zeroshot_templates``; evaluation falls back to them when the
user gives no template.
"""

from __future__ import annotations

SOUND_TEMPLATE = "This is a sound of {}."
"""LAION-CLAP's zero-shot prompt (``f"This is a sound of {t}."``)."""

SOUND_TEMPLATES: dict[str, str] = {
    "en": SOUND_TEMPLATE,
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
"""Translations of :data:`SOUND_TEMPLATE`; ``{}`` takes the class name in the same language."""
