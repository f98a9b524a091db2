"""The caption-embedding cache: exact, content-addressed, resumable, shareable, and free when warm."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from modbind.config import AnchorConfig
from modbind.errors import ConfigError, DataError

CAPTIONS = [
    "a dog barks loudly",
    "rain falls on a tin roof",
    "um cão late alto",
    "Regen fällt auf ein Blechdach",
    "собака громко лает",
    "дождь стучит по крыше",
    "狗在大声叫",
    "雨が屋根に降る",
    "a dog barks loudly",  # duplicates are fine
]




@pytest.fixture(scope="module")
def anchor_config(tmp_path_factory: pytest.TempPathFactory) -> AnchorConfig:
    from modbind.anchor import build_tiny_openclip

    path = build_tiny_openclip(tmp_path_factory.mktemp("anchor") / "tiny", CAPTIONS, seed=3)
    return AnchorConfig(model=f"local-dir:{path}", pretrained=None)


@pytest.fixture(scope="module")
def anchor(anchor_config: AnchorConfig):
    from modbind import load_anchor

    return load_anchor(anchor_config)


class CountingAnchor:
    """Wraps an anchor, counting text-tower forward passes and which texts were embedded."""

    def __init__(self, anchor, fail_after_calls: int | None = None):
        self.inner = anchor
        self.identity, self.dim, self.logit_scale = anchor.identity, anchor.dim, anchor.logit_scale
        self.embedded: list[str] = []
        self.forward_calls = 0
        self.fail_after_calls = fail_after_calls

    def encode_text(self, texts, batch_size=256, progress=False):
        if self.fail_after_calls is not None and len(self.embedded) and self.fail_after_calls <= 0:
            raise KeyboardInterrupt("simulated interruption")
        if self.fail_after_calls is not None:
            self.fail_after_calls -= 1
        handle = self.inner.model.text.register_forward_hook(lambda *_: self._count())
        try:
            out = self.inner.encode_text(texts, batch_size=batch_size, progress=progress)
        finally:
            handle.remove()
        self.embedded.extend(texts)
        return out

    def _count(self) -> None:
        self.forward_calls += 1


def test_cache_returns_what_encode_text_returns(anchor, tmp_path: Path) -> None:
    from modbind.anchor import CaptionCache

    cache = CaptionCache(tmp_path, anchor.identity, shard_rows=3)
    cache.ensure(CAPTIONS, lambda: anchor, batch_size=2, progress=False)
    assert len(cache) == len(set(CAPTIONS)) and cache.dim == anchor.dim
    assert cache.logit_scale == pytest.approx(anchor.logit_scale)  # training needs no anchor when warm
    assert len(list(cache.folder.glob("shard-*.safetensors"))) == 3  # 8 captions, 3 per shard
    query = list(reversed(CAPTIONS))
    torch.testing.assert_close(cache.get(query), anchor.encode_text(query), atol=1e-6, rtol=0)
    assert "собака громко лает" in cache and "never embedded" not in cache


def test_warm_cache_runs_the_text_tower_zero_times(anchor, tmp_path: Path) -> None:
    from modbind.anchor import CaptionCache

    cold = CountingAnchor(anchor)
    CaptionCache(tmp_path, anchor.identity).ensure(CAPTIONS, lambda: cold, progress=False)
    assert cold.forward_calls > 0, "the counter must see forward passes when the cache is cold"
    loads: list[int] = []
    warm = CountingAnchor(anchor)

    def loader():
        loads.append(1)
        return warm

    fresh = CaptionCache(tmp_path, anchor.identity)
    fresh.ensure(CAPTIONS, loader, progress=False)
    fresh.get(CAPTIONS)
    assert loads == [] and warm.forward_calls == 0


def test_only_missing_captions_are_embedded(anchor, tmp_path: Path) -> None:
    from modbind.anchor import CaptionCache

    counting = CountingAnchor(anchor)
    cache = CaptionCache(tmp_path, anchor.identity)
    cache.ensure(CAPTIONS[:4], lambda: counting, progress=False)
    cache.ensure(CAPTIONS, lambda: counting, progress=False)
    assert sorted(counting.embedded) == sorted(set(CAPTIONS))


def test_interrupted_build_resumes_from_written_shards(anchor, tmp_path: Path) -> None:
    from modbind.anchor import CaptionCache

    unique = list(dict.fromkeys(CAPTIONS))
    flaky = CountingAnchor(anchor, fail_after_calls=2)
    with pytest.raises(KeyboardInterrupt):
        CaptionCache(tmp_path, anchor.identity, shard_rows=3).ensure(CAPTIONS, lambda: flaky, progress=False)
    assert len(flaky.embedded) == 6
    assert not list(tmp_path.rglob("*.tmp")), "no half-written files may remain"
    resumed = CountingAnchor(anchor)
    cache = CaptionCache(tmp_path, anchor.identity, shard_rows=3)
    cache.ensure(CAPTIONS, lambda: resumed, progress=False)
    assert sorted(resumed.embedded) == sorted(set(unique) - set(flaky.embedded))
    torch.testing.assert_close(cache.get(unique), anchor.encode_text(unique), atol=1e-6, rtol=0)


def test_cache_survives_a_process_restart_without_loading_open_clip(anchor, tmp_path: Path) -> None:
    from modbind.anchor import CaptionCache

    CaptionCache(tmp_path, anchor.identity).ensure(CAPTIONS, lambda: anchor, progress=False)
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from modbind.anchor.cache import CaptionCache\n"
        "args = json.loads(sys.argv[1])\n"
        "cache = CaptionCache(Path(args['root']), args['identity'])\n"
        "values = cache.get(args['texts']).tolist()\n"
        "print(json.dumps({'values': values, 'open_clip_loaded': 'open_clip' in sys.modules}))\n"
    )
    payload = json.dumps({"root": str(tmp_path), "identity": anchor.identity, "texts": CAPTIONS})
    done = subprocess.run([sys.executable, "-c", script, payload], capture_output=True, text=True, check=True,
                          env={**os.environ, "MODBIND_DISABLE_PLUGIN_AUTOLOAD": "1"})
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["open_clip_loaded"] is False
    torch.testing.assert_close(torch.tensor(result["values"]), anchor.encode_text(CAPTIONS), atol=1e-6, rtol=0)


class _CaptionDataset(torch.utils.data.Dataset):
    def __init__(self, cache, texts):
        self.cache, self.texts = cache, texts

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.cache.get([self.texts[i]])[0]


def test_dataloader_workers_share_the_cache(anchor, tmp_path: Path) -> None:
    from modbind.anchor import CaptionCache

    cache = CaptionCache(tmp_path, anchor.identity, shard_rows=4)
    cache.ensure(CAPTIONS, lambda: anchor, progress=False)
    loader = torch.utils.data.DataLoader(_CaptionDataset(cache, CAPTIONS), batch_size=3, num_workers=2)
    got = torch.cat(list(loader))
    torch.testing.assert_close(got, cache.get(CAPTIONS), atol=0, rtol=0)


def test_missing_captions_raise_a_clear_error(anchor, tmp_path: Path) -> None:
    from modbind.anchor import CaptionCache, CaptionCacheMiss

    cache = CaptionCache(tmp_path, anchor.identity)
    cache.ensure(CAPTIONS[:2], lambda: anchor, progress=False)
    with pytest.raises(CaptionCacheMiss, match=r"lacks 1 of 3 captions \(e.g. 'um cão late alto'\).*embed-text"):
        cache.get(CAPTIONS[:3])
    assert isinstance(CaptionCacheMiss("x"), DataError)


def test_keys_are_anchor_identity_plus_exact_text(anchor, tmp_path: Path) -> None:
    from modbind.anchor import CaptionCache

    cache = CaptionCache(tmp_path, anchor.identity)
    cache.ensure(["a dog barks loudly"], lambda: anchor, progress=False)
    assert "a dog barks loudly " not in cache and "A dog barks loudly" not in cache
    other = CaptionCache(tmp_path, anchor.identity + "-other-weights")
    assert "a dog barks loudly" not in other and other.folder != cache.folder
    with pytest.raises(ConfigError, match="is for anchor"):
        other.ensure(["a dog barks loudly"], lambda: anchor, progress=False)


def test_corrupt_shard_is_named(anchor, tmp_path: Path) -> None:
    from modbind.anchor import CaptionCache

    cache = CaptionCache(tmp_path, anchor.identity)
    cache.ensure(CAPTIONS[:2], lambda: anchor, progress=False)
    shard = next(cache.folder.glob("shard-*.safetensors"))
    shard.write_bytes(b"\x05\x00")
    with pytest.raises(DataError, match=shard.name):
        CaptionCache(tmp_path, anchor.identity).get(CAPTIONS[:1])


def test_embed_text_cli_builds_the_cache_for_a_manifest(anchor_config: AnchorConfig, anchor, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from modbind.anchor import CaptionCache
    from modbind.cli.anchor_cache import embed_text

    manifest = tmp_path / "train.jsonl"
    rows = [
        {"id": "1", "path": "1.wav", "captions": {"en": [CAPTIONS[0]], "ru": [CAPTIONS[4]]}, "labels": {"en": ["dog"]}},
        {"id": "2", "path": "2.wav", "captions": {"en": [CAPTIONS[1]], "ja": [CAPTIONS[7]]}},
    ]
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    args = [str(manifest), "--anchor", anchor_config.model, "--cache", str(tmp_path / "cache"), "--no-progress"]
    first = CliRunner().invoke(embed_text, args + ["--language", "en"])
    assert first.exit_code == 0, first.output
    assert "2 distinct texts (2 newly embedded)" in first.output
    second = CliRunner().invoke(embed_text, args + ["--language", "all"])
    assert second.exit_code == 0, second.output
    assert "4 distinct texts (2 newly embedded)" in second.output
    cache = CaptionCache(tmp_path / "cache", anchor.identity)
    texts = [CAPTIONS[0], CAPTIONS[1], CAPTIONS[4], CAPTIONS[7]]
    torch.testing.assert_close(cache.get(texts), anchor.encode_text(texts), atol=1e-6, rtol=0)
    nothing = CliRunner().invoke(embed_text, args + ["--language", "sw"])
    assert nothing.exit_code != 0 and "no captions in language(s) sw" in str(nothing.exception)


def test_embed_text_fills_the_cache_align_reads_with_the_same_recipe(anchor_config: AnchorConfig, anchor,
                                                                     tmp_path: Path) -> None:
    """Without data.caption_cache both default to caption-cache/ beside output.dir, so pre-embedding is no guess."""
    from click.testing import CliRunner

    from modbind.anchor import CaptionCache
    from modbind.cli.anchor_cache import embed_text
    from modbind.recipes import load_recipe

    manifest = tmp_path / "train.jsonl"
    manifest.write_text(json.dumps({"id": "1", "path": "1.wav", "captions": {"en": [CAPTIONS[0]]}}) + "\n")
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(f"anchor: {{model: 'local-dir:{anchor_config.model[len('local-dir:'):]}', pretrained: null}}\n"
                           f"output: {{dir: '{tmp_path / 'runs' / 'first'}'}}\n")
    done = CliRunner().invoke(embed_text, [str(manifest), "--recipe", str(recipe_file), "--no-progress"])
    assert done.exit_code == 0, done.output
    recipe = load_recipe(recipe_file)
    assert recipe.caption_cache_dir == tmp_path / "runs" / "caption-cache"
    assert load_recipe(recipe_file, [f"data.caption_cache={tmp_path / 'c'}"]).caption_cache_dir == tmp_path / "c"
    torch.testing.assert_close(CaptionCache(recipe.caption_cache_dir, anchor.identity).get(CAPTIONS[:1]),
                               anchor.encode_text(CAPTIONS[:1]), atol=1e-6, rtol=0)


def test_concurrent_builders_embed_each_caption_once(anchor, tmp_path: Path) -> None:
    """Two builders at once (e.g. two ranks both calling ensure): one builds, the other finds it done."""
    import threading

    from modbind.anchor import CaptionCache

    builders = [CountingAnchor(anchor), CountingAnchor(anchor)]
    errors: list[BaseException] = []

    def build(counting: CountingAnchor) -> None:
        try:
            CaptionCache(tmp_path, anchor.identity, shard_rows=2).ensure(CAPTIONS, lambda: counting, progress=False)
        except BaseException as err:  # noqa: BLE001 - surfaced below
            errors.append(err)

    threads = [threading.Thread(target=build, args=(b,)) for b in builders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(builders[0].embedded + builders[1].embedded) == sorted(set(CAPTIONS))
    assert len(CaptionCache(tmp_path, anchor.identity)) == len(set(CAPTIONS))
