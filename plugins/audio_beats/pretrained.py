"""The official BEATs checkpoints by name (iter3 and iter3+, pre-trained and AudioSet fine-tuned).

Provenance, checked on the official README (``microsoft/unilm`` ``beats/README.md`` at commit
``768a3c873f598bb9b4d4dfb9267b099e35f8fe56``):

* links: since April 2024 the README links each file as a OneDrive share (``1drv.ms``); the earlier Azure
  blob links answer 403 (unilm issue #1492). The direct link tried first is that share in the ``u!``
  base64url form of OneDrive's shares API (``/root/content``); whether OneDrive still serves it without a
  sign-in could not be checked from here, so the share page is always given as the manual fallback;
* licence: MIT (``LICENSE`` at the root of ``microsoft/unilm``, which the BEATs README points to);
* size and sha256: Microsoft publishes neither. For ``BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt``
  three independent re-uploads on Hugging Face (``SaraAlthubaiti/TinyOctopus``,
  ``THUdyh/Ola_speech_encoders``, ``Jayson236/BEATs``) state the same LFS sha256 and size, recorded
  below; for the other files no public source states either, so they are left unset;
* implied options: the architecture always comes from the file's own ``cfg``; ``size: base`` (and, for
  the fine-tuned files, the ``cfg`` keys they add: ``finetuned_model``, ``predictor_dropout``,
  ``predictor_class``) describe that same architecture, so an exported model rebuilds without the file.
  The released cfg is the one in ``modbind_audio_beats.config.BASE`` (see the conformance fixture's notes).
"""

from __future__ import annotations

import base64

from modbind.pretrained import PretrainedCheckpoint

_LICENSE = "MIT"
_README = ("microsoft/unilm beats/README.md @768a3c8 (OneDrive share links); licence: unilm LICENSE (MIT); "
           "size/sha256: not published")
_FINE_TUNED = {"size": "base", "config": {"finetuned_model": True, "predictor_dropout": 0.0, "predictor_class": 527}}
_PRE_TRAINED = {"size": "base"}


def _onedrive_direct(share: str) -> str:
    """The shares-API download link of a OneDrive share link (base64url of the link, unpadded, after ``u!``)."""
    token = base64.urlsafe_b64encode(share.encode()).decode().rstrip("=")
    return f"https://api.onedrive.com/v1.0/shares/u!{token}/root/content"


def _entry(name: str, filename: str, share: str, description: str, *, fine_tuned: bool,
           size_bytes: int | None = None, sha256: str | None = None, provenance: str = _README) -> PretrainedCheckpoint:
    return PretrainedCheckpoint(
        name=name, filename=filename, page=share, urls=(_onedrive_direct(share),), license=_LICENSE,
        description=description, size_bytes=size_bytes, sha256=sha256,
        options=_FINE_TUNED if fine_tuned else _PRE_TRAINED, provenance=provenance)


CHECKPOINTS: dict[str, PretrainedCheckpoint] = {entry.name: entry for entry in (
    _entry("beats-iter3", "BEATs_iter3.pt", "https://1drv.ms/u/s!AqeByhGUtINrgcpxJUNDxg4eU0r-vA?e=qezPJ5",
           "BEATs iter3, self-supervised on AudioSet-2M (random-projection tokenizer, 3rd iteration)",
           fine_tuned=False),
    _entry("beats-iter3-ft-as2m-cpt1", "BEATs_iter3_finetuned_on_AS2M_cpt1.pt",
           "https://1drv.ms/u/s!AqeByhGUtINrgcplb48ll1zIt82eWQ?e=XyxrX7",
           "BEATs iter3 fine-tuned on AudioSet-2M tagging (527 classes), checkpoint 1", fine_tuned=True),
    _entry("beats-iter3-ft-as2m-cpt2", "BEATs_iter3_finetuned_on_AS2M_cpt2.pt",
           "https://1drv.ms/u/s!AqeByhGUtINrgcptb4S-CeJnlJGtZA?e=2FyDy3",
           "BEATs iter3 fine-tuned on AudioSet-2M tagging (527 classes), checkpoint 2", fine_tuned=True),
    _entry("beats-iter3-plus-as20k", "BEATs_iter3_plus_AS20K.pt",
           "https://1drv.ms/u/s!AqeByhGUtINrgcpvdNz8-aYim60CIg?e=53V8pg",
           "BEATs iter3+ (AS20K): self-supervised on AudioSet-2M with the iter3+ tokenizer (taught by a "
           "model fine-tuned on AS-20K)",
           fine_tuned=False),
    _entry("beats-iter3-plus-as20k-ft-as2m-cpt1", "BEATs_iter3_plus_AS20K_finetuned_on_AS2M_cpt1.pt",
           "https://1drv.ms/u/s!AqeByhGUtINrgcp2YHUCT1uZx2Kysw?e=nvu1Dw",
           "BEATs iter3+ (AS20K) fine-tuned on AudioSet-2M tagging (527 classes), checkpoint 1", fine_tuned=True),
    _entry("beats-iter3-plus-as20k-ft-as2m-cpt2", "BEATs_iter3_plus_AS20K_finetuned_on_AS2M_cpt2.pt",
           "https://1drv.ms/u/s!AqeByhGUtINrgcp092af0h7P3kXKFA?e=kUkPhN",
           "BEATs iter3+ (AS20K) fine-tuned on AudioSet-2M tagging (527 classes), checkpoint 2", fine_tuned=True),
    _entry("beats-iter3-plus-as2m", "BEATs_iter3_plus_AS2M.pt",
           "https://1drv.ms/u/s!AqeByhGUtINrgcpke6_lRSZEKD5j2Q?e=A3FpOf",
           "BEATs iter3+ (AS2M): self-supervised on AudioSet-2M with the iter3+ tokenizer (taught by a "
           "model fine-tuned on AS-2M); the shipped BEATs recipes start here", fine_tuned=False),
    _entry("beats-iter3-plus-as2m-ft-as2m-cpt1", "BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt1.pt",
           "https://1drv.ms/u/s!AqeByhGUtINrgcpoZecQbiXeaUjN8A?e=DasbeC",
           "BEATs iter3+ (AS2M) fine-tuned on AudioSet-2M tagging (527 classes), checkpoint 1", fine_tuned=True),
    _entry("beats-iter3-plus-as2m-ft-as2m-cpt2", "BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt",
           "https://1drv.ms/u/s!AqeByhGUtINrgcpj8ujXH1YUtxooEg?e=E9Ncea",
           "BEATs iter3+ (AS2M) fine-tuned on AudioSet-2M tagging (527 classes), checkpoint 2", fine_tuned=True,
           size_bytes=363_145_291, sha256="e5815275a04b6885e7b8af63d120b29bffae2cd2225cf4915e1ec6d819d3022c",
           provenance=_README.replace("size/sha256: not published", "size/sha256: not published by Microsoft; "
                                      "the identical LFS size and sha256 of three independent Hugging Face "
                                      "re-uploads (SaraAlthubaiti/TinyOctopus, THUdyh/Ola_speech_encoders, "
                                      "Jayson236/BEATs)"))
)}
"""Every BEATs checkpoint of the official README's iter3 and iter3+ rows, by name."""
