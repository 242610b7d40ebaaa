"""The topology model: the shipped files validate, and every kind of mistake is named precisely."""

from __future__ import annotations

import codecs
import contextlib
import copy
import os
import random
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from harness import topology
from harness.cli import main as hil_main
from harness.topology import REPO_ROOT, TopologyError

DEFAULT = yaml.safe_load((REPO_ROOT / "topologies" / "virtual-two-site.yaml").read_text())


@pytest.mark.parametrize("name", ["virtual-two-site", "virtual-phones", "virtual-10k", "physical-example"])
def test_shipped_topologies_validate(name: str) -> None:
    t = topology.load(REPO_ROOT / "topologies" / f"{name}.yaml")
    assert set(t.sites) == {"sha", "ntg"}
    assert len({a.extension for a in t.agents()}) == len(t.agents())


def test_phones_lab_shape() -> None:
    """The default lab plus, per site, one agent on its desk phone and one on baresip (issue 12)."""
    t = topology.load(REPO_ROOT / "topologies" / "virtual-phones.yaml")
    agents = t.agents()
    assert len(agents) == 104 and [a.id for a in agents[:100]] == [a.id for a in topology.load().agents()]
    assert len([a for a in agents if t.phone_of(a) == (None, None)]) == 100
    for site in ("sha", "ntg"):
        linked = [t.phone_of(a) for a in t.linked_agents() if a.home == site]
        assert sorted(linked, key=str) == sorted([(f"{site}-phone1", None), (None, "baresip")], key=str)


def test_default_lab_shape() -> None:
    t = topology.load()
    agents = t.agents()
    assert len(agents) == 100
    assert {a.home for a in agents} == {"sha", "ntg"}
    assert len({a.system for a in agents}) >= 2
    assert len({a.region for a in agents}) >= 2
    assert len({a.skill_group for a in agents}) >= 3
    assert agents[0].id == "a00001"
    for site in ("sha", "ntg"):
        for kind in ("pbx", "cti", "ul", "switch"):
            assert t.of_kind(kind, site), (site, kind)
    assert "wan" in t.model.links


def test_physical_example_has_every_device_kind() -> None:
    t = topology.load(REPO_ROOT / "topologies" / "physical-example.yaml")
    types = {d.spec.device_type for d in t.of_kind("switch")}
    assert types == {"cisco_ios", "huawei"}
    assert {d.spec.vendor for d in t.of_kind("phone")} == {"yealink", "poly"}
    assert t.of_kind("pdu") and t.of_kind("console")
    assert ("sha-sw1", "Gi1/0/48") in t.management_path()


def _problems(tmp_path: Path, data: dict) -> list[tuple[str, str]]:
    f = tmp_path / "lab.yaml"
    f.write_text(yaml.safe_dump(data))
    with pytest.raises(TopologyError) as ei:
        topology.load(f)
    assert all(line.startswith(f"{f}: ") for line in ei.value.lines())
    return ei.value.problems


def _mutated(fn) -> dict:
    d = copy.deepcopy(DEFAULT)
    fn(d)
    return d


def test_unknown_key(tmp_path: Path) -> None:
    d = _mutated(lambda d: d["sites"]["sha"]["switches"]["sha-sw1"]["ports"]["Gi0/3"].update(speed=1000))
    assert ("sites.sha.switches.sha-sw1.ports.Gi0/3.speed", "unknown key") in _problems(tmp_path, d)


def test_dangling_link_port(tmp_path: Path) -> None:
    d = _mutated(lambda d: d["links"]["wan"].update(b="ntg-sw1:GigabitEthernet0/0/99"))
    probs = _problems(tmp_path, d)
    assert any(p == "links.wan.b" and "no port 'GigabitEthernet0/0/99'" in m for p, m in probs)


def test_dangling_port_target(tmp_path: Path) -> None:
    d = _mutated(
        lambda d: d["sites"]["sha"]["switches"]["sha-sw1"]["ports"]["Gi0/3"].update(connects="sha-ul9")
    )
    probs = _problems(tmp_path, d)
    assert any(p == "sites.sha.switches.sha-sw1.ports.Gi0/3.connects" and "sha-ul9" in m for p, m in probs)


def test_duplicate_address(tmp_path: Path) -> None:
    d = _mutated(lambda d: d["sites"]["ntg"]["cti"]["ntg-cti1"].update(address="198.18.1.10"))
    probs = _problems(tmp_path, d)
    paths = {"sites.ntg.cti.ntg-cti1.address", "sites.sha.pbx.sha-pbx1.address"}
    assert any(
        p in paths and "198.18.1.10 is already used by" in m and m.split()[-1] in paths for p, m in probs
    )


