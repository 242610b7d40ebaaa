"""SIP for every part of the lab: one message model, one digest, one OPTIONS probe, one blocking client.

The stack's phones and CTI, the harness's decoder and probes, and the virtual lab's PBX all speak SIP; this
package is the one place they share, so it imports only the standard library and nothing of the project.

- :mod:`sipcore.message`: :class:`~sipcore.message.SipMessage`, :func:`~sipcore.message.parse`,
  :func:`~sipcore.message.build_response`.
- :mod:`sipcore.uri`: URIs and the header values that carry them.
- :mod:`sipcore.scan`: the capture decoder's fast reading of the fields a verdict needs.
- :mod:`sipcore.digest`: digest authentication (RFC 2617/7616).
- :mod:`sipcore.timers`: RFC 3261 retransmission timers.
- :mod:`sipcore.client`: a blocking SIP-over-UDP client (UAC and minimal UAS) for probes and tests.
- :mod:`sipcore.probe`: the OPTIONS probe, blocking and asyncio; ``python -m sipcore`` runs it from a shell.
"""
