"""The run directory (harness.report.runs): names, the latest link, reading a kept run, and pruning by count
and size that never removes the current run, the latest, a live run or anything that is not a run."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from harness.report import runs
from harness.topology import REPO_ROOT

T0 = dt.datetime(2026, 12, 3, 5, 10, 36, tzinfo=dt.UTC)


def make_run(
    reports: Path, minute: int, status: str = "complete", size: int = 0, describe: str = "v1.0-3-gabc1234"
) -> runs.Run:  # fmt: skip
    """A kept run as hil run leaves it, ``minute`` minutes after T0, holding ``size`` bytes of evidence."""
    run = runs.create(reports, repo=REPO_ROOT, now=T0 + dt.timedelta(minutes=minute), describe=describe)
    (run.path / "allure-results").mkdir()
    (run.path / "pcap.bin").write_bytes(b"x" * size)
    if status != "running":
        run.finish(status)
    return run


def test_a_run_is_named_by_its_utc_time_and_build_and_sorts_by_time() -> None:
    cst = dt.timezone(dt.timedelta(hours=8))
    name = runs.run_name(T0.astimezone(cst), "v1.0-3-gabc1234-dirty")
    assert name == "20261203T051036Z-v1.0-3-gabc1234-dirty"
    assert runs.run_name(T0, "feature/x y") == "20261203T051036Z-feature_x_y"  # no path separators
    assert runs.run_name(T0, "") == "20261203T051036Z-nogit"
    assert runs.NAME_RE.match(runs.run_name(T0, "abc1234"))
    later = runs.run_name(T0 + dt.timedelta(seconds=1), "a")
    assert sorted([later, runs.run_name(T0, "z")])[0].endswith("-z")


def test_a_new_run_gets_its_own_directory_and_never_writes_into_an_earlier_one(tmp_path: Path) -> None:
    first = make_run(tmp_path, 0)
    (first.path / "evidence.txt").write_text("first run")
    before = (first.path / runs.MANIFEST).read_text()
    second = runs.create(tmp_path, repo=REPO_ROOT, now=T0, describe="v1.0-3-gabc1234")  # same second
    assert second.path != first.path and second.name == first.name + "-2"
    assert runs.NAME_RE.match(second.name)
    assert (first.path / "evidence.txt").read_text() == "first run"
    assert (first.path / runs.MANIFEST).read_text() == before
    m = json.loads((second.path / runs.MANIFEST).read_text())
    assert m["status"] == "running" and m["pid"] == os.getpid()
    assert m["started"] == "2026-12-03T05:10:36+00:00" and m["host"] == socket.gethostname()
    v = m["versions"]
    assert v["python"] == sys.version.split()[0] and v["package"].startswith(runs.PACKAGE)
    for key in ("git_describe", "git_commit", "kamailio", "tcpdump", "allure", "kernel", "os"):
        assert v[key], key


def test_a_run_keeps_its_inputs_and_says_how_it_ended(tmp_path: Path) -> None:
    run = make_run(tmp_path, 0, status="running")
    topo = REPO_ROOT / "topologies" / "virtual-two-site.yaml"
    kept = run.keep_input(topo, "topology-suite.yaml")
    assert kept is not None and kept.read_bytes() == topo.read_bytes()
    assert run.keep_input(tmp_path / "missing.yaml") is None
    run.finish("complete", exit_code=1, gate_exit=1)
    m = json.loads((run.path / runs.MANIFEST).read_text())
    assert m["status"] == "complete" and m["exit_code"] == 1 and m["finished"]
    assert not list(run.path.glob(".*tmp"))  # the manifest is replaced whole, no temporary left
    with pytest.raises(AssertionError):
        run.finish("fine")


def test_latest_points_at_the_run_relatively_and_is_replaced_atomically(tmp_path: Path) -> None:
    a, b = make_run(tmp_path, 0), make_run(tmp_path, 1)
    link = runs.point_latest(tmp_path, a)
    assert link.is_symlink() and os.readlink(link) == f"runs/{a.name}"
    runs.point_latest(tmp_path, b)
    assert os.readlink(link) == f"runs/{b.name}" and link.resolve() == b.path.resolve()
    assert runs.open_run("latest", tmp_path).path == b.path.resolve()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "runs"]  # no temporary link left


def test_latest_never_replaces_a_real_directory(tmp_path: Path) -> None:
    (tmp_path / "latest").mkdir()
    (tmp_path / "latest" / "keep.txt").write_text("mine")
    with pytest.raises(runs.RunDirError, match="latest: exists and is not a link"):
        runs.point_latest(tmp_path, make_run(tmp_path, 0))
    assert (tmp_path / "latest" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("setup", "ref", "expected"),
    [
        (lambda r: None, "latest", "latest: missing: no such run directory (no run has completed yet"),
        (lambda r: os.symlink("runs/gone", r / "latest"), "latest", "latest: missing (the link points at"),
        (lambda r: (r / "f").write_text("x"), "f", "f: not a run directory (it is a file)"),
        (lambda r: (r / "d").mkdir(), "d", "d: not a run directory (no run.json"),
        (lambda r: ((r / "d").mkdir(), (r / "d" / "run.json").write_text("{oops")), "d", "corrupt (not JSON"),
        (lambda r: ((r / "d").mkdir(), (r / "d" / "run.json").write_text("[1]")), "d", "corrupt (not a run"),
        (lambda r: ((r / "d").mkdir(), (r / "d" / "run.json").write_bytes(b"\xff\xfe")), "d", "not UTF-8"),
    ],
)
def test_a_missing_or_corrupt_run_is_named_with_why(tmp_path: Path, setup, ref: str, expected: str) -> None:
    setup(tmp_path)
    ref = ref if ref == "latest" else str(tmp_path / ref)
    with pytest.raises(runs.RunDirError) as e:
        runs.open_run(ref, tmp_path)
    assert expected in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("status", "why"),
    [("running", "it never finished"), ("interrupted", "it was interrupted"), ("failed", "the job failed")],
)
def test_a_partial_run_is_refused_unless_asked_for(tmp_path: Path, status: str, why: str) -> None:
    run = make_run(tmp_path, 0, status=status)
    with pytest.raises(runs.RunDirError, match=f"partial run: {why}"):
        runs.open_run(run.name, tmp_path)  # by its name under runs/
    assert runs.open_run(run.path, tmp_path, complete=False).status == status


def test_a_complete_run_without_results_is_partial(tmp_path: Path) -> None:
    run = make_run(tmp_path, 0)
    (run.path / "allure-results").rmdir()
    with pytest.raises(runs.RunDirError, match="partial run: no allure-results"):
        runs.open_run(run.path, tmp_path)


def test_prune_by_count_removes_the_oldest_and_names_them(tmp_path: Path) -> None:
    old = [make_run(tmp_path, m, size=10) for m in range(4)]
    current = make_run(tmp_path, 9, status="running")
    removed = runs.prune(tmp_path, runs.Retention(keep=3, max_bytes=10**9), current)
    assert [r.name for r in removed] == [old[0].name, old[1].name]
    for r in removed:
        assert r.line().startswith(f"removed run {r.name} (")
        assert r.line().endswith("): more than 3 runs kept")
    assert [r.name for r in runs.list_runs(tmp_path)] == [old[2].name, old[3].name, current.name]


def test_prune_never_touches_what_is_not_a_run(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    make_run(tmp_path, 0)
    (root / "notes").mkdir(parents=True)
    (root / "20261203T000000Z-handmade").mkdir()  # named as a run, but hil run did not make it
    (root / "20261203T000001Z-broken").mkdir()
    (root / "20261203T000001Z-broken" / "run.json").write_text("not json")
    (root / "20261203T000002Z-file").write_text("a file")
    elsewhere = make_run(tmp_path / "other", 0)
    os.symlink(elsewhere.path, root / "20261203T000003Z-link")
    current = make_run(tmp_path, 5, status="running")
    removed = runs.prune(tmp_path, runs.Retention(keep=1, max_bytes=1), current)
    assert len(removed) == 1
    left = sorted(p.name for p in root.iterdir())
    assert left == sorted(
        ["notes", "20261203T000000Z-handmade", "20261203T000001Z-broken", "20261203T000002Z-file",
         "20261203T000003Z-link", current.name]
    )  # fmt: skip
    assert elsewhere.path.is_dir()


def test_prune_by_size_keeps_the_current_run_even_when_it_alone_is_over(tmp_path: Path) -> None:
    olds = [make_run(tmp_path, m, size=10_000) for m in range(3)]
    current = make_run(tmp_path, 9, size=5_000, status="running")
    total = sum(runs._size(r.path) for r in [*olds, current])
    removed = runs.prune(tmp_path, runs.Retention(keep=100, max_bytes=total - 1), current)
    assert [r.name for r in removed] == [olds[0].name]  # one byte over: the oldest goes, no more
    assert removed[0].size > 10_000 and f"over {runs.human_size(total - 1)}" in removed[0].line()
    removed = runs.prune(tmp_path, runs.Retention(keep=100, max_bytes=100), current)
    assert [r.name for r in removed] == [olds[1].name, olds[2].name]
    assert [r.name for r in runs.list_runs(tmp_path)] == [current.name]


def test_prune_spares_latest_and_a_live_run_but_not_a_dead_one(tmp_path: Path) -> None:
    pinned = make_run(tmp_path, 0)
    runs.point_latest(tmp_path, pinned)
    live = make_run(tmp_path, 1, status="running")  # this process: still being written
    dead = make_run(tmp_path, 2, status="running")
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    dead.record(pid=p.pid)  # its process is gone: killed runs are pruned like others
    elsewhere = make_run(tmp_path, 3, status="running")
    elsewhere.record(host=socket.gethostname() + "-other")
    current = make_run(tmp_path, 9, status="running")
    removed = runs.prune(tmp_path, runs.Retention(keep=1, max_bytes=10**9), current)
    assert [r.name for r in removed] == [dead.name, elsewhere.name]
    assert pinned.path.is_dir() and live.path.is_dir() and current.path.is_dir()


def test_retention_values_must_be_positive_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(runs.KEEP_RUNS_ENV, raising=False)
    monkeypatch.delenv(runs.KEEP_SIZE_ENV, raising=False)
    assert runs.retention() == runs.Retention(runs.DEFAULT_KEEP_RUNS, runs.DEFAULT_KEEP_BYTES)
    assert runs.retention("3", "1.5G") == runs.Retention(3, int(1.5 * 1024**3))
    assert runs.parse_size("500M", "x") == 500 * 1024**2 and runs.parse_size("123", "x") == 123
    assert runs.parse_size("2GiB", "x") == 2 * 1024**3 and runs.parse_size("1k", "x") == 1024
    for bad in ("0", "-1", "abc", "1.5", "", " "):
        with pytest.raises(runs.RetentionError, match=r"^--keep-runs: .* is not a positive whole number"):
            runs.retention(keep=bad)
    for bad in ("0", "0.0001", "-5G", "10X", "G", "nan"):
        with pytest.raises(runs.RetentionError, match=r"^--keep-size: .* is not a positive size"):
            runs.retention(size=bad)
    monkeypatch.setenv(runs.KEEP_RUNS_ENV, "7")
    monkeypatch.setenv(runs.KEEP_SIZE_ENV, "1M")
    assert runs.retention() == runs.Retention(7, 1024**2)
    assert runs.retention("2") == runs.Retention(2, 1024**2)  # the option wins
    monkeypatch.setenv(runs.KEEP_SIZE_ENV, "lots")
    with pytest.raises(runs.RetentionError, match=f"^{runs.KEEP_SIZE_ENV}: 'lots'"):
        runs.retention()


def test_last_failed_reads_the_runs_own_pytest_cache(tmp_path: Path) -> None:
    run = make_run(tmp_path, 0)
    assert runs.last_failed(run) == []  # pytest writes the file only when something failed
    f = run.path / "pytest-cache" / "v" / "cache" / "lastfailed"
    f.parent.mkdir(parents=True)
    f.write_text(json.dumps({"scenarios/test_b.py::test_y": True, "scenarios/test_a.py::test_x": True}))
    assert runs.last_failed(run) == ["scenarios/test_a.py::test_x", "scenarios/test_b.py::test_y"]
    f.write_text("{")
    with pytest.raises(runs.RunDirError, match="lastfailed: corrupt"):
        runs.last_failed(run)


def test_human_sizes() -> None:
    assert runs.human_size(0) == "0 B" and runs.human_size(1023) == "1023 B"
    assert runs.human_size(1536) == "1.5 KiB" and runs.human_size(3 * 1024**3) == "3.0 GiB"