def test_duplicate_extension(tmp_path: Path) -> None:
    d = _mutated(lambda d: d["agents"]["pools"]["ntg-air"].update(extensions="10050-10150"))
    probs = _problems(tmp_path, d)
    assert any(
        {p, m.split()[-1]} == {"agents.pools.ntg-air.extensions", "agents.pools.sha-air.extensions"}
        for p, m in probs
    )


def test_range_too_small(tmp_path: Path) -> None:
    d = _mutated(lambda d: d["agents"]["pools"]["sha-air"].update(extensions="10001-10010"))
    probs = _problems(tmp_path, d)
    assert (
        "agents.pools.sha-air.extensions",
        "range 10001-10010 holds 10 extensions, pool needs 30",
    ) in probs


def test_cuttable_port_on_management_path(tmp_path: Path) -> None:
    def f(d: dict) -> None:
        d["management"]["path"] = ["sha-sw1:Gi0/7"]

    probs = _problems(tmp_path, _mutated(f))
    assert (
        "sites.sha.switches.sha-sw1.ports.Gi0/7",
        "port is on the controller's management path and must not be cuttable",
    ) in probs


def test_literal_secret_refused(tmp_path: Path) -> None:
    d = _mutated(lambda d: d["credentials"]["switch"].update(password="cisco123"))
    probs = _problems(tmp_path, d)
    assert any(p == "credentials.switch.password" and "environment variable" in m for p, m in probs)


def test_address_outside_lab_range(tmp_path: Path) -> None:
    d = _mutated(lambda d: d["sites"]["sha"]["pbx"]["sha-pbx1"].update(address="10.0.0.5"))
    probs = _problems(tmp_path, d)
    assert any(p == "sites.sha.pbx.sha-pbx1.address" and "outside the lab range" in m for p, m in probs)


def test_several_errors_reported_at_once(tmp_path: Path) -> None:
    def f(d: dict) -> None:
        d["agents"]["pools"]["sha-air"]["extensions"] = "10001-10010"
        d["links"]["wan"]["a"] = "sha-sw9:Gi0/1"

    assert len(_problems(tmp_path, _mutated(f))) >= 2


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("name: [unclosed\n")
    with pytest.raises(TopologyError, match="not valid YAML"):
        topology.load(f)
    with pytest.raises(TopologyError, match="cannot read"):
        topology.load(tmp_path / "nope.yaml")


def test_cli_exit_2_one_line_per_error(tmp_path: Path) -> None:
    def f(d: dict) -> None:
        d["agents"]["pools"]["sha-air"]["extensions"] = "10001-10010"
        d["sites"]["sha"]["switches"]["sha-sw1"]["ports"]["Gi0/3"]["connects"] = "sha-ul9"

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_mutated(f)))
    # `lab up` as its own process (what a user runs); `validate` through the same entry point in this
    # process (a second interpreter start says nothing more, and costs seconds on a loaded machine)
    for r in (_hil_in_process(["validate", "--topology", str(bad)]), _hil_process(["lab", "up"], bad)):
        assert r.returncode == 2, r.stderr
        assert "Traceback" not in r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 2
        assert all(line.startswith(f"error: {bad}: ") for line in lines)
        assert any(
            "sites.sha.switches.sha-sw1.ports.Gi0/3.connects: 'sha-ul9' is not" in line for line in lines
        )


# -- files that are not a lab description at all: exit 2 and one line, never a traceback ---------------

HIL = Path(sys.executable).with_name("hil")
NOBODY = 65534


def _random_bytes(f: Path) -> None:
    data = random.Random(10).randbytes(512)
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")  # the premise: these bytes are not UTF-8
    f.write_bytes(data)


def _png(f: Path) -> None:
    f.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x06")


def _utf16(f: Path) -> None:
    f.write_bytes(codecs.BOM_UTF16_LE + "name: lab\nkind: virtual\n".encode("utf-16-le"))


def _utf16_no_bom(f: Path) -> None:
    f.write_bytes("name: lab\nkind: virtual\n".encode("utf-16-le"))


def _empty(f: Path) -> None:
    f.write_bytes(b"")


def _comments_only(f: Path) -> None:
    f.write_text("# a lab, one day\n\n")


def _yaml_list(f: Path) -> None:
    f.write_text("- sha\n- ntg\n")


def _yaml_scalar(f: Path) -> None:
    f.write_text("42\n")


def _directory(f: Path) -> None:
    f.mkdir()


def _missing(f: Path) -> None:
    pass


def _control_char(f: Path) -> None:
    f.write_text("name: lab\x07\n")


