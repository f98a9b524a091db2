"""``modbind data``: prepare, add-translations, overlap, filter and pack through the CLI and their modules."""

from __future__ import annotations

import json
import math
import tarfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from data_factories import build_audiocaps, build_clotho, build_esc50, build_wavcaps, write_audio
from modbind.cli.main import cli
from modbind.data.filter import CaptionConsistencyScorer, keep_count, score_manifest, select_pairs
from modbind.data.manifest import ManifestEntry, read_manifest, write_manifest
from modbind.errors import DataError

REPO = Path(__file__).resolve().parents[1]


def invoke(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def audiocaps_test(tmp_path, datasets_dir):
    tree = build_audiocaps(tmp_path, datasets_dir)
    out = tmp_path / "ac_test.jsonl"
    result = invoke("data", "prepare", "audiocaps", "--root", tree.root, "--split", "test", "--out", out, "--no-progress")
    assert result.exit_code == 0, result.output
    return out


def test_readers_command_lists_datasets():
    result = invoke("data", "readers")
    assert result.exit_code == 0
    for name in ("audiocaps", "clotho", "wavcaps", "auto_acd", "audiosetcaps", "macs", "esc50", "urbansound8k",
                 "vggsound"):
        assert f"\n{name} " in "\n" + result.output


def test_prepare_cli_writes_manifest_and_report(audiocaps_test):
    entries = read_manifest(audiocaps_test)
    assert [e.id for e in entries] == ["Y7fmOlUlwoNg_20", "Y6BJ455B1aAs_0"]
    assert all(len(e.captions["en"]) == 5 for e in entries)
    assert entries[0].path == "AudioCaps/waveforms/test/Y7fmOlUlwoNg.wav"
    report = json.loads((audiocaps_test.parent / "ac_test.report.json").read_text())
    # The help names the file that is written: --out train.jsonl -> train.report.json.
    help_text = " ".join(invoke("data", "prepare", "--help").output.split())
    assert "--out train.jsonl writes train.report.json" in help_text
    assert report["counts"] == {"missing_audio": 1}
    assert report["problems"]["missing_audio"][0]["id"] == "YGOD8Bt5LfDE_100"


def test_prepare_cli_errors_are_one_line(tmp_path, datasets_dir):
    result = CliRunner().invoke(cli, ["data", "prepare", "audiocap", "--root", str(tmp_path), "--out", "x.jsonl"])
    assert result.exit_code == 2 and "did you mean 'audiocaps'" in result.output
    tree = build_audiocaps(tmp_path, datasets_dir)
    bad = tree.root / "dataset/test.csv"
    bad.write_text(bad.read_text().replace("103548,6BJ455B1aAs,0,", "103548,6BJ455B1aAs,zero,"))
    result = CliRunner().invoke(cli, ["data", "prepare", "audiocaps", "--root", str(tree.root), "--split", "test",
                                      "--out", str(tmp_path / "t.jsonl")])
    assert result.exit_code == 2
    assert "test.csv:3: start_time 'zero' is not a whole number; fix column 'start_time'" in result.output


def test_add_translations_by_caption_id_lands_at_the_right_positions(audiocaps_test, tmp_path):
    entries = read_manifest(audiocaps_test)
    ids = [cid for e in entries for cid in e.meta["caption_ids"]]
    pt = tmp_path / "pt.csv"
    pt.write_text("caption_id,text\n" + "".join(f'{cid},"pt, {cid}"\n' for cid in reversed(ids)) + "999999,extra\n")
    result = invoke("data", "add-translations", audiocaps_test, "pt", pt)
    assert result.exit_code == 0, result.output
    assert "10 of 11 caption translations matched; 1 keys not in the manifest; 0 left untranslated" in result.output
    de = tmp_path / "de.jsonl"
    de.write_text("".join(json.dumps({"caption_id": cid, "text": f"de {cid}"}) + "\n" for cid in ids[1:]))
    result = invoke("data", "add-translations", audiocaps_test, "de", de)
    assert "1 left untranslated" in result.output
    merged = read_manifest(audiocaps_test)
    first = merged[0]
    assert first.captions["pt"] == [f"pt, {cid}" for cid in first.meta["caption_ids"]]
    assert first.captions["de"][0] == "" and first.captions["de"][1] == f"de {first.meta['caption_ids'][1]}"
    assert first.captions_in("de") == [f"de {c}" for c in first.meta["caption_ids"][1:]]
    report = json.loads((audiocaps_test.parent / "ac_test.translations.de.json").read_text())
    assert report["untranslated"] == [ids[0]]
    pt_report = json.loads((audiocaps_test.parent / "ac_test.translations.pt.json").read_text())
    assert pt_report["unmatched_keys"] == ["999999"]


def test_label_translations_and_bad_files(tmp_path, datasets_dir):
    tree = build_esc50(tmp_path, datasets_dir)
    out = tmp_path / "esc.jsonl"
    assert invoke("data", "prepare", "esc50", "--root", tree.root, "--out", out, "--no-progress").exit_code == 0
    labels = tmp_path / "labels_pt.csv"
    labels.write_text("label,text\ndog,cão\nchirping birds,pássaros cantando\nthunderstorm,trovoada\n")
    translated_out = tmp_path / "esc_pt.jsonl"
    result = invoke("data", "add-translations", out, "pt", labels, "--out", translated_out)
    assert result.exit_code == 0, result.output
    entries = {e.id: e for e in read_manifest(translated_out)}
    assert entries["1-100032-A-0.wav"].labels == {"en": ["dog"], "pt": ["cão"]}
    assert entries["1-100038-A-14.wav"].labels["pt"] == ["pássaros cantando"]
    assert "vacuum cleaner" in json.loads((tmp_path / "esc_pt.translations.pt.json").read_text())["untranslated"]
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"caption_id": "1", "text": "a"}\n{"caption_id": "2", "text": \n')
    result = CliRunner().invoke(cli, ["data", "add-translations", str(out), "pt", str(broken)])
    assert result.exit_code == 2 and "broken.jsonl:2: invalid JSON" in result.output
    nokey = tmp_path / "nokey.csv"
    nokey.write_text("foo,text\n1,a\n")
    result = CliRunner().invoke(cli, ["data", "add-translations", str(out), "pt", str(nokey)])
    assert result.exit_code == 2 and "needs a key column" in result.output
    result = CliRunner().invoke(cli, ["data", "add-translations", str(out), "en", str(labels)])
    assert result.exit_code == 2 and "'en' holds the original captions" in result.output


def test_overlap_by_youtube_id_path_and_blacklist(audiocaps_test, tmp_path, datasets_dir):
    evaluation = read_manifest(audiocaps_test)
    train = [
        ManifestEntry(id="audioset_sl/Y7fmOlUlwoNg", path="somewhere/Y7fmOlUlwoNg.flac", captions={"en": ["x"]},
                      meta={"youtube_id": "7fmOlUlwoNg"}),
        ManifestEntry(id="copy", path=evaluation[1].path, captions={"en": ["y"]}),
        ManifestEntry(id="Y6BJ455B1aAs_0", path="other.wav", captions={"en": ["z"]}),
        ManifestEntry(id="clean", path="clean.wav", captions={"en": ["w"]}, meta={"youtube_id": "vfY_TJq7n_U"}),
        ManifestEntry(id="fine", path="fine.wav", captions={"en": ["v"]}, meta={"youtube_id": "aaaaaaaaaaa"}),
    ]
    train_path = tmp_path / "train.jsonl"
    write_manifest(train, train_path)
    cleaned = tmp_path / "train.clean.jsonl"
    report_file = tmp_path / "overlap.json"
    blacklist = datasets_dir / "WavCaps/json_files/blacklist/blacklist_exclude_test_ac.json"
    result = invoke("data", "overlap", train_path, audiocaps_test, "--blacklist", blacklist, "--out", cleaned,
                    "--report", report_file)
    assert result.exit_code == 0, result.output
    assert "3 training clips overlap (1 by id, 1 by path, 1 by youtube_id)" in result.output
    assert [e.id for e in read_manifest(cleaned)] == ["fine"]
    report = json.loads(report_file.read_text())
    assert report["pairs"]["youtube_id"] == [["audioset_sl/Y7fmOlUlwoNg", "Y7fmOlUlwoNg_20"]]
    assert report["pairs"]["path"] == [["copy", "Y6BJ455B1aAs_0"]]
    assert sorted(report["removed"]) == ["Y6BJ455B1aAs_0", "audioset_sl/Y7fmOlUlwoNg", "clean", "copy"]


def test_overlap_finds_a_shared_file_of_any_modality(tmp_path):
    """A training entry whose depth map is an evaluation entry's depth map overlaps, whatever its audio."""
    evaluation = [ManifestEntry(id="e1", path="eval/1.wav", captions={"en": ["a"]}, items={"depth": "maps/1.png"}),
                  ManifestEntry(id="e2", path="eval/2.wav", captions={"en": ["b"]}, items={"depth": "maps/2.png"})]
    train = [ManifestEntry(id="t1", path="train/1.wav", captions={"en": ["c"]}, items={"depth": "maps/2.png"}),
             ManifestEntry(id="t2", path="train/2.wav", captions={"en": ["d"]}, items={"depth": "maps/3.png"}),
             ManifestEntry(id="t3", path="maps/1.png", captions={"en": ["e"]})]  # a depth-only manifest row
    eval_path, train_path = tmp_path / "eval.jsonl", tmp_path / "train.jsonl"
    write_manifest(evaluation, eval_path)
    write_manifest(train, train_path)
    report_file = tmp_path / "overlap.json"
    result = invoke("data", "overlap", train_path, eval_path, "--report", report_file)
    assert result.exit_code == 0, result.output
    assert json.loads(report_file.read_text())["pairs"]["path"] == [["t1", "e2"], ["t3", "e1"]]


class FixedScorer:
    """Scores are given per caption text; counts calls so resumption can be checked."""

    identity = "fixed-v1"

    def __init__(self, table, fail_after=None):
        self.table, self.calls, self.fail_after = table, 0, fail_after

    def score_entries(self, entries, language):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        return [[self.table.get(c, float("nan")) for c in e.captions[language]] for e in entries]


def scored_entries(n_entries=20, per_entry=3, seed=0):
    rng = np.random.default_rng(seed)
    entries, table = [], {}
    for k in range(n_entries):
        captions = [f"clip {k} caption {j}" for j in range(per_entry)]
        for c in captions:
            table[c] = float(rng.normal())
        entries.append(ManifestEntry(id=f"c{k}", path=f"{k}.wav", captions={"en": captions, "pt": [c + " pt" for c in captions]},
                                     meta={"caption_ids": [f"{k}.{j}" for j in range(per_entry)]}))
    return entries, table


@pytest.mark.parametrize("drop", [0.0, 0.1, 0.2, 0.25, 0.5])
def test_filter_keeps_exactly_the_highest_scoring_fraction(tmp_path, drop):
    entries, table = scored_entries()
    scores = score_manifest(entries, FixedScorer(table), tmp_path / "s.jsonl", batch_size=7, progress=False)
    result = select_pairs(entries, scores, drop)
    kept = [(e.id, c) for e in result.entries for c in e.captions["en"]]
    expected_count = 60 - math.floor(drop * 60 + 0.5)
    assert len(kept) == result.kept_pairs == expected_count
    best = sorted(table.values(), reverse=True)[:expected_count]
    assert sorted((table[c] for _, c in kept), reverse=True) == best
    assert min(table[c] for _, c in kept) == pytest.approx(result.threshold)
    for entry in result.entries:  # translations and caption ids follow the kept English captions
        assert entry.captions["pt"] == [c + " pt" for c in entry.captions["en"]]
        assert entry.meta["caption_ids"] == [f"{entry.id[1:]}.{c.rsplit(' ', 1)[1]}" for c in entry.captions["en"]]


def test_filter_ties_unscorable_pairs_and_bad_drop():
    entries = [ManifestEntry(id=f"e{k}", path="a.wav", captions={"en": [f"t{k}"]}) for k in range(4)]
    result = select_pairs(entries, [[1.0], [1.0], [float("nan")], [0.5]], 0.5)
    assert [e.id for e in result.entries] == ["e0", "e2"]  # tie broken by manifest order; NaN kept
    assert result.unscored_pairs == 1 and result.dropped_entries == 2
    with pytest.raises(DataError, match=r"--drop must be in \[0, 1\)"):
        keep_count(10, 1.0)


def test_scoring_resumes_after_interruption(tmp_path):
    entries, table = scored_entries(10, 2)
    side = tmp_path / "scores.jsonl"
    with pytest.raises(KeyboardInterrupt):
        score_manifest(entries, FixedScorer(table, fail_after=2), side, batch_size=3, progress=False)
    resumed = FixedScorer(table)
    scores = score_manifest(entries, resumed, side, batch_size=3, progress=False)
    assert resumed.calls == 2  # 6 of 10 clips were saved before the interruption; 4 left = 2 batches of 3
    assert scores == [[table[c] for c in e.captions["en"]] for e in entries]

    class OtherScorer(FixedScorer):
        identity = "other"

    with pytest.raises(DataError, match="holds scores from scorer 'fixed-v1'"):
        score_manifest(entries, OtherScorer(table), side, progress=False)


def test_caption_consistency_scorer_uses_other_captions_or_source_metadata():
    vectors = {"dog barks": [1, 0], "a dog barking": [0.9, 0.1], "piano music": [0, 1],
               "rain": [0.2, 1], "Heavy rain and wind": [0, 1]}
    scorer = CaptionConsistencyScorer(lambda texts: np.array([vectors[t] for t in texts], dtype=float), "toy")
    multi = ManifestEntry(id="m", path="m.wav", captions={"en": ["dog barks", "a dog barking", "piano music"]})
    single = ManifestEntry(id="s", path="s.wav", captions={"en": ["rain"]}, meta={"description": "Heavy rain and wind"})
    alone = ManifestEntry(id="a", path="a.wav", captions={"en": ["piano music"]})
    [m, s, a] = scorer.score_entries([multi, single, alone], "en")
    assert m[2] < min(m[0], m[1])  # the odd caption out scores lowest
    assert s[0] == pytest.approx(1 / math.sqrt(1.04))
    assert math.isnan(a[0])


def test_pack_cli_writes_shards(tmp_path, datasets_dir):
    tree = build_wavcaps(tmp_path, datasets_dir)
    manifest = tmp_path / "wc.jsonl"
    assert invoke("data", "prepare", "wavcaps", "--root", tree.root, "--out", manifest, "--no-progress").exit_code == 0
    result = invoke("data", "pack", manifest, "--out", tmp_path / "shards", "--recipe", REPO / "recipes/htsat_basic.yaml",
                    "--set", "plugin.options.checkpoint=null", "--set", "plugin.options.sample_rate=48000",
                    "--clips-per-shard", 3, "--no-progress")
    assert result.exit_code == 0, result.output
    assert "7 clips in 3 shards (pcm16, plugin audio_htsat)" in result.output
    header = json.loads(tarfile.open(tmp_path / "shards" / "shard-000000.tar").extractfile("0000000000.json").read())
    assert header["meta"]["sample_rate"] == 48000  # the recipe's rate, with its override: one source of truth
    result = CliRunner().invoke(cli, ["data", "pack", str(manifest), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "--recipe FILE" in result.output


@pytest.mark.slow
def test_filter_cli_with_an_exported_model(tmp_path, datasets_dir):
    """End to end: a real (untrained, tiny) exported model scores WavCaps pairs; the top ones are kept."""
    import torch

    import modbind
    from modbind.anchor import build_tiny_openclip
    from modbind.config import AnchorConfig

    tree = build_wavcaps(tmp_path, datasets_dir)
    manifest = tmp_path / "wc.jsonl"
    assert invoke("data", "prepare", "wavcaps", "--root", tree.root, "--out", manifest, "--no-progress").exit_code == 0
    entries = read_manifest(manifest)
    texts = [c for e in entries for c in e.captions["en"]]
    anchor_dir = build_tiny_openclip(tmp_path / "anchor", texts, embed_dim=16, text_layers=1, vision_layers=1)
    anchor = AnchorConfig(model=f"local-dir:{anchor_dir}", pretrained=None)
    modbind.untrained("audio_htsat", {"architecture": "tiny", "clip_seconds": 1.0}, anchor).save(tmp_path / "model")

    out = tmp_path / "wc.f03.jsonl"
    result = invoke("data", "filter", manifest, "--drop", 0.3, "--scorer", tmp_path / "model", "--out", out,
                    "--batch-size", 4, "--no-progress")
    assert result.exit_code == 0, result.output
    model = modbind.load(tmp_path / "model")
    clips = model.encode([tmp_path / e.path for e in entries])
    captions = model.encode_text(texts)
    scores = (clips * captions).sum(-1)
    top = torch.argsort(scores, descending=True)[:5].tolist()  # 7 pairs, drop round(2.1) = 2
    assert sorted(e.id for e in read_manifest(out)) == sorted(entries[k].id for k in top)
    assert (tmp_path / "wc.f03.scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "kept 5 of 7 scored pairs" in result.output

    out_text = tmp_path / "wc.cc.jsonl"
    result = invoke("data", "filter", manifest, "--drop", 0.5, "--mode", "caption-caption", "--anchor",
                    f"local-dir:{anchor_dir}", "--out", out_text, "--no-progress")
    assert result.exit_code == 0, result.output
    assert "kept 3 of 6 scored pairs" in result.output  # FreeSound '156' has no description: kept unscored
    assert "freesound/156" in {e.id for e in read_manifest(out_text)}


def test_prepare_refuses_metadata_file_names_that_leave_the_dataset(tmp_path, datasets_dir, monkeypatch):
    import soundfile

    tree = build_clotho(tmp_path / "data", datasets_dir)
    secret = tmp_path / "outside" / "secret.wav"
    write_audio(secret)
    captions = tree.root / "clotho_captions_development.csv"
    lines = captions.read_text(encoding="utf-8").splitlines()
    lines.insert(2, "../../../outside/secret.wav,a,b,c,d,e")
    captions.write_text("\n".join(lines) + "\n", encoding="utf-8")
    opened: list[str] = []
    real_info = soundfile.info
    monkeypatch.setattr(soundfile, "info", lambda path, *a, **k: opened.append(str(path)) or real_info(path, *a, **k))
    out = tree.root / "train.jsonl"
    result = CliRunner().invoke(cli, ["data", "prepare", "clotho", "--root", str(tree.root), "--split", "train",
                                      "--out", str(out), "--no-progress"])
    assert result.exit_code == 2, result.output
    assert (f"Error: {captions}:3: path 'development/../../../outside/secret.wav' leaves the data root"
            in result.output)
    assert not out.exists() and not any("secret" in path for path in opened)


def test_prepare_writes_inside_the_dataset_or_absolute_paths_only_when_allowed(tmp_path, datasets_dir):
    tree = build_audiocaps(tmp_path, datasets_dir)
    beside = tmp_path / "manifests" / "test.jsonl"
    args = ["data", "prepare", "audiocaps", "--root", str(tree.root), "--split", "test", "--out", str(beside),
            "--no-progress"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "lie outside" in result.output and "--allow-absolute-paths" in result.output
    assert invoke(*args, "--allow-absolute-paths").exit_code == 0
    paths = [Path(e.path) for e in read_manifest(beside)]
    assert paths and all(p.is_absolute() and p.is_file() for p in paths)


def write_outside_manifest(folder: Path, path: str) -> Path:
    """A manifest of two generated clips whose second line names ``path``."""
    write_audio(folder / "a.wav")
    entries = [ManifestEntry(id="a", path="a.wav", captions={"en": ["a tone"]}),
               ManifestEntry(id="b", path=path, captions={"en": ["a secret"]})]
    write_manifest(entries, folder / "m.jsonl")
    return folder / "m.jsonl"


def test_pack_refuses_paths_outside_the_root(tmp_path):
    secret = write_audio(tmp_path / "outside" / "secret.wav")
    for path, message in (("../outside/secret.wav", "m.jsonl:2: path '../outside/secret.wav' leaves the data root"),
                          (str(secret), "m.jsonl:2: absolute path")):
        manifest = write_outside_manifest(tmp_path / "data", path)
        out = tmp_path / "shards"
        result = CliRunner().invoke(cli, ["data", "pack", str(manifest), "--out", str(out), "--plugin", "audio_beats",
                                          "--no-progress"])
        assert result.exit_code == 2 and message in result.output, result.output
        assert not out.exists()
    result = invoke("data", "pack", manifest, "--out", out, "--plugin", "audio_beats", "--no-progress",
                    "--allow-absolute-paths")
    assert result.exit_code == 0 and "2 clips in 1 shards" in result.output, result.output


def test_filter_scorer_refuses_paths_outside_the_root(tmp_path):
    from modbind.data.filter import AudioCaptionScorer
    from modbind.errors import UnsafePathError

    entry = ManifestEntry(id="x", path="../secret.wav", captions={"en": ["a tone"]})
    scorer = AudioCaptionScorer(model=None, root=tmp_path, identity="test")
    with pytest.raises(UnsafePathError, match=r"entry 'x': path '../secret.wav' leaves the data root"):
        scorer.score_entries([entry], "en")
