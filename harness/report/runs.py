"""Runs kept: each `hil run` writes its evidence into a directory of its own, and never into an earlier one.

Why: release gating is a comparison with the runs before, so a run must not erase them. The layout:

    reports/runs/<UTC time>-<git describe>/    one run (``20261203T051036Z-v0.3-4-gabc1234``)
        run.json                               what ran, how it ended, the versions of stack and lab parts
        inputs/                                the topology (or topologies) and the gate policy it ran with
        allure-results/ allure-report/ histories/ verdicts/ pcap/ junit-*.xml gate.* pytest-cache/
    reports/latest -> runs/<name>              the newest run that completed

A run's ``run.json`` says ``running`` while it runs; ``complete``, ``interrupted`` or ``failed`` at the
end. Only a complete run moves ``latest`` and prunes: a run that failed or was interrupted keeps its own
evidence and touches nobody else's. Pruning (retention by count and by size) removes only the oldest
directories that are runs (named as above, with a readable ``run.json``), never the current run, the one
``latest`` points at, or a run whose process is still alive.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RUNS = "runs"
LATEST = "latest"
MANIFEST = "run.json"
PACKAGE = "hil-failover-lab"
NAME_RE = re.compile(r"^\d{8}T\d{6}Z-[A-Za-z0-9._+-]+$")
DONE = ("complete", "interrupted", "failed")

# Retention defaults: `hil run --keep-runs/--keep-size`, or HIL_KEEP_RUNS / HIL_KEEP_SIZE in the environment.
DEFAULT_KEEP_RUNS = 20
DEFAULT_KEEP_SIZE = "20G"
DEFAULT_KEEP_BYTES = 20 * 1024**3
KEEP_RUNS_ENV = "HIL_KEEP_RUNS"
KEEP_SIZE_ENV = "HIL_KEEP_SIZE"
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


class RunDirError(Exception):
    """A run directory named where one is expected is missing, partial or corrupt (one line: path and why)."""


class RetentionError(ValueError):
    """A retention value that is not a positive number (one line: the option and why)."""


@dataclass(frozen=True)
class Retention:
    """How many runs to keep, and how many bytes they may hold together (the current run always stays)."""

    keep: int = DEFAULT_KEEP_RUNS
    max_bytes: int = DEFAULT_KEEP_BYTES


def parse_count(text: str | int, what: str) -> int:
    """A positive whole number of runs."""
    s = str(text).strip()
    if not re.fullmatch(r"\+?\d+", s) or int(s) < 1:
        raise RetentionError(f"{what}: {text!r} is not a positive whole number of runs")
    return int(s)


def parse_size(text: str | int, what: str) -> int:
    """A positive size in bytes, with an optional unit: 500M, 20G, 1.5T (powers of 1024), 123456."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?", str(text).strip(), re.IGNORECASE)
    if not m:
        raise RetentionError(f"{what}: {text!r} is not a positive size (a number, optionally K, M, G or T)")
    n = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if n < 1:
        raise RetentionError(f"{what}: {text!r} is not a positive size (a number, optionally K, M, G or T)")
    return n


def retention(keep: str | int | None = None, size: str | int | None = None) -> Retention:
    """The retention from options, else the environment, else the defaults; bad values raise one line."""
    k = keep if keep is not None else os.environ.get(KEEP_RUNS_ENV) or DEFAULT_KEEP_RUNS
    s = size if size is not None else os.environ.get(KEEP_SIZE_ENV) or DEFAULT_KEEP_SIZE
    kwhat = "--keep-runs" if keep is not None or KEEP_RUNS_ENV not in os.environ else KEEP_RUNS_ENV
    swhat = "--keep-size" if size is not None or KEEP_SIZE_ENV not in os.environ else KEEP_SIZE_ENV
    return Retention(parse_count(k, kwhat), parse_size(s, swhat))


def human_size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    x = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        x /= 1024
        if x < 1024 or unit == "TiB":
            break
    return f"{x:.1f} {unit}"


# --- names and versions ---------------------------------------------------------------------------------


def _cmd(argv: list[str], cwd: Path | None = None, timeout: float = 10.0) -> str | None:
    """First line of a command's output, or None when it is missing or fails (a version we cannot read)."""
    try:
        p = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (p.stdout or p.stderr).strip()
    return text.splitlines()[0].strip() if p.returncode == 0 and text else None


