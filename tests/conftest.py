"""Fixtures shared by the whole suite: where the test data lives, no network, a clean registry.

The data the tests read is committed under ``tests/fixtures/``: ``conformance/<model>/`` (official-format
checkpoints and the official code's outputs) and ``datasets/<name>/`` (real metadata excerpts); each folder's
README says where it came from. A fresh clone therefore passes on its own. ``MODBIND_SHARED_DIR`` is an
optional override: a folder with the same ``conformance/`` and ``datasets/`` layout (e.g. a regenerated set)
that the suite reads instead.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Nothing in the suite may reach the network: hub libraries fail fast instead of downloading.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


FIXTURES = REPO / "tests" / "fixtures"


def _is_loopback(address: object) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    return isinstance(host, str) and (host in ("localhost", "::1") or host.startswith("127."))


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection beyond this machine fails the test (loopback stays open for gloo ranks)."""
    real_connect = socket.socket.connect

    def refuse(sock: socket.socket, address: object):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
            raise AssertionError(f"network access attempted: {address}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture
def one_thread(monkeypatch: pytest.MonkeyPatch):
    """Tiny models run fastest single-threaded (and do not fight other processes for the shared cores).

    ``OMP_NUM_THREADS=1`` keeps ``align`` at one thread too (it chooses its own count otherwise).
    """
    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """``tests/fixtures``, or the folder $MODBIND_SHARED_DIR names."""
    override = os.environ.get("MODBIND_SHARED_DIR")
    root = Path(override) if override else FIXTURES
    if not ((root / "conformance").is_dir() and (root / "datasets").is_dir()):
        hint = "unset MODBIND_SHARED_DIR to use tests/fixtures" if override else "the checkout is incomplete"
        pytest.fail(f"test fixtures not found: {root} has no conformance/ and datasets/ folders ({hint})")
    return root


@pytest.fixture(scope="session")
def conformance_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "conformance"


@pytest.fixture(scope="session")
def datasets_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "datasets"


@pytest.fixture
def fresh_registry():
    """Rebuild the plugin registry around a test that installs or removes plugins."""
    from modbind.plugins import reset_registry

    reset_registry()
    yield
    reset_registry()


IMU_PLUGIN_SOURCE = REPO / "tests" / "third_party" / "modbind_imu"


@pytest.fixture(scope="session")
def imu_plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The third-party IMU plugin pip-installed (its own distribution and entry point) into a folder."""
    import subprocess
    import sys

    site = tmp_path_factory.mktemp("imu_site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(site), str(IMU_PLUGIN_SOURCE)],
        check=True,
    )
    return site


@pytest.fixture
def imu_plugin(imu_plugin_site: Path, monkeypatch: pytest.MonkeyPatch, fresh_registry):
    """Make the installed IMU plugin visible to this process (and to subprocesses via PYTHONPATH)."""
    import os

    monkeypatch.syspath_prepend(str(imu_plugin_site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(imu_plugin_site), os.environ.get("PYTHONPATH")])))
    from modbind.plugins import reset_registry

    reset_registry()
    return imu_plugin_site
