"""Issue 16, item 1: each PBX's JSON-RPC is a management plane. On the virtual lab it answers on the PBX's
management address only, and there only to the controller and the CTIs: an agent's desktop (the agents
host, on the data network, and on the management network for the lab's SSH) cannot call ``ul.rm``."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest

from harness.lab import Lab
from virtual import netns, pbx, stackservices
from virtual.pbxrpc import RpcError, jsonrpc

SITE = "sha"


def _call(lab: Lab, src: str | None, host: str, port: int) -> str:
    """What ``core.version`` from ``src``'s namespace (None: the controller) gets: its answer or why not."""
    try:
        with netns.entered(lab.ns_path(src) if src else None):
            return str(jsonrpc(host, port, "core.version", timeout=3))
    except RpcError as err:
        return f"refused {err.code}"
    except urllib.error.HTTPError as err:
        return f"refused {err.code}"
    except (OSError, urllib.error.URLError) as err:
        return f"unreachable {err}"


@pytest.mark.lab
def test_the_pbx_rpc_answers_the_cti_and_the_controller_only(lab: Lab, tmp_path: Path) -> None:
    dev = lab.topology.of_kind("pbx", SITE)[0]
    agents = next(h for h in lab.topology.of_kind("host", SITE) if h.spec.role == "agents")
    cti = lab.topology.of_kind("cti", SITE)[0]
    mgmt, data, port = str(dev.spec.mgmt), str(dev.spec.address), dev.spec.rpc_port
    assert stackservices.pbx_rpc_host(lab.topology, dev) == mgmt
    assert "kamailio" in _call(lab, None, mgmt, port).lower()  # the controller, out of band
    assert "kamailio" in _call(lab, cti.name, mgmt, port).lower()  # the CTI, as its --pbx-rpc says
    # the agents host: nothing listens for HTTP on the data address, and the management one says 403
    assert _call(lab, agents.name, data, port).startswith("unreachable")
    assert _call(lab, agents.name, mgmt, port) == "refused 403"
    # and the CTI is told the management address
    argv = next(p.argv for p in stackservices.plan(lab.topology, tmp_path, {}) if p.device == cti.name)
    assert argv[argv.index("--pbx-rpc") + 1] == f"http://{mgmt}:{port}/RPC"
    assert argv[argv.index("--pbx-sip") + 1] == f"{data}:{dev.spec.sip_port}"


def test_the_rpc_acl_is_rendered_only_with_clients(tmp_path: Path) -> None:
    allow = ["198.19.0.1", "198.19.0.12"]
    spec = pbx.PbxSpec(
        "p", "198.18.1.10", 5060, 5071, "lab", tmp_path, {}, rpc_listen="198.19.0.11", rpc_allow=allow
    )
    cfg = pbx.render_config(spec)
    assert "listen=tcp:198.19.0.11:5071" in cfg and "listen=tcp:198.18.1.10:5071" not in cfg
    assert '$si != "198.19.0.1" && $si != "198.19.0.12"' in cfg
    assert spec.rpc_url == "http://198.19.0.11:5071/RPC"
    open_cfg = pbx.render_config(pbx.PbxSpec("p", "127.0.0.1", 5060, 5071, "lab", tmp_path, {}))
    assert "listen=tcp:127.0.0.1:5071" in open_cfg and "$si !=" not in open_cfg
    with pytest.raises(ValueError):  # nothing but an address goes into the config
        pbx.PbxSpec("p", "127.0.0.1", 5060, 5071, "lab", tmp_path, {}, rpc_allow=['1.2.3.4" || 1'])
