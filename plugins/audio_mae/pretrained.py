"""The official AudioMAE checkpoints by name: ViT-B/16 pre-trained on AudioSet-2M, and fine-tuned on it.

Provenance (``facebookresearch/AudioMAE`` README, commit ``bd60e29``, section "Checkpoints"):

* links: Google Drive file shares. The direct link tried first is Google's download form for the same
  file id (``drive.usercontent.google.com/download?id=…&export=download&confirm=t``, the form other
  projects use for these files); the share page is the manual fallback;
* licence: the repository's LICENSE file is CC BY-NC 4.0 (its README says "CC-BY 4.0"; the LICENSE file
  is what binds);
* size and sha256: no public source states them;
* implied options: the released models are ViT-B/16 (``size: base``) with 12 attention heads; the head
  count leaves no trace in the weights, so the table states it (``num_heads: 12``).
"""

from __future__ import annotations

from modbind.pretrained import PretrainedCheckpoint

_LICENSE = "CC-BY-NC-4.0"
_PROVENANCE = ("facebookresearch/AudioMAE README @bd60e29 (Google Drive); licence: its LICENSE file "
               "(CC BY-NC 4.0; the README says CC-BY 4.0); size/sha256: not published")
_VIT_B = {"size": "base", "num_heads": 12}


def _drive(file_id: str) -> tuple[str, tuple[str, ...]]:
    """(share page, direct download links) of a Google Drive file."""
    page = f"https://drive.google.com/file/d/{file_id}/view"
    return page, (f"https://drive.usercontent.google.com/download?id={file_id}&export=download&confirm=t",)


def _entry(name: str, filename: str, file_id: str, description: str) -> PretrainedCheckpoint:
    page, urls = _drive(file_id)
    return PretrainedCheckpoint(name=name, filename=filename, page=page, urls=urls, license=_LICENSE,
                                description=description, options=_VIT_B, provenance=_PROVENANCE)


CHECKPOINTS: dict[str, PretrainedCheckpoint] = {entry.name: entry for entry in (
    _entry("audiomae-vitb-as2m", "pretrained.pth", "1ni_DV4dRf7GxM8k-Eirx71WP9Gg89wwu",
           "AudioMAE ViT-B/16 pre-trained (masked autoencoding) on AudioSet-2M; the shipped recipes start here"),
    _entry("audiomae-vitb-as2m-ft-as2m", "finetuned.pth", "18EsFOyZYvBYHkJ7_n7JFFWbj6crz01gq",
           "AudioMAE ViT-B/16 pre-trained, then fine-tuned on AudioSet-2M tagging (527 classes, mAP 47.3)"),
)}
"""Both checkpoints of the official README, by name."""
