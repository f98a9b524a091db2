"""The official HTS-AT checkpoints by name: the AudioSet model and the LAION-CLAP audio towers.

Provenance:

* ``htsat-audioset``: ``RetroCirce/HTS-Audio-Transformer`` README (commit ``2e29471``) names
  ``HTSAT_AudioSet_Saved_1.ckpt`` in a shared Google Drive *folder*; a folder offers no direct file link,
  so this one is always saved by hand (the error says where). Licence MIT (the repository's LICENSE).
  No public source states its size or sha256.
* LAION-CLAP: ``LAION-AI/CLAP`` README (commit ``1fd4c37``) lists the checkpoints on Hugging Face,
  ``lukewys/laion_clap``, whose model card declares CC0-1.0 (the code repository is CC0 1.0 too). The links
  pin revision ``b3708341862f581175dba5c356a4ebf74a9b6651`` (the repository's last commit, which uploaded
  ``music_speech_epoch_15_esc_89.25.pt``). The sha256 values are those Hugging Face's LFS file pages state;
  the exact sizes are those of the LFS pointers, quoted with the same sha256 by independent projects
  (``630k-audioset-fusion-best.pt`` also by the ``nvidia/audio-flamingo-demo`` Space's own pointer).
  ``630k-best.pt`` and ``630k-fusion-best.pt``: no public source found stating sha256 or exact size;
  ``music_speech_epoch_15_esc_89.25.pt``: sha256 stated, exact size not.
* implied options: LAION-CLAP towers hear 48 kHz audio (hop 480) and pad short clips by repeating them
  (``repeatpad``, LAION-CLAP's ``get_audio_features``); HTSAT-tiny has the official AudioSet sizes
  (``architecture: audioset``), the music checkpoints are ``HTSAT-base`` (``amodel='HTSAT-base'`` in the
  README). The architecture of a loaded file is still read off its tensor shapes; ``architecture`` only
  lets an exported model rebuild without the file.
"""

from __future__ import annotations

from modbind.pretrained import PretrainedCheckpoint

_HTSAT_FOLDER = "https://drive.google.com/drive/folders/1f5VYMk0uos_YnuBshgmaTVioXbs7Kmz6"
_CLAP_REPO = "https://huggingface.co/lukewys/laion_clap"
_CLAP_REVISION = "b3708341862f581175dba5c356a4ebf74a9b6651"
_CLAP_LICENSE = "CC0-1.0"
_CLAP_TINY = {"sample_rate": 48000, "short_clips": "repeatpad", "architecture": "audioset"}
_CLAP_TINY_FUSED = {**_CLAP_TINY, "mel_scale": "htk"}
"""Fused towers were trained on an HTK mel without Slaney normalisation (see the plugin README)."""
_CLAP_BASE = {"sample_rate": 48000, "short_clips": "repeatpad", "architecture": "base"}


def _clap(name: str, filename: str, description: str, options: dict[str, object], *, sha256: str | None,
          size_bytes: int | None, provenance: str) -> PretrainedCheckpoint:
    return PretrainedCheckpoint(
        name=name, filename=filename, page=f"{_CLAP_REPO}/blob/main/{filename}",
        urls=(f"{_CLAP_REPO}/resolve/{_CLAP_REVISION}/{filename}",), license=_CLAP_LICENSE,
        description=description, sha256=sha256, size_bytes=size_bytes, options=options,
        provenance=f"LAION-AI/CLAP README @1fd4c37; licence: HF model card (cc0-1.0); {provenance}")


CHECKPOINTS: dict[str, PretrainedCheckpoint] = {entry.name: entry for entry in (
    PretrainedCheckpoint(
        name="htsat-audioset", filename="HTSAT_AudioSet_Saved_1.ckpt", page=_HTSAT_FOLDER, license="MIT",
        description="official HTS-AT (Swin-T) trained on AudioSet at 32 kHz, the README's first checkpoint",
        options={"sample_rate": 32000, "architecture": "audioset"},
        provenance="RetroCirce/HTS-Audio-Transformer README @2e29471 (Google Drive folder); licence: its "
                   "LICENSE (MIT); size/sha256: not published"),
    _clap("laion-clap-630k", "630k-best.pt",
          "LAION-CLAP HTSAT-tiny tower, trained on LAION-Audio-630K, not fused", _CLAP_TINY, sha256=None,
          size_bytes=None, provenance="size/sha256: no public source found"),
    _clap("laion-clap-630k-audioset", "630k-audioset-best.pt",
          "LAION-CLAP HTSAT-tiny tower, LAION-Audio-630K + AudioSet, not fused (laion_clap's default)", _CLAP_TINY,
          sha256="8053c9775516af2f4902e1e8281e356cc1bf7a85e8b761908170767b77c3f037", size_bytes=1_863_587_645,
          provenance="sha256: HF LFS page; size: LFS pointer size quoted with that sha256 by independent projects"),
    _clap("laion-clap-630k-fusion", "630k-fusion-best.pt",
          "LAION-CLAP HTSAT-tiny tower, LAION-Audio-630K, fused (trained on variable-length audio)", _CLAP_TINY_FUSED,
          sha256=None, size_bytes=None, provenance="size/sha256: no public source found"),
    _clap("laion-clap-630k-audioset-fusion", "630k-audioset-fusion-best.pt",
          "LAION-CLAP HTSAT-tiny tower, LAION-Audio-630K + AudioSet, fused (laion_clap's fused default)",
          _CLAP_TINY_FUSED, sha256="fb171dd9b608aebdac3d89286cd7615c5100af4cc7dc37797c7fb8d3cc15e3a5",
          size_bytes=1_863_889_051,
          provenance="sha256: HF LFS page (also under its earlier name "
                     "audioset_fusion_epoch_20_esc_86.8_map_36.22.pt); size: LFS pointer of the same object in "
                     "nvidia/audio-flamingo-demo"),
    _clap("laion-clap-music-audioset", "music_audioset_epoch_15_esc_90.14.pt",
          "LAION-CLAP HTSAT-base tower, music + AudioSet + LAION-Audio-630K (the README's music model)", _CLAP_BASE,
          sha256="fae3e9c087f2909c28a09dc31c8dfcdacbc42ba44c70e972b58c1bd1caf6dedd", size_bytes=2_352_471_003,
          provenance="sha256 and size: LFS identity quoted together by independent projects pinning this file"),
    _clap("laion-clap-music-speech", "music_speech_epoch_15_esc_89.25.pt",
          "LAION-CLAP HTSAT-base tower, music + speech + LAION-Audio-630K", _CLAP_BASE,
          sha256="a27dfbd00d96781020d83044136f084343edab799d2657ef3cfe5c4f2222bb28", size_bytes=None,
          provenance="sha256: HF LFS page; exact size: not found (the page says 2.35 GB)"),
    _clap("laion-clap-music-speech-audioset", "music_speech_audioset_epoch_15_esc_89.98.pt",
          "LAION-CLAP HTSAT-base tower, music + speech + AudioSet + LAION-Audio-630K", _CLAP_BASE,
          sha256="51c68f12f9d7ea25fdaaccf741ec7f81e93ee594455410f3bca4f47f88d8e006", size_bytes=2_352_471_003,
          provenance="sha256: HF LFS page (commit 4226474); size: LFS pointer of that commit, quoted by "
                     "independent projects"),
)}
"""The official HTS-AT AudioSet checkpoint and LAION-CLAP's released HTS-AT audio towers, by name."""