BAD_FILES: dict[str, tuple[Callable[[Path], None], str]] = {
    "random-bytes": (_random_bytes, "not UTF-8 text"),
    "png": (_png, "not UTF-8 text (byte 0x89 at offset 0)"),
    "utf-16": (_utf16, "is UTF-16 text; save it as UTF-8"),
    "utf-16-no-bom": (_utf16_no_bom, "holds NUL bytes"),
    "empty": (_empty, "the file is empty"),
    "comments-only": (_comments_only, "holds no YAML data"),
    "yaml-list": (_yaml_list, "the file holds a list, not a mapping"),
    "yaml-scalar": (_yaml_scalar, "the file holds a number, not a mapping"),
    "directory": (_directory, "is a directory, not a topology file"),
    "missing": (_missing, "cannot read the file: No such file or directory"),
    "control-char": (_control_char, "not valid YAML: character #x0007"),
}


def _hil_process(args: list[str], f: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args, "--topology", str(f)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
    )


def _hil_in_process(args: list[str]) -> subprocess.CompletedProcess[str]:
    """``hil ARGS`` through the console script's own entry point (harness.cli:main) in this process, as a
    finished process would report it. An exception that escaped the command (a traceback, in a process)
    fails here at once."""
    r = CliRunner().invoke(hil_main, args)
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exc_info
    return subprocess.CompletedProcess(["hil", *args], r.exit_code, r.stdout, r.stderr)


def _validate_cli(f: Path, prefix: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    argv = [str(HIL)] if HIL.exists() else [sys.executable, "-m", "harness.cli"]
    return subprocess.run(
        [*(prefix or []), *argv, "validate", "--topology", str(f)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
    )


def _assert_one_line_exit_2(r: subprocess.CompletedProcess[str], f: Path, what: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"error: {f}: "), lines[0]
    assert what in lines[0], lines[0]


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_not_a_lab_description_loader(tmp_path: Path, case: str) -> None:
    make, what = BAD_FILES[case]
    f = tmp_path / "lab.yaml"
    make(f)
    with pytest.raises(TopologyError) as ei:
        topology.load(f)
    assert len(ei.value.problems) == 1
    (line,) = ei.value.lines()
    assert line.startswith(f"{f}: (top): ") or line.startswith(f"{f}: line "), line
    assert what in line, line
    assert "\n" not in str(ei.value)


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_not_a_lab_description_cli(tmp_path: Path, case: str) -> None:
    """Every case through `hil validate`'s entry point in this process: the file differs from case to case,
    not the interpreter (eleven interpreter starts cost a minute on a loaded machine)."""
    make, what = BAD_FILES[case]
    f = tmp_path / "lab.yaml"
    make(f)
    _assert_one_line_exit_2(_hil_in_process(["validate", "--topology", str(f)]), f, what)


@pytest.mark.parametrize("case", ["random-bytes", "directory"])
def test_not_a_lab_description_cli_process(tmp_path: Path, case: str) -> None:
    """The installed `hil` as its own process: exit 2 and one line on stderr, no traceback, nothing on
    stdout (a decode error and an OS error, the two ways a file fails before it is YAML)."""
    make, what = BAD_FILES[case]
    f = tmp_path / "lab.yaml"
    make(f)
    _assert_one_line_exit_2(_validate_cli(f), f, what)


@pytest.fixture
def unreadable() -> Iterator[Path]:
    """A topology that is fine but that this user cannot read: mode 0 in a directory anyone may enter, so
    only the file's own mode stands in the way (root reads anything: the tests take that power away)."""
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        f = Path(d) / "lab.yaml"
        f.write_text((REPO_ROOT / "topologies" / "virtual-two-site.yaml").read_text())
        f.chmod(0)
        assert not stat.S_IMODE(f.stat().st_mode)
        yield f


@contextlib.contextmanager
def _as_nobody_if_root() -> Iterator[None]:
    if os.geteuid() != 0:
        yield
        return
    os.setegid(NOBODY)
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def test_unreadable_file_loader(unreadable: Path) -> None:
    with _as_nobody_if_root(), pytest.raises(TopologyError) as ei:
        topology.load(unreadable)
    assert ei.value.lines() == [f"{unreadable}: (top): cannot read the file: Permission denied"]


def test_unreadable_file_cli(unreadable: Path) -> None:
    prefix = []
    if os.geteuid() == 0:  # root without the capabilities that read past a file's mode
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root and util-linux setpriv is missing: cannot make a file unreadable")
        prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search"]
    r = _validate_cli(unreadable, prefix)
    _assert_one_line_exit_2(r, unreadable, "cannot read the file: Permission denied")


def test_multiline_yaml_error_is_one_line(tmp_path: Path) -> None:
    f = tmp_path / "lab.yaml"
    f.write_text("name: lab\n  kind: virtual\n")
    with pytest.raises(TopologyError) as ei:
        topology.load(f)
    (line,) = ei.value.lines()
    assert line.startswith(f"{f}: line 2, column ") and "not valid YAML" in line