def git_describe(repo: Path) -> str:
    return _cmd(["git", "describe", "--tags", "--always", "--dirty"], cwd=repo) or "nogit"


def run_name(now: dt.datetime, describe: str) -> str:
    """``<UTC time>-<git describe>``: sorts by time, and says which build ran."""
    stamp = now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    safe = re.sub(r"[^A-Za-z0-9._+-]+", "_", describe).strip("._") or "nogit"
    return f"{stamp}-{safe}"


def versions(repo: Path) -> dict[str, str]:
    """The versions of the stack (package, git) and of the lab's parts on this machine."""
    try:
        package = importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        package = "not installed"
    allure = "not installed"
    try:
        allure = json.loads((repo / "node_modules" / "allure" / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    os_name = "unknown"
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return {
        "package": f"{PACKAGE} {package}",
        "git_describe": git_describe(repo),
        "git_commit": _cmd(["git", "rev-parse", "HEAD"], cwd=repo) or "unknown",
        "python": sys.version.split()[0],
        "kamailio": _cmd(["kamailio", "-V"]) or "not installed",
        "tcpdump": _cmd(["tcpdump", "--version"]) or "not installed",
        "allure": allure,
        "kernel": platform.release(),
        "os": os_name,
    }


# --- one run ----------------------------------------------------------------------------------------------


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write whole or not at all: a reader never sees half a manifest."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


@dataclass
class Run:
    """One run directory and its manifest."""

    path: Path
    manifest: dict[str, Any]

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def status(self) -> str:
        return str(self.manifest.get("status", "running"))

    def record(self, **fields: Any) -> None:
        self.manifest.update(fields)
        _write_json(self.path / MANIFEST, self.manifest)

    def finish(self, status: str, **fields: Any) -> None:
        assert status in DONE, status
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self.record(status=status, finished=now, **fields)

    def keep_input(self, src: str | Path, name: str | None = None) -> Path | None:
        """Copy an input file (topology, policy) into ``inputs/``, so the run says what it ran with."""
        src = Path(src)
        if not src.is_file():
            return None
        dest = self.path / "inputs" / (name or src.name)
        dest.parent.mkdir(exist_ok=True)
        shutil.copyfile(src, dest)
        return dest


def create(
    reports: Path, *, repo: Path, now: dt.datetime | None = None, describe: str | None = None,
    **fields: Any,
) -> Run:  # fmt: skip
    """A new run directory, made exclusively (a name taken by an earlier run gets ``-2``, ``-3``, ...):
    nothing of an earlier run is ever written to."""
    now = now or dt.datetime.now(dt.UTC)
    base = run_name(now, describe if describe is not None else git_describe(repo))
    root = reports / RUNS
    root.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        path = root / (base if n == 1 else f"{base}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        break
    else:
        raise RunDirError(f"{root / base}: a thousand runs of that name already exist")
    manifest = {
        "name": path.name,
        "status": "running",
        "started": now.astimezone(dt.UTC).isoformat(timespec="seconds"),
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "versions": versions(repo),
        **fields,
    }
    run = Run(path, manifest)
    _write_json(path / MANIFEST, manifest)
    return run


def _read_manifest(path: Path) -> dict[str, Any]:
    f = path / MANIFEST
    try:
        data = json.loads(f.read_text())
    except FileNotFoundError:
        raise RunDirError(f"{path}: not a run directory (no {MANIFEST}: hil run did not make it)") from None
    except UnicodeDecodeError:
        raise RunDirError(f"{f}: corrupt (not UTF-8 text)") from None
    except ValueError as e:
        raise RunDirError(f"{f}: corrupt (not JSON: {e})") from None
    except OSError as e:
        raise RunDirError(f"{f}: unreadable ({e.strerror or e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("status"), str):
        raise RunDirError(f"{f}: corrupt (not a run manifest: no status)")
    return data


def resolve(ref: str | Path, reports: Path) -> Path:
    """A run named by path, by its name under ``reports/runs/``, or ``latest``."""
    p = Path(ref)
    if str(ref) == LATEST:
        return reports / LATEST
    if not p.exists() and len(p.parts) == 1 and (reports / RUNS / p).exists():
        return reports / RUNS / p
    return p


def open_run(ref: str | Path, reports: Path, *, complete: bool = True) -> Run:
    """An earlier run to read. Missing, not a run, corrupt, or (with ``complete``) partial: RunDirError."""
    path = resolve(ref, reports)
    if path.is_symlink() and not path.exists():
        raise RunDirError(f"{path}: missing (the link points at {os.readlink(path)}, which is gone)")
    if not path.exists():
        hint = " (no run has completed yet: run hil run first)" if str(ref) == LATEST else ""
        raise RunDirError(f"{path}: missing: no such run directory{hint}")
    path = path.resolve() if path.is_symlink() else path  # name the run latest points at
    if not path.is_dir():
        raise RunDirError(f"{path}: not a run directory (it is a file)")
    run = Run(path.resolve(), _read_manifest(path))
    if complete and run.status != "complete":
        why = {
            "running": "it never finished (still running, or killed)",
            "interrupted": "it was interrupted",
            "failed": f"the job failed ({run.manifest.get('error', 'no reason recorded')})",
        }.get(run.status, f"unknown status {run.status!r}")
        raise RunDirError(f"{path}: partial run: {why}")
    if complete and not (run.path / "allure-results").is_dir():
        raise RunDirError(f"{path}: partial run: no allure-results/ in it")
    return run


def point_latest(reports: Path, run: Run) -> Path:
    """``reports/latest`` -> ``runs/<name>`` (relative, replaced atomically). A real file or directory of
    that name is not ours to replace: RunDirError."""
    link = reports / LATEST
    if link.exists() and not link.is_symlink():
        raise RunDirError(f"{link}: exists and is not a link; not replacing it (move it away)")
    tmp = reports / f".{LATEST}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(os.path.relpath(run.path, reports), tmp)
    os.replace(tmp, link)
    return link


# --- all runs, and pruning --------------------------------------------------------------------------------


def _size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):  # os.walk does not follow links to directories
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def list_runs(reports: Path) -> list[Run]:
    """The runs under ``reports/runs/``, oldest first: directories named as runs, with a readable manifest.
    Anything else there (a link, a file, another directory, a corrupt run) is not listed, so never pruned."""
    root = reports / RUNS
    if not root.is_dir():
        return []
    out = []
    for p in sorted(root.iterdir(), key=lambda p: p.name):
        if p.is_symlink() or not p.is_dir() or not NAME_RE.match(p.name):
            continue
        try:
            out.append(Run(p, _read_manifest(p)))
        except RunDirError:
            continue
    return out


def _alive(run: Run) -> bool:
    """A run still being written: its status says running and its process lives on this host."""
    if run.status != "running" or run.manifest.get("host") != socket.gethostname():
        return False
    pid = run.manifest.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Removed:
    name: str
    size: int
    why: str

    def line(self) -> str:
        return f"removed run {self.name} ({human_size(self.size)}): {self.why}"


def prune(reports: Path, keep: Retention, current: Run) -> list[Removed]:
    """Remove the oldest runs until at most ``keep.keep`` runs remain and they hold at most
    ``keep.max_bytes`` together; returns what it removed. Spared: the current run, ``latest``'s, live ones."""
    runs = list_runs(reports)
    latest = (reports / LATEST).resolve() if (reports / LATEST).is_symlink() else None
    spared = {current.path.resolve(), latest}
    sizes = {r.path: _size(r.path) for r in runs}
    if not any(r.path.resolve() == current.path.resolve() for r in runs):
        sizes[current.path] = _size(current.path)
    count, total = len(sizes), sum(sizes.values())
    removed: list[Removed] = []
    for r in runs:  # oldest first
        over_count, over_size = count > keep.keep, total > keep.max_bytes
        if not (over_count or over_size):
            break
        if r.path.resolve() in spared or _alive(r):
            continue
        why = (
            f"more than {keep.keep} runs kept"
            if over_count
            else f"runs hold {human_size(total)}, over {human_size(keep.max_bytes)}"
        )
        shutil.rmtree(r.path)
        removed.append(Removed(r.name, sizes[r.path], why))
        count -= 1
        total -= sizes[r.path]
    return removed


def last_failed(run: Run) -> list[str]:
    """The scenarios (pytest node ids) that failed in a run, from the pytest cache it kept."""
    f = run.path / "pytest-cache" / "v" / "cache" / "lastfailed"
    if not f.exists():
        return []  # pytest writes it only when something failed
    try:
        data = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise RunDirError(f"{f}: corrupt ({e})") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{f}: corrupt (not a map of test ids)")
    return sorted(k for k, v in data.items() if v)
