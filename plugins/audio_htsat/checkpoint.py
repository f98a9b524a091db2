"""Load HTS-AT weights from the files people actually have, never unpickling code.

Accepted layouts (the architecture is always read off the tensor shapes):

* official HTS-AT: the PyTorch Lightning ``.ckpt`` (``state_dict`` with keys under ``sed_model.``), the
  weight-averaged ``{"state_dict": ...}`` form (every tensor float32, index buffers included), or a bare
  state dict / ``.safetensors`` without the prefix;
* LAION-CLAP's own checkpoints: the official layout under ``audio_branch.`` (optionally ``module.``);
* transformers' CLAP format (``laion/clap-htsat-unfused``): the audio tower of ``ClapModel``
  (``audio_model.audio_encoder.…``) or a ``ClapAudioModel`` state dict (``audio_encoder.…``).

Everything outside the audio tower (text tower, projections, logit scales, the AudioSet tagging head) is
ignored and reported. Config-determined tensors are checked against the model: relative-position indices
must be the model's own, and an official mel matrix must be the filterbank of the configured sample rate
(a 48 kHz LAION-CLAP checkpoint used at 32 kHz is refused with the fix named).

The front-end must be the one the tower was trained on, which the weights alone do not fix, so the file's
kind is checked against the options: a LAION-CLAP tower needs ``sample_rate`` 48000, and a *fused* one
(fusion keys present) was trained on an HTK mel without area normalisation, so it needs ``mel_scale: htk``
(every other tower: ``slaney``). Its fusion branch is ignored and reported: LAION-CLAP runs it only for
clips longer than 10 s, and the plugin never feeds more than ``clip_seconds`` (at most 10.23 s); for a
clip up to 10 s the rest of the tower gives LAION-CLAP's embedding (``mel_fusion`` channel 0 through the
plain patch embedding).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from modbind.checkpoint_io import compare_state, read_checkpoint
from modbind.errors import CheckpointError

from modbind_audio_htsat.architecture import LAION_CLAP_SAMPLE_RATE, ShortClipPolicy, infer_architecture
from modbind_audio_htsat.convert import PREFIX, is_relative_position_index, official_to_clap
from modbind_audio_htsat.encoder import HtsatEncoder
from modbind_audio_htsat.frontend import FrontEndParams, MelScale, slaney_mel_filterbank

log = logging.getLogger(__name__)

_OFFICIAL_PREFIXES = ("module.", "sed_model.", "audio_branch.")
_FUSION = re.compile(r"(patch_embed\.(fusion_model|mel_conv2d)\.|fusion_model\.|mel_conv1d\.)")


@dataclass
class LoadReport:
    """What a checkpoint contributed and what it carried besides the encoder's weights."""

    path: Path
    layout: str
    """``official`` (HTS-AT / LAION-CLAP ``audio_branch``) or ``transformers`` (``ClapModel`` audio tower)."""
    laion_clap: bool = False
    """A LAION-CLAP audio tower (``audio_branch.`` or transformers CLAP keys), trained on 48 kHz audio."""
    fusion: list[str] = field(default_factory=list)
    """Keys of a fused tower's fusion branch (ignored: it only runs on clips longer than 10 s)."""
    loaded: int = 0
    ignored: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    """Config-determined tensors compared with the model's own."""
    skipped: list[str] = field(default_factory=list)
    """Non-weight entries of the file (epoch, optimizer state, ...), from :func:`read_checkpoint`."""

    @property
    def tower(self) -> str:
        """What the file holds, for messages: 'HTS-AT', 'non-fused LAION-CLAP' or 'fused LAION-CLAP'."""
        if self.fusion:  # only LAION-CLAP has a fusion branch
            return "fused LAION-CLAP"
        return "non-fused LAION-CLAP" if self.laion_clap else "HTS-AT"

    def describe(self) -> str:
        return (f"{self.path}: loaded {self.loaded} {self.tower} tensors ({self.layout} layout); checked "
                f"{len(self.checked)} derived tensors; ignored {len(self.ignored)} tensors "
                f"({_preview(self.ignored)}) and {len(self.skipped)} non-weight entries")


