"""Small dataset trees in their original layouts: the real metadata excerpts from tests/fixtures/datasets plus
generated audio. Each builder leaves some audio missing and some corrupt on purpose, so tests can check
what ``data prepare`` reports, and returns what it wrote.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf


@dataclass
class Tree:
    root: Path
    written: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)


def write_audio(path: Path, *, seconds: float = 0.25, sample_rate: int = 16000, channels: int = 1, seed: int = 0) -> Path:
    """A short tone plus noise (WAV/FLAC by extension), deterministic per seed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    tone = 0.3 * np.sin(2 * np.pi * (220 + 40 * (seed % 10)) * t) + 0.05 * rng.standard_normal(t.shape)
    samples = np.repeat(tone[:, None], channels, axis=1).astype(np.float32)
    sf.write(str(path), samples, sample_rate)
    return path


def write_corrupt(path: Path) -> Path:
    """A file with an audio extension whose bytes are not audio."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not audio at all" * 10)
    return path


def _audio(tree: Tree, relative: str, seed: int, **kwargs: float) -> None:
    write_audio(tree.root / relative, seed=seed, **kwargs)  # type: ignore[arg-type]
    tree.written.append(relative)


def build_audiocaps(tmp: Path, datasets: Path) -> Tree:
    """v1 CSVs; audio in both common namings; GOD8Bt5LfDE (test) missing, one train clip corrupt."""
    tree = Tree(tmp / "AudioCaps")
    for split in ("train", "val", "test"):
        (tree.root / "dataset").mkdir(parents=True, exist_ok=True)
        shutil.copy(datasets / "AudioCaps/v1" / f"{split}.csv", tree.root / "dataset" / f"{split}.csv")
    _audio(tree, "waveforms/test/Y7fmOlUlwoNg.wav", 1)
    _audio(tree, "waveforms/test/6BJ455B1aAs_0.flac", 2)
    tree.missing.append("GOD8Bt5LfDE")
    for k, (ytid, start) in enumerate([("r1nicOVtvkQ", 130), ("UDGBjjwyaqE", 20), ("3eJ9RynJzP8", 80)]):
        _audio(tree, f"waveforms/train/Y{ytid}.wav", 10 + k)
    write_corrupt(tree.root / "waveforms/train/Y3eK62q7SnVU.wav")
    tree.corrupt.append("Y3eK62q7SnVU_390")
    for k, ytid in enumerate(["vfY_TJq7n_U", "tdWhHV3X25Q", "tw76HGONaKg"]):
        _audio(tree, f"waveforms/val/Y{ytid}.wav", 20 + k)
    return tree


CLOTHO_FOLDERS = {"development": "clotho_captions_development.csv", "validation": "clotho_captions_validation.csv",
                  "evaluation": "clotho_captions_evaluation.csv"}


def build_clotho(tmp: Path, datasets: Path) -> Tree:
    """Captions CSVs verbatim; evaluation metadata built from WavCaps' real Freesound ids, ISO-8859-1."""
    import csv

    tree = Tree(tmp / "Clotho")
    tree.root.mkdir(parents=True)
    for folder, name in CLOTHO_FOLDERS.items():
        shutil.copy(datasets / "Clotho" / name, tree.root / name)
        with (tree.root / name).open(newline="", encoding="utf-8") as handle:
            names = [row["file_name"] for row in csv.DictReader(handle)]
        for k, file_name in enumerate(names):
            if folder == "evaluation" and k == 2:
                tree.missing.append(file_name)
                continue
            on_disk = file_name.replace("&amp;", "&")
            _audio(tree, f"{folder}/{on_disk}", k, seconds=0.2)
    ids = {e["wav"].rsplit("/", 1)[1]: e["id"] for e in
           json.loads((datasets / "Clotho/wavcaps_format/test.json").read_text())["data"]}
    lines = ["file_name,keywords,sound_id,sound_link,start_end_samples,manufacturer,license"]
    for file_name, sound_id in ids.items():
        lines.append(f'{file_name},machine;caf\u00e9,{sound_id},https://freesound.org/s/{sound_id},"[0, 10]",someone,cc0')
    (tree.root / "clotho_metadata_evaluation.csv").write_bytes(("\n".join(lines) + "\n").encode("iso-8859-1"))
    return tree


