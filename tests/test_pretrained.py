"""Official checkpoints by name: cache, verified download from file:// links, offline errors, tables, CLI."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

import modbind
import modbind.pretrained as pretrained
from modbind.cli.main import cli
from modbind.errors import CheckpointError, ConfigError
from modbind.plugins import get_registry
from modbind.pretrained import PretrainedCheckpoint, resolve_checkpoint

REPO = Path(__file__).resolve().parents[1]
def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A small stand-in for a published checkpoint file, served through its file:// link."""
    path = tmp_path / "published" / "weights.bin"
    path.parent.mkdir()
    path.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    return path


def _entry(source: Path, **changes) -> PretrainedCheckpoint:
    fields = dict(name="test-weights", filename="weights.bin", page="https://example.invalid/weights",
                  urls=(source.as_uri(),), license="MIT", description="a test file",
                  size_bytes=source.stat().st_size, sha256=_sha256(source))
    return PretrainedCheckpoint(**{**fields, **changes})


def _files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


def test_absent_file_is_downloaded_verified_then_published(source, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    dest = cache / "some_plugin" / "weights.bin"
    real_publish = pretrained.publish

    def publish_checked(tmp: Path, path: Path, **kwargs):
        assert path == dest and not dest.exists(), "the target must appear only through the final rename"
        assert _sha256(tmp) == _sha256(source), "only the complete, verified file is published"
        return real_publish(tmp, path, **kwargs)

    monkeypatch.setattr(pretrained, "publish", publish_checked)
    table = {"test-weights": _entry(source)}
    resolved = resolve_checkpoint("test-weights", table, owner="some_plugin", cache_dir=cache, progress=False)
    assert resolved.path == dest and resolved.entry is table["test-weights"]
    assert dest.read_bytes() == source.read_bytes()
    assert _files(dest.parent) == {"weights.bin", "weights.bin.verified"}
    marker = json.loads((dest.parent / "weights.bin.verified").read_text())
    assert marker["sha256"] == _sha256(source) and marker["size"] == source.stat().st_size


def test_present_verified_file_is_used_without_download_or_rehash(source, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    dest = cache / "some_plugin" / "weights.bin"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(source.read_bytes())
    table = {"test-weights": _entry(source, urls=((tmp_path / "gone.bin").as_uri(),))}  # a download would fail
    assert resolve_checkpoint("test-weights", table, owner="some_plugin", cache_dir=cache, progress=False).path == dest

    def no_hashing(*args, **kwargs):
        raise AssertionError("an unchanged, verified file must not be hashed again")

    monkeypatch.setattr(pretrained, "_sha256_of", no_hashing)
    assert resolve_checkpoint("test-weights", table, owner="some_plugin", cache_dir=cache, progress=False).path == dest


def test_a_cached_file_changed_later_is_refused(source, tmp_path):
    cache = tmp_path / "cache"
    table = {"test-weights": _entry(source)}
    dest = resolve_checkpoint("test-weights", table, owner="p", cache_dir=cache, progress=False).path
    data = bytearray(dest.read_bytes())
    data[100] ^= 0xFF
    dest.write_bytes(bytes(data))
    os.utime(dest, ns=(1, 1))  # a new mtime: the remembered digest no longer applies
    with pytest.raises(CheckpointError, match="sha256") as err:
        resolve_checkpoint("test-weights", table, owner="p", cache_dir=cache, progress=False)
    assert str(dest) in str(err.value) and "delete it" in str(err.value)


def test_tampered_download_names_both_digests_and_leaves_nothing_in_the_cache(source, tmp_path):
    entry = _entry(source)
    data = bytearray(source.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes
    source.write_bytes(bytes(data))
    cache = tmp_path / "cache"
    with pytest.raises(CheckpointError) as err:
        resolve_checkpoint("test-weights", {"test-weights": entry}, owner="p", cache_dir=cache, progress=False)
    message = str(err.value)
    assert f"got sha256 {_sha256(source)}, expected the published {entry.sha256}" in message
    assert str(cache / "p" / "weights.bin") in message and len(message.splitlines()) == 1
    assert _files(cache / "p") == set(), "no checkpoint, marker or temporary file may remain"


@pytest.mark.parametrize("content, reason", [
    (b"\x00" * 100, "more than the published 10 bytes"),
    (b"  <!DOCTYPE html><html><body>sign in</body></html>", "web page"),
])
def test_oversized_downloads_and_web_pages_are_refused(tmp_path, content, reason):
    served = tmp_path / "served.bin"
    served.write_bytes(content)
    entry = _entry(served, sha256=None, size_bytes=10 if b"html" not in content else None)
    with pytest.raises(CheckpointError, match=reason):
        resolve_checkpoint("test-weights", {"test-weights": entry}, owner="p", cache_dir=tmp_path / "c", progress=False)
    assert _files(tmp_path / "c" / "p") == set()


@pytest.fixture
def http_server(source):
    """A loopback HTTP server: /good serves ``source``; /page a web page; /cut stops halfway; else 404."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    body = source.read_bytes()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            if self.path not in ("/good", "/page", "/cut"):
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/html" if self.path == "/page" else "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2] if self.path == "/cut" else body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_download_tries_links_in_order_and_keeps_only_the_good_file(source, tmp_path, http_server, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    entry = _entry(source, size_bytes=None, sha256=None,
                   urls=tuple(f"{http_server}/{path}" for path in ("missing", "page", "cut", "good")))
    cache = tmp_path / "cache"
    path = resolve_checkpoint("test-weights", {"test-weights": entry}, owner="p", cache_dir=cache, progress=True).path
    assert path.read_bytes() == source.read_bytes() and _files(cache / "p") == {"weights.bin"}
    path.unlink()
    failing = dataclasses.replace(entry, urls=entry.urls[:3])
    with pytest.raises(CheckpointError) as err:
        resolve_checkpoint("test-weights", {"test-weights": failing}, owner="p", cache_dir=cache, progress=False)
    message = str(err.value)
    assert "/missing: HTTP 404" in message and "/page: the server sent a web page" in message
    assert "/cut: " in message and str(cache / "p" / "weights.bin") in message
    assert _files(cache / "p") == set()


def test_unreachable_link_names_the_link_and_where_to_save_the_file(tmp_path, source):
    missing = tmp_path / "nowhere.bin"
    entry = _entry(source, urls=(missing.as_uri(),))
    with pytest.raises(CheckpointError) as err:
        resolve_checkpoint("test-weights", {"test-weights": entry}, owner="p", cache_dir=tmp_path / "c", progress=False)
    message = str(err.value)
    assert missing.as_uri() in message and str(tmp_path / "c" / "p" / "weights.bin") in message
    assert _files(tmp_path / "c" / "p") == set()


def test_offline_skips_network_links_but_still_reads_file_links(source, tmp_path, monkeypatch):
    monkeypatch.setenv("MODBIND_OFFLINE", "1")
    entry = _entry(source, urls=("https://example.invalid/weights.bin", source.as_uri()))
    path = resolve_checkpoint("test-weights", {"test-weights": entry}, owner="p", cache_dir=tmp_path / "c",
                              progress=False).path
    assert path.read_bytes() == source.read_bytes()  # the https link was never tried (tests refuse sockets)
    offline_only = _entry(source, urls=("https://example.invalid/weights.bin",))
    with pytest.raises(CheckpointError, match=r"downloads are off \(MODBIND_OFFLINE=1\)"):
        resolve_checkpoint("test-weights", {"test-weights": offline_only}, owner="p", cache_dir=tmp_path / "d")


@pytest.mark.parametrize("variables", [{"HF_HUB_OFFLINE": "1"}, {"HF_HUB_OFFLINE": "0", "MODBIND_OFFLINE": "1"}])
def test_offline_cli_gives_one_error_line_with_the_link_and_the_exact_path(tmp_path, variables):
    env = {**os.environ, "MODBIND_CACHE_DIR": str(tmp_path), **variables}
    result = subprocess.run([sys.executable, "-m", "modbind.cli.main", "checkpoints", "download",
                             "laion-clap-630k-audioset"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "https://huggingface.co/lukewys/laion_clap/resolve/" in lines[0]
    assert f"save it as {tmp_path / 'checkpoints' / 'audio_htsat' / '630k-audioset-best.pt'}" in lines[0]


def test_unknown_bare_name_lists_the_known_names_but_paths_stay_paths(tmp_path):
    plugin = get_registry().encoder("audio_beats")
    with pytest.raises(CheckpointError) as err:
        resolve_checkpoint("beats-iter3-plus-as2", plugin.pretrained, owner=plugin.name, cache_dir=tmp_path)
    assert "did you mean 'beats-iter3-plus-as2m'?" in str(err.value) and "beats-iter3-ft-as2m-cpt1" in str(err.value)
    missing = str(tmp_path / "my_weights.pt")
    assert resolve_checkpoint(missing, plugin.pretrained, owner=plugin.name).path == Path(missing)
    options = plugin.options({"checkpoint": missing})
    with pytest.raises(CheckpointError, match="checkpoint not found"):  # the loader's message, as before
        plugin.build_encoder(options)


def test_implied_options_fill_in_and_a_contradiction_names_both(fresh_registry):
    plugin = get_registry().encoder("audio_htsat")
    options = plugin.options({"checkpoint": "laion-clap-music-audioset"})
    assert (options.sample_rate, options.architecture) == (48000, "base")
    assert plugin.options({"checkpoint": "laion-clap-630k-audioset", "sample_rate": 48000.0}).sample_rate == 48000
    with pytest.raises(ConfigError) as err:
        plugin.options({"checkpoint": "laion-clap-630k-audioset", "sample_rate": 16000})
    assert "'sample_rate: 16000' contradicts checkpoint 'laion-clap-630k-audioset'" in str(err.value)
    assert "'sample_rate: 48000'" in str(err.value)
    result = CliRunner().invoke(cli, ["recipe", "validate", str(REPO / "recipes" / "htsat_basic.yaml"),
                                      "--set", "plugin.options.checkpoint=laion-clap-630k-audioset",
                                      "--set", "plugin.options.sample_rate=32000"])
    assert result.exit_code == 2 and "contradicts checkpoint" in result.output
    shown = CliRunner().invoke(cli, ["recipe", "show", str(REPO / "recipes" / "beats_basic.yaml"),
                                     "--set", "plugin.options.checkpoint=beats-iter3-ft-as2m-cpt1"])
    assert shown.exit_code == 0, shown.output
    assert yaml.safe_load(shown.output)["plugin"]["options"]["config"]["finetuned_model"] is True


def test_shipped_tables_are_complete_and_consistent():
    from modbind_audio_htsat.pretrained import CHECKPOINTS as HTSAT
    from modbind_audio_mae.pretrained import CHECKPOINTS as MAE

    names: list[str] = []
    for plugin_name, plugin in get_registry().encoders.items.items():
        for name, entry in plugin.pretrained.items():
            names.append(name)
            assert name == entry.name and entry.license and entry.description and entry.provenance
            assert entry.page.startswith("https://") and all(url.startswith("https://") for url in entry.urls)
            assert plugin.options({"checkpoint": name}).checkpoint == name  # implied options validate
    assert len(names) == len(set(names)), "checkpoint names must be unique across plugins"
    registry = get_registry()
    assert {"beats-iter3", "beats-iter3-plus-as20k", "beats-iter3-plus-as2m", "beats-iter3-plus-as2m-ft-as2m-cpt2",
            "htsat-audioset", "laion-clap-630k-audioset", "audiomae-vitb-as2m",
            "audiomae-vitb-as2m-ft-as2m"} <= set(names)
    assert registry.encoder("audio_htsat").pretrained is HTSAT and registry.encoder("audio_mae").pretrained is MAE
    assert all(MAE[name].options["num_heads"] == 12 for name in MAE)
    clap = [entry for name, entry in HTSAT.items() if name.startswith("laion-clap-")]
    assert clap and all(e.options["sample_rate"] == 48000 and e.options["short_clips"] == "repeatpad" for e in clap)
    assert {n for n, e in HTSAT.items() if e.options.get("mel_scale") == "htk"} == {n for n in HTSAT if "fusion" in n}


def test_shipped_recipes_name_their_checkpoints():
    named = 0
    for path in sorted((REPO / "recipes").glob("*.yaml")):
        assert "download the official weights first" not in path.read_text()
        plugin = yaml.safe_load(path.read_text())["plugin"]
        if "checkpoint" in plugin.get("options", {}):
            assert plugin["options"]["checkpoint"] in get_registry().encoder(plugin["name"]).pretrained, path.name
            named += 1
    assert named == 9, "every basic / expanded / LoRA recipe starts from a named official checkpoint"


@pytest.fixture
def tiny_beats_by_name(conformance_dir, monkeypatch, tmp_path):
    """The BEATs conformance checkpoint as a named table entry served from a file:// link, cache in tmp."""
    from modbind_audio_beats.plugin import BeatsPlugin

    fixture = conformance_dir / "beats" / "tiny_beats.pt"
    entry = _entry(fixture, name="test-tiny-beats", filename="tiny_beats.pt", options={"size": "tiny"})
    monkeypatch.setattr(BeatsPlugin, "pretrained", {**BeatsPlugin.pretrained, entry.name: entry})
    monkeypatch.setenv("MODBIND_CACHE_DIR", str(tmp_path / "cache"))
    return fixture, tmp_path / "cache" / "checkpoints" / "audio_beats" / "tiny_beats.pt"


def test_a_named_checkpoint_builds_the_same_encoder_as_its_file(tiny_beats_by_name):
    fixture, cached = tiny_beats_by_name
    plugin = get_registry().encoder("audio_beats")
    options = plugin.options({"checkpoint": "test-tiny-beats"})
    assert options.size == "tiny"
    by_name = plugin.build_encoder(options).state_dict()
    by_path = plugin.load_checkpoint(fixture, plugin.options({})).state_dict()
    assert cached.read_bytes() == fixture.read_bytes()
    assert by_name.keys() == by_path.keys() and all(torch.equal(by_name[k], by_path[k]) for k in by_name)


def test_checkpoints_command_lists_cached_state(tiny_beats_by_name, tmp_path):
    _, cached = tiny_beats_by_name
    damaged = cached.parent / "BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt"  # its size is published
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(b"truncated")

    def rows() -> dict[str, dict]:
        result = CliRunner().invoke(cli, ["checkpoints", "list", "--plugin", "audio_beats", "--json"])
        assert result.exit_code == 0, result.output
        return {row["name"]: row for row in json.loads(result.output)["checkpoints"]}

    before = rows()
    assert before["test-tiny-beats"]["cached"] == "no" and before["beats-iter3"]["cached"] == "no"
    assert before["beats-iter3-plus-as2m-ft-as2m-cpt2"]["cached"] == "damaged (size)"
    assert before["test-tiny-beats"]["path"] == str(cached)
    fetched = CliRunner().invoke(cli, ["checkpoints", "download", "test-tiny-beats", "--no-progress"])
    assert fetched.exit_code == 0 and fetched.output.strip() == f"test-tiny-beats: {cached}"
    assert rows()["test-tiny-beats"]["cached"] == "yes (sha256 verified)"
    table = CliRunner().invoke(cli, ["checkpoints"])
    line = next(line for line in table.output.splitlines() if line.startswith("audio_beats  test-tiny-beats "))
    assert "yes (sha256 verified)" in line and "audio_beats/tiny_beats.pt" in line and "MIT" in line


@pytest.mark.usefixtures("one_thread")
def test_align_starts_from_a_named_checkpoint_and_the_export_reloads(tiny_beats_by_name, tmp_path):
    from train_world import build_separating_anchor, captions, write_audio_world

    fixture, cached = tiny_beats_by_name
    texts = captions(8, seed=5)
    recipe = {
        "anchor": {"model": f"local-dir:{build_separating_anchor(tmp_path / 'anchor', texts)}", "pretrained": None},
        "plugin": {"name": "audio_beats", "options": {"checkpoint": "test-tiny-beats", "clip_seconds": 1.0}},
        "data": {"train": [{"manifest": str(write_audio_world(tmp_path / "audio", texts, seconds=1.0))}],
                 "num_workers": 0, "caption_cache": str(tmp_path / "captions")},
        "train": {"batch_size": 4, "max_steps": 1, "precision": "fp32", "optimizer": {"lr": 1e-4, "warmup_steps": 1}},
    }
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["align", "--recipe", str(recipe_file), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert cached.read_bytes() == fixture.read_bytes()
    card = json.loads((out / "export" / "card.json").read_text())
    assert card["plugin_options"]["checkpoint"] == "test-tiny-beats" and card["plugin_options"]["size"] == "tiny"
    model = modbind.load(out / "export")
    assert model.encode_audio(sorted((tmp_path / "audio").glob("*.wav"))[:2]).shape == (2, 32)