def load_htsat_checkpoint(
    path: Path,
    *,
    sample_rate: int = 32000,
    mel_scale: MelScale = "slaney",
    spec_size: int = 256,
    short_clips: ShortClipPolicy = "stretch",
    drop_path_rate: float = 0.0,
) -> HtsatEncoder:
    """Build an :class:`HtsatEncoder` sized after ``path`` and load its weights; ``encoder.load_report`` says what."""
    path = Path(path)
    file = read_checkpoint(path)
    report = LoadReport(path=path, layout="official", skipped=list(file.skipped))
    state, derived = _to_clap_layout(file.tensors, report)
    _check_front_end(report, derived, sample_rate, mel_scale)
    architecture = infer_architecture(state, str(path), spec_size=spec_size)
    encoder = HtsatEncoder(architecture, short_clips=short_clips, drop_path_rate=drop_path_rate)
    expected = encoder.model.state_dict()
    _check_derived(derived, expected, sample_rate, report)
    _load_strict(encoder, state, expected, path)
    report.loaded = len(state)
    log.info(report.describe())
    encoder.load_report = report
    return encoder


def _to_clap_layout(tensors: dict[str, Tensor], report: LoadReport) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(learned tensors under ClapAudioModel names, derived tensors under official names)."""
    if any(key.startswith(PREFIX) or f".{PREFIX}" in key for key in tensors):
        report.layout, report.laion_clap = "transformers", True
        return _from_transformers(tensors, report), {}
    official = _strip_official_prefixes(tensors, report)
    fusion = [key for key in official if _FUSION.match(key)]
    report.ignored += fusion
    report.fusion = fusion
    converted = official_to_clap({k: v for k, v in official.items() if k not in fusion})
    report.ignored += converted.tagging
    if converted.unknown:
        raise CheckpointError(
            f"{report.path}: {len(converted.unknown)} tensors are not part of HTS-AT "
            f"({_preview(converted.unknown)}); expected official HTS-AT, LAION-CLAP or transformers CLAP keys")
    return converted.state, converted.derived


def _strip_official_prefixes(tensors: dict[str, Tensor], report: LoadReport) -> dict[str, Tensor]:
    """Drop ``module.``/``sed_model.``/``audio_branch.`` wrappers; keys outside a present wrapper are ignored."""
    current, stripped = dict(tensors), ""
    for prefix in _OFFICIAL_PREFIXES:
        inside = {k[len(prefix):]: v for k, v in current.items() if k.startswith(prefix)}
        if inside:
            report.ignored += [stripped + k for k in current if not k.startswith(prefix)]
            current, stripped = inside, stripped + prefix
            report.laion_clap = report.laion_clap or prefix == "audio_branch."
    return current


def _from_transformers(tensors: dict[str, Tensor], report: LoadReport) -> dict[str, Tensor]:
    state: dict[str, Tensor] = {}
    for key, tensor in tensors.items():
        _, marker, rest = key.partition(PREFIX)
        if marker and _FUSION.match(rest):
            report.fusion.append(key)
        if not marker or _FUSION.match(rest):
            report.ignored.append(key)
        elif rest.endswith("relative_position_index"):
            report.checked.append(key)  # rebuilt by the model; compared below through the official name
            state[PREFIX + rest] = tensor
        else:
            state[PREFIX + rest] = tensor
    return state


def _check_front_end(report: LoadReport, derived: dict[str, Tensor], sample_rate: int, mel_scale: MelScale) -> None:
    """The options must give the front-end the tower was trained on; the weights would load either way.

    A stored ``melW`` fixes the sample rate exactly (checked in :func:`_check_derived`); without one, a
    LAION-CLAP tower is taken to be what every released one is, a 48 kHz model.
    """
    if report.laion_clap and "logmel_extractor.melW" not in derived and sample_rate != LAION_CLAP_SAMPLE_RATE:
        raise CheckpointError(
            f"{report.path} holds a {report.tower} audio tower, trained on {LAION_CLAP_SAMPLE_RATE} Hz audio with a "
            f"480-sample hop; set plugin.options.sample_rate: {LAION_CLAP_SAMPLE_RATE} (it is {sample_rate})")
    trained_on = "htk" if report.fusion else "slaney"
    if mel_scale != trained_on:
        why = ("LAION-CLAP feeds fused towers an HTK-scale mel without area normalisation (torchaudio "
               "MelSpectrogram), not the Slaney log-mel of the non-fused ones" if report.fusion else
               "it was trained on the Slaney-scale, area-normalised log-mel; 'htk' is for fused LAION-CLAP towers")
        article = "an" if report.tower == "HTS-AT" else "a"
        raise CheckpointError(f"{report.path} holds {article} {report.tower} audio tower and {why}; set "
                              f"plugin.options.mel_scale: {trained_on} (it is {mel_scale})")


def _check_derived(derived: dict[str, Tensor], expected: dict[str, Tensor], sample_rate: int,
                   report: LoadReport) -> None:
    """Compare config-determined tensors with what this model and front-end compute."""
    melw = derived.get("logmel_extractor.melW")
    if melw is not None:
        params = FrontEndParams.for_rate(sample_rate)
        ours = slaney_mel_filterbank(params)
        if tuple(melw.shape) != tuple(ours.shape) or not torch.allclose(melw.float(), ours, rtol=1e-5, atol=1e-8):
            hint = (f"; LAION-CLAP HTS-AT checkpoints need sample_rate: {LAION_CLAP_SAMPLE_RATE}"
                    if sample_rate != LAION_CLAP_SAMPLE_RATE else "")
            raise CheckpointError(
                f"{report.path}: its mel filterbank (logmel_extractor.melW, shape {tuple(melw.shape)}) is not the "
                f"{params.n_mels}-band {params.fmin:g}-{params.fmax:g} Hz Slaney filterbank for {sample_rate} Hz "
                f"audio with a {params.n_fft}-point FFT, so the model was trained on a different front-end; set the "
                f"plugin option sample_rate to the rate it was trained at{hint}")
        report.checked.append("logmel_extractor.melW")
    for name in ("spectrogram_extractor.stft.conv_real.weight", "spectrogram_extractor.stft.conv_imag.weight"):
        kernel = derived.get(name)
        if kernel is not None:
            if tuple(kernel.shape[1:]) != (1, 1024):
                raise CheckpointError(f"{report.path}: {name} has shape {tuple(kernel.shape)}; HTS-AT uses a "
                                      "1024-point STFT (expected (513, 1, 1024))")
            report.checked.append(name)
    for key, index in derived.items():
        if is_relative_position_index(key):
            ours_key = PREFIX + _index_key(key)
            ours = expected.get(ours_key)
            if ours is None or not torch.equal(index.round().long(), ours):
                raise CheckpointError(f"{report.path}: {key} is not the relative-position index of an "
                                      f"{tuple(ours.shape) if ours is not None else '?'} window; the window size "
                                      "or layout differs from HTS-AT")
            report.checked.append(key)
    report.checked += [k for k in derived if k.endswith("attn_mask")]


def _index_key(official_key: str) -> str:
    stage_block, _, _ = official_key.partition(".attn.")
    return f"{stage_block}.attention.self.relative_position_index"


def _load_strict(encoder: HtsatEncoder, state: dict[str, Tensor], expected: dict[str, Tensor], path: Path) -> None:
    """Every learned tensor present with the right shape; index buffers from the file must equal the model's."""
    learned = {k for k in expected if not k.endswith("relative_position_index")}
    mismatch = compare_state(state, {k: v.shape for k, v in expected.items()}, optional=set(expected) - learned)
    if not mismatch.fits:
        raise CheckpointError(f"{path} does not fit the HTS-AT model its shapes describe: "
                              f"{mismatch.describe('tensors', preview=_preview)}")
    for key in sorted(set(state) - learned):
        if not torch.equal(state[key].round().long(), expected[key]):
            raise CheckpointError(f"{path}: {key} differs from the model's relative-position index; the window "
                                  "layout is not HTS-AT's")
    loadable = {k: v.to(expected[k].dtype) for k, v in state.items() if k in learned}
    encoder.model.load_state_dict(loadable, strict=False)


def _preview(keys: list[str], n: int = 3) -> str:
    if not keys:
        return "none"
    more = f", … {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more