def build_wavcaps(tmp: Path, datasets: Path) -> Tree:
    """SoundBible JSON and blacklist verbatim; a FreeSound JSON whose id collides with a SoundBible id."""
    tree = Tree(tmp / "WavCaps")
    (tree.root / "json_files/SoundBible").mkdir(parents=True)
    (tree.root / "json_files/blacklist").mkdir(parents=True)
    shutil.copy(datasets / "WavCaps/json_files/SoundBible/sb_final.json", tree.root / "json_files/SoundBible")
    shutil.copy(datasets / "WavCaps/json_files/blacklist/blacklist_exclude_test_ac.json",
                tree.root / "json_files/blacklist")
    document = json.loads((tree.root / "json_files/SoundBible/sb_final.json").read_text())
    for k, item in enumerate(document["data"][:5]):
        _audio(tree, f"Zip_files/SoundBible/mega/{item['id']}.flac", k)
    fsd = {"num_captions_per_audio": 1, "data": [
        {"id": "2219", "file_name": "x.wav", "href": "h", "tags": ["rain"], "author": "a", "description": "rain",
         "audio": "wav_path", "download_link": "d", "caption": "Rain falls on a roof.", "duration": 3.0},
        {"id": "156", "file_name": "y.wav", "href": "h", "tags": [], "author": "b", "description": "",
         "audio": "wav_path", "download_link": "d", "caption": "A door creaks.", "duration": 2.0},
    ]}
    (tree.root / "json_files/FreeSound").mkdir(parents=True)
    (tree.root / "json_files/FreeSound/fsd_final.json").write_text(json.dumps(fsd))
    _audio(tree, "Zip_files/FreeSound/2219.flac", 40)
    _audio(tree, "Zip_files/FreeSound/156.flac", 41)
    return tree


def build_esc50(tmp: Path, datasets: Path) -> Tree:
    tree = Tree(tmp / "ESC-50-master")
    (tree.root / "meta").mkdir(parents=True)
    shutil.copy(datasets / "ESC-50/meta/esc50.csv", tree.root / "meta/esc50.csv")
    names = [line.split(",")[0] for line in (tree.root / "meta/esc50.csv").read_text().splitlines()[1:]]
    for k, name in enumerate(names):
        if k == 3:
            tree.missing.append(name)
            continue
        _audio(tree, f"audio/{name}", k, seconds=0.2, sample_rate=44100)
    return tree


def build_urbansound8k(tmp: Path, datasets: Path) -> Tree:
    tree = Tree(tmp / "UrbanSound8K")
    (tree.root / "metadata").mkdir(parents=True)
    shutil.copy(datasets / "UrbanSound8K/metadata/UrbanSound8K.csv", tree.root / "metadata/UrbanSound8K.csv")
    rows = [line.split(",") for line in (tree.root / "metadata/UrbanSound8K.csv").read_text().splitlines()[1:]]
    for k, row in enumerate(rows):
        name, fold = row[0], row[5]
        relative = f"audio/{name}" if k == 1 else f"audio/fold{fold}/{name}"  # one flattened (WavCaps layout)
        _audio(tree, relative, k, seconds=0.2, sample_rate=22050, channels=2 if k % 2 else 1)
    return tree


def build_vggsound(tmp: Path, datasets: Path) -> Tree:
    tree = Tree(tmp / "VGGSound")
    tree.root.mkdir(parents=True)
    shutil.copy(datasets / "VGGSound/vggsound.csv", tree.root / "vggsound.csv")
    rows = [line.rsplit(",", 1)[0].split(",", 2) for line in (tree.root / "vggsound.csv").read_text().splitlines()]
    for k, (ytid, start, _) in enumerate(rows[:6]):
        stem = f"{ytid}_{int(start):06d}"
        _audio(tree, f"audio/{stem}.wav", k)
        if k < 2:
            from PIL import Image

            frame = tree.root / f"frames/{stem}.jpg"
            frame.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (k * 40, 10, 10)).save(frame)
    return tree


def build_macs(tmp: Path) -> Tree:
    """MACS.yaml in the documented layout (the real file is not reachable), competence TSV, TAU audio."""
    import yaml

    tree = Tree(tmp / "MACS")
    tree.root.mkdir(parents=True)
    files = [
        {"filename": "airport-stockholm-12-488-a.wav", "annotations": [
            {"annotator_id": 354, "sentence": "People talk while footsteps pass by.", "tags": ["adults talking", "footsteps"]},
            {"annotator_id": 12, "sentence": "A busy hall with announcements.", "tags": ["announcement"]}]},
        {"filename": "park-helsinki-3-100-a.wav", "annotations": [
            {"annotator_id": 12, "sentence": "Birds sing in a quiet park.", "tags": ["birds"]},
            {"annotator_id": 7, "sentence": "Children play far away.", "tags": ["children"]},
            {"annotator_id": 354, "sentence": "Birds and distant voices.", "tags": ["birds", "adults talking"]}]},
    ]
    (tree.root / "MACS.yaml").write_text(yaml.safe_dump({"files": files}, sort_keys=False))
    (tree.root / "MACS_competence.csv").write_text("annotator_id\tcompetence\n354\t0.91\n12\t0.75\n7\t0.5\n")
    _audio(tree, "audio/airport-stockholm-12-488-a.wav", 1, sample_rate=48000, channels=2)
    tree.missing.append("park-helsinki-3-100-a.wav")
    return tree


def write_youtube_captions(path: Path, key: str, rows: list[tuple[str, str]]) -> Path:
    """An Auto-ACD / AudioSetCaps style caption CSV (the real files are not reachable)."""
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([key, "caption"])
        writer.writerows(rows)
    return path
