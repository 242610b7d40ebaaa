"""Fixtures the project's own tests share: the two real Kamailio PBXs of tests/kamailio_pbx.py.

Module-scoped, as each test module had them: a module's PBXs start before its first test and stop after its
last. A module that needs other PBXs (tests/test_pbx.py) defines its own ``pbx_a``/``pbx_b``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kamailio_pbx import spec_a, spec_b, start_pbx

from virtual.pbx import PbxSpec


@pytest.fixture(scope="module")
def pbx_a(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PbxSpec]:
    yield from start_pbx(spec_a(tmp_path_factory.mktemp("a")))


@pytest.fixture(scope="module")
def pbx_b(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PbxSpec]:
    yield from start_pbx(spec_b(tmp_path_factory.mktemp("b")))
