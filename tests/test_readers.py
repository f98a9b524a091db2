"""Dataset readers on small trees built from the real metadata excerpts (tests/data_factories.py)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from data_factories import (
    build_audiocaps,
    build_clotho,
    build_esc50,
    build_macs,
    build_urbansound8k,
    build_vggsound,
    build_wavcaps,
    write_youtube_captions,
)
from modbind.data.manifest import read_manifest
from modbind.data.overlap import Blacklist
from modbind.data.prepare import prepare, report_path
from modbind.errors import DataError
from modbind.plugins import get_registry


def reader(name: str):
    """The built-in reader called ``name``, collected from modbind.data.plugin's hook alone, so these
    tests do not depend on other plugins importing cleanly (the registry test below covers discovery)."""
    import modbind.data.plugin as core

    found = {}
    core.register_dataset_readers(lambda r: found.setdefault(r.name, r))
    return found[name]


def by_id(entries):
    return {e.id: e for e in entries}


def test_all_nine_readers_are_registered_through_the_hook():
    registry = get_registry()
    names = {r.name for r in registry.dataset_readers}
    assert names >= {"audiocaps", "clotho", "wavcaps", "auto_acd", "audiosetcaps", "macs", "esc50", "urbansound8k",
                     "vggsound"}
    assert registry.dataset_readers.owners["clotho"].module == "modbind.data.plugin"


def test_audiocaps_groups_non_adjacent_captions_in_file_order(tmp_path, datasets_dir):
    tree = build_audiocaps(tmp_path, datasets_dir)
    entries = by_id(reader("audiocaps").read(tree.root, "test"))
    assert list(entries) == ["Y7fmOlUlwoNg_20", "Y6BJ455B1aAs_0", "YGOD8Bt5LfDE_100"]
    # Independent check: WavCaps' converted test.csv lists caption_1..5 per clip.
    with (datasets_dir / "AudioCaps/wavcaps_format/test.csv").open(newline="", encoding="utf-8") as handle:
        expected = {row["file_name"][1:12]: [row[f"caption_{j}"] for j in range(1, 6)] for row in csv.DictReader(handle)}
    for entry in entries.values():
        assert entry.captions["en"] == expected[entry.meta["youtube_id"]]
        assert entry.split == "test" and entry.source == "audiocaps"
    first = entries["Y7fmOlUlwoNg_20"]
    assert first.meta["caption_ids"] == ["103549", "107201", "102852", "20571", "104334"]
    assert first.meta["start"] == 20
    assert first.path == "waveforms/test/Y7fmOlUlwoNg.wav"
    assert entries["Y6BJ455B1aAs_0"].path == "waveforms/test/6BJ455B1aAs_0.flac"  # the aac-datasets naming


def test_audiocaps_all_splits_and_split_aliases(tmp_path, datasets_dir):
    tree = build_audiocaps(tmp_path, datasets_dir)
    entries = list(reader("audiocaps").read(tree.root))
    assert [sum(e.split == s for e in entries) for s in ("train", "val", "test")] == [15, 3, 3]
    assert {e.id for e in reader("audiocaps").read(tree.root, "validation")} == {
        "YvfY_TJq7n_U_130", "YtdWhHV3X25Q_60", "Ytw76HGONaKg_570"}
    with pytest.raises(DataError, match="no split 'tset'.*did you mean 'test'"):
        list(reader("audiocaps").read(tree.root, "tset"))


def test_prepare_reports_missing_and_undecodable_audio(tmp_path, datasets_dir):
    tree = build_audiocaps(tmp_path, datasets_dir)
    out = tree.root / "ac_train.jsonl"
    report = prepare(reader("audiocaps").read(tree.root, "train"), dataset="audiocaps", root=tree.root, out=out,
                     split="train", probe=True, progress=False)
    written = by_id(read_manifest(out))
    assert set(written) == {"Yr1nicOVtvkQ_130", "YUDGBjjwyaqE_20", "Y3eJ9RynJzP8_80"}
    entry = written["Y3eJ9RynJzP8_80"]
    assert entry.path == "waveforms/train/Y3eJ9RynJzP8.wav"  # relative to the manifest's folder
    assert (out.parent / entry.path).is_file()
    assert entry.sample_rate == 16000 and entry.duration == pytest.approx(0.25)
    assert entry.captions["en"] == ["The wind is blowing, insects are singing, and rustling occurs"]
    side = json.loads(report_path(out).read_text())
    assert side["counts"] == {"missing_audio": 11, "undecodable_audio": 1}
    assert side["read"] == 15 and side["written"] == 3
    assert [p["id"] for p in side["problems"]["undecodable_audio"]] == ["Y3eK62q7SnVU_390"]
    assert report.summary().startswith("3 of 15 entries written")


def test_real_wavcaps_blacklist_removes_audiocaps_clips(tmp_path, datasets_dir):
    tree = build_audiocaps(tmp_path, datasets_dir)
    blacklist = Blacklist.load(datasets_dir / "WavCaps/json_files/blacklist/blacklist_exclude_test_ac.json")
    assert "vfY_TJq7n_U" in blacklist.youtube_ids and "156" in blacklist.freesound_ids
    out = tmp_path / "val.jsonl"
    report = prepare(reader("audiocaps").read(tree.root, "val"), dataset="audiocaps", root=tree.root, out=out,
                     blacklist=blacklist, progress=False)
    assert report.written == 0 and report.counts() == {"blacklisted": 3}
    assert report.problems["blacklisted"][0]["detail"] == "youtube_id vfY_TJq7n_U"


def test_clotho_evaluation_is_test_with_freesound_ids_from_latin1_metadata(tmp_path, datasets_dir):
    tree = build_clotho(tmp_path, datasets_dir)
    entries = list(reader("clotho").read(tree.root, "evaluation"))
    assert len(entries) == 10 and {e.split for e in entries} == {"test"}
    santa = entries[0]
    assert santa.id == "Santa Motor.wav" and santa.path == "evaluation/Santa Motor.wav"
    assert santa.captions["en"][4] == "While rhythmically punching or stamping, a machine whines and squeals."
    assert santa.meta["freesound_id"] == "116638"
    assert santa.meta["keywords"] == ["machine", "caf\u00e9"]
    assert santa.meta["caption_ids"][0] == "Santa Motor.wav#1"
    assert "freesound_id" not in entries[3].meta  # no metadata row for this clip


def test_clotho_html_escaped_names_find_the_unescaped_file(tmp_path, datasets_dir):
    tree = build_clotho(tmp_path, datasets_dir)
    entry = by_id(reader("clotho").read(tree.root, "train"))["121006_rain&amp;storm.wav"]
    assert entry.path == "development/121006_rain&storm.wav"
    assert entry.captions["en"][0].startswith("As thunder claps far in the distance")


def test_wavcaps_sources_keep_colliding_ids_apart(tmp_path, datasets_dir):
    tree = build_wavcaps(tmp_path, datasets_dir)
    entries = by_id(reader("wavcaps").read(tree.root))
    sb, fsd = entries["soundbible/2219"], entries["freesound/2219"]
    assert sb.captions == {"en": ["An airplane is landing."]} and sb.path == "Zip_files/SoundBible/mega/2219.flac"
    assert sb.meta["title"] == "Airplane Landing Airport" and sb.duration == pytest.approx(14.1424375)
    assert fsd.path == "Zip_files/FreeSound/2219.flac" and fsd.meta["freesound_id"] == "2219"
    assert len([e for e in entries.values() if e.source == "wavcaps/SoundBible"]) == 15
    only_sb = list(reader("wavcaps").read(tree.root, "soundbible"))
    assert {e.source for e in only_sb} == {"wavcaps/SoundBible"}
    blacklist = Blacklist.load(tree.root / "json_files/blacklist/blacklist_exclude_test_ac.json")
    assert blacklist.reason(entries["freesound/156"]) == "freesound_id 156"
    assert blacklist.reason(sb) is None  # SoundBible ids are not Freesound ids


def test_wavcaps_missing_caption_key_names_entry(tmp_path, datasets_dir):
    tree = build_wavcaps(tmp_path, datasets_dir)
    path = tree.root / "json_files/FreeSound/fsd_final.json"
    document = json.loads(path.read_text())
    del document["data"][1]["caption"]
    path.write_text(json.dumps(document))
    with pytest.raises(DataError, match=r"fsd_final.json: data\[1\] \(id '156'\) lacks 'caption'"):
        list(reader("wavcaps").read(tree.root, "freesound"))


def test_broken_json_fails_with_line(tmp_path, datasets_dir):
    tree = build_wavcaps(tmp_path, datasets_dir)
    path = tree.root / "json_files/FreeSound/fsd_final.json"
    path.write_text('{"num_captions_per_audio": 1,\n "data": [\n {"id": "1", "caption": "x",}\n]}')
    with pytest.raises(DataError, match=r"fsd_final.json:3: invalid JSON"):
        list(reader("wavcaps").read(tree.root, "freesound"))


def test_esc50_folds_labels_and_missing_clip(tmp_path, datasets_dir):
    tree = build_esc50(tmp_path, datasets_dir)
    entries = list(reader("esc50").read(tree.root))
    assert len(entries) == 20 and {e.fold for e in entries} == {1}
    first = entries[1]
    assert first.id == "1-100038-A-14.wav" and first.path == "audio/1-100038-A-14.wav"
    assert first.labels == {"en": ["chirping birds"]} and first.meta["target"] == 14 and not first.meta["esc10"]
    assert entries[0].meta["esc10"] is True and entries[0].labels["en"] == ["dog"]
    assert list(reader("esc50").read(tree.root, "fold2")) == []
    report = prepare(iter(entries), dataset="esc50", root=tree.root, out=tmp_path / "esc.jsonl", progress=False)
    assert report.counts() == {"missing_audio": 1}
    assert report.problems["missing_audio"][0]["id"] == tree.missing[0]


def test_metadata_saved_with_a_byte_order_mark_reads_the_same(tmp_path, datasets_dir):
    tree = build_esc50(tmp_path, datasets_dir)
    plain = list(reader("esc50").read(tree.root))
    meta = tree.root / "meta/esc50.csv"
    meta.write_bytes(b"\xef\xbb\xbf" + meta.read_bytes())  # as Excel's "CSV UTF-8" saves it
    assert list(reader("esc50").read(tree.root)) == plain


def test_media_index_finds_every_audio_format_the_decoder_reads(tmp_path):
    from modbind.data.audio_index import MediaIndex

    for name in ("a.aiff", "b.opus", "c.au", "d.txt"):
        (tmp_path / "audio" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "audio" / name).write_bytes(b"")
    index = MediaIndex(tmp_path)
    assert [index.find([stem]) for stem in "abcd"] == ["audio/a.aiff", "audio/b.opus", "audio/c.au", None]


def test_esc50_bad_fold_number_names_file_line_and_column(tmp_path, datasets_dir):
    tree = build_esc50(tmp_path, datasets_dir)
    meta = tree.root / "meta/esc50.csv"
    lines = meta.read_text().splitlines()
    lines[5] = lines[5].replace(",1,19,", ",7,19,", 1)
    meta.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"esc50.csv:6: fold 7 is out of range \(expected 1-5\); fix column 'fold'"):
        list(reader("esc50").read(tree.root))


def test_urbansound8k_ten_folds_and_flattened_audio(tmp_path, datasets_dir):
    tree = build_urbansound8k(tmp_path, datasets_dir)
    entries = by_id(reader("urbansound8k").read(tree.root))
    assert len(entries) == 20
    bark = entries["100032-3-0-0.wav"]
    assert bark.fold == 5 and bark.labels == {"en": ["dog bark"]} and bark.path == "audio/fold5/100032-3-0-0.wav"
    assert bark.meta["end"] == pytest.approx(0.317551) and bark.meta["salience"] == 1
    assert entries["100263-2-0-117.wav"].path == "audio/100263-2-0-117.wav"  # flattened copy found
    assert {e.fold for e in entries.values()} == {2, 5, 10}
    fold10 = list(reader("urbansound8k").read(tree.root, "10"))
    assert [e.id for e in fold10][:2] == ["100648-1-0-0.wav", "100648-1-1-0.wav"] and len(fold10) == 7
    report = prepare(iter(entries.values()), dataset="urbansound8k", root=tree.root, out=tmp_path / "us.jsonl",
                     probe=True, progress=False)
    assert report.written == 20 and read_manifest(tmp_path / "us.jsonl")[0].sample_rate == 22050


def test_missing_column_names_the_file_and_the_header(tmp_path, datasets_dir):
    tree = build_urbansound8k(tmp_path, datasets_dir)
    meta = tree.root / "metadata/UrbanSound8K.csv"
    lines = meta.read_text().splitlines()
    meta.write_text("\n".join(line.rsplit(",", 1)[0] for line in lines) + "\n")
    with pytest.raises(DataError, match=r"UrbanSound8K.csv:1: missing column 'class' \(the header has: slice_file_name"):
        list(reader("urbansound8k").read(tree.root))


def test_vggsound_headerless_csv_quoted_labels_and_frames(tmp_path, datasets_dir):
    tree = build_vggsound(tmp_path, datasets_dir)
    entries = by_id(reader("vggsound").read(tree.root))
    assert len(entries) == 30
    first = entries["---g-f_I2yQ_000001"]
    assert first.split == "test" and first.labels == {"en": ["people marching"]}
    assert first.path == "audio/---g-f_I2yQ_000001.wav" and first.image == "frames/---g-f_I2yQ_000001.jpg"
    assert entries["--9O4XZOge4_000030"].labels["en"] == ["female speech, woman speaking"]
    assert [e.id for e in reader("vggsound").read(tree.root, "test")] == ["---g-f_I2yQ_000001", "--U7joUcTCo_000000"]
    out = tmp_path / "vgg.jsonl"
    report = prepare(iter(entries.values()), dataset="vggsound", root=tree.root, out=out, expect_images=True,
                     progress=False)
    assert report.written == 6
    assert report.counts() == {"missing_audio": 24, "no_frame_found": 4}
    assert read_manifest(out)[0].image == "VGGSound/frames/---g-f_I2yQ_000001.jpg"


def test_vggsound_header_line_is_rejected_with_a_hint(tmp_path, datasets_dir):
    tree = build_vggsound(tmp_path, datasets_dir)
    csv_path = tree.root / "vggsound.csv"
    csv_path.write_text("ytid,start_seconds,label,split\n" + csv_path.read_text())
    with pytest.raises(DataError, match=r"vggsound.csv:1: YouTube id 'ytid' is not 11 characters.*no header"):
        list(reader("vggsound").read(tree.root))


def test_non_utf8_metadata_fails_with_line(tmp_path, datasets_dir):
    tree = build_vggsound(tmp_path, datasets_dir)
    csv_path = tree.root / "vggsound.csv"
    lines = csv_path.read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b"playing tennis", b"playing t\xe9nnis")
    csv_path.write_bytes(b"\n".join(lines))
    with pytest.raises(DataError, match=r"vggsound.csv:3: not UTF-8 text.*re-save the file as UTF-8"):
        list(reader("vggsound").read(tree.root))


def test_macs_captions_scene_labels_and_competence(tmp_path):
    tree = build_macs(tmp_path)
    entries = list(reader("macs").read(tree.root))
    airport = entries[0]
    assert airport.captions["en"] == ["People talk while footsteps pass by.", "A busy hall with announcements."]
    assert airport.labels == {"en": ["airport"]} and airport.path == "audio/airport-stockholm-12-488-a.wav"
    assert airport.meta["competence"] == [0.91, 0.75] and airport.meta["annotator_ids"] == ["354", "12"]
    assert len(entries[1].captions["en"]) == 3 and entries[1].labels["en"] == ["park"]
    report = prepare(iter(entries), dataset="macs", root=tree.root, out=tmp_path / "macs.jsonl", progress=False)
    assert report.written == 1 and report.counts() == {"missing_audio": 1}


def test_auto_acd_id_forms_and_boilerplate(tmp_path):
    root = tmp_path / "auto-acd"
    write_youtube_captions(root / "train.csv", "youtube_id", [
        ("oPRC3zComfA_000117", "A man speaks as birds chirp."),
        ("YPsERnugT1hs", 'The audio caption for the given information could be: "Rain falls on a tin roof."'),
        ("Yabcdefghij_000030", "A VGGSound-form id that starts with Y."),
    ])
    from data_factories import write_audio

    write_audio(root / "audio/YPsERnugT1hs.wav")
    write_audio(root / "audio/Yabcdefghij_000030.wav")
    entries = list(reader("auto_acd").read(root, "train"))
    assert [e.meta.get("youtube_id") for e in entries] == ["oPRC3zComfA", "PsERnugT1hs", "Yabcdefghij"]
    assert entries[0].meta["start"] == 117 and "start" not in entries[1].meta
    assert entries[1].captions["en"] == ["Rain falls on a tin roof."]
    assert entries[2].path == "audio/Yabcdefghij_000030.wav"
    with pytest.raises(DataError, match="Auto-ACD test metadata not found"):
        list(reader("auto_acd").read(root, "test"))


def test_audiosetcaps_sources_and_id_grammar(tmp_path):
    root = tmp_path / "AudioSetCaps"
    write_youtube_captions(root / "Dataset/AudioSetCaps_caption.csv", "id", [("Y---1_cCGK4M", "Water runs.")])
    write_youtube_captions(root / "Dataset/YouTube-8M_AudioSetCaps_caption.csv", "id",
                           [("9eUrEyAR3xk_84_10", "Music plays softly.")])
    from data_factories import write_audio

    write_audio(root / "yt8m/9eUrEyAR3xk_84_10.flac")
    entries = list(reader("audiosetcaps").read(root))
    assert [(e.id, e.source, e.meta.get("youtube_id"), e.meta.get("start")) for e in entries] == [
        ("Y---1_cCGK4M", "audiosetcaps/audioset", "---1_cCGK4M", None),
        ("9eUrEyAR3xk_84_10", "audiosetcaps/youtube8m", "9eUrEyAR3xk", 84),
    ]
    assert entries[1].path == "yt8m/9eUrEyAR3xk_84_10.flac"
    with pytest.raises(DataError, match=r"AudioSetCaps_caption.csv:2: 3 fields where the header has 2"):
        (root / "Dataset/AudioSetCaps_caption.csv").write_text("id,caption\nY---1_cCGK4M,water,runs\n")
        list(reader("audiosetcaps").read(root, "audioset"))


def test_media_root_outside_dataset_root(tmp_path, datasets_dir):
    tree = build_esc50(tmp_path, datasets_dir)
    media = tmp_path / "elsewhere"
    (tree.root / "audio").rename(media)
    entries = list(reader("esc50").read(tree.root, media_root=media))
    assert entries[0].path == "1-100032-A-0.wav"  # relative to the media root
    report = prepare(iter(entries), dataset="esc50", root=media, out=tmp_path / "m.jsonl", progress=False)
    assert report.written == 19
    assert read_manifest(tmp_path / "m.jsonl")[0].path == "elsewhere/1-100032-A-0.wav"


def test_missing_dataset_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match=r"no ESC-50 metadata under .* \(expected .*meta/esc50.csv\)"):
        list(reader("esc50").read(tmp_path))
    with pytest.raises(DataError, match="dataset folder not found"):
        list(reader("clotho").read(Path(tmp_path / "nope")))


def test_audiocaps_v2_layout_lowercase_captions(tmp_path, datasets_dir):
    root = tmp_path / "audiocaps"
    (root / "dataset2.0").mkdir(parents=True)
    (root / "dataset2.0/test.csv").write_bytes((datasets_dir / "AudioCaps/v2/test.csv").read_bytes())
    entries = list(reader("audiocaps").read(root, "test"))
    assert [e.id for e in entries] == ["Y7fmOlUlwoNg_20", "Y6BJ455B1aAs_0"]
    assert entries[0].captions["en"] == [
        "constant rattling noise and sharp vibrations",
        "a machine is making clicking sound as people talk in the background",
        "a machine makes stitching sounds while people are talking in the background",
        "vibrations and rattling with people speaking in the distance",
        "clicking and screeching metal with people speaking",
    ]
    assert entries[0].path == "test/Y7fmOlUlwoNg.wav"  # conventional name, reported missing by prepare


def test_macs_yaml_errors_name_the_line_or_entry(tmp_path):
    tree = build_macs(tmp_path)
    yaml_path = tree.root / "MACS.yaml"
    yaml_path.write_text("files:\n  - filename: a.wav\n    annotations: [\n")
    with pytest.raises(DataError, match=r"MACS.yaml:4: invalid YAML"):
        list(reader("macs").read(tree.root))
    yaml_path.write_text("files:\n  - filename: a.wav\n    annotations:\n      - annotator_id: 1\n        tags: []\n")
    with pytest.raises(DataError, match=r"files\[0\] \(a.wav\) annotations\[0\]: missing 'sentence'"):
        list(reader("macs").read(tree.root))


def test_prepare_reports_duplicate_ids(tmp_path, datasets_dir):
    tree = build_esc50(tmp_path, datasets_dir)
    entries = list(reader("esc50").read(tree.root))
    report = prepare(iter(entries + entries[:2]), dataset="esc50", root=tree.root, out=tmp_path / "d.jsonl",
                     progress=False)
    assert report.counts() == {"duplicate_id": 2, "missing_audio": 1} and report.written == 19
    assert [p["id"] for p in report.problems["duplicate_id"]] == [entries[0].id, entries[1].id]
