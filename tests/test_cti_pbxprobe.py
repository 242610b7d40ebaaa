"""The CTI's PBX link probe when the PBX's RPC is on its management plane (issue 16: the RPC answers the
controller and the CTIs only, on the PBX's management address): the RPC then cannot vouch for the data
path the phones use, and a cut of the PBX's data port must still be a link down (detection within 3 s,
issue 11). With the RPC on the data address either answer will do, as before (a slow RPC under a storm)."""

from __future__ import annotations

import asyncio

import pytest

from stack.cti.pbxlink import PbxLink


def probe(link: PbxLink, rpc: bool, sip: bool) -> bool:
    async def rpc_alive() -> bool:
        return rpc

    async def sip_alive() -> bool:
        return sip

    link._rpc_alive = rpc_alive  # type: ignore[method-assign]
    link._sip_alive = sip_alive  # type: ignore[method-assign]
    return asyncio.run(link.probe())


@pytest.mark.parametrize(
    ("rpc_url", "vouches"),
    [("http://198.19.0.11:5071/RPC", False), ("http://198.18.1.10:5071/RPC", True)],
)
def test_only_an_rpc_on_the_data_address_vouches_for_the_link(rpc_url: str, vouches: bool) -> None:
    link = PbxLink(rpc_url, sip=("198.18.1.10", 5060))
    assert link.rpc_vouches is vouches
    assert probe(link, rpc=True, sip=False) is vouches  # the data port cut, the management plane fine
    assert probe(link, rpc=False, sip=True) is True  # the RPC slow under a storm: SIP answers
    assert probe(link, rpc=False, sip=False) is False


def test_without_sip_the_rpc_alone_decides() -> None:
    link = PbxLink("http://198.19.0.11:5071/RPC")
    assert link.rpc_vouches and probe(link, rpc=True, sip=False) is True
