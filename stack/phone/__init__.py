"""The emulated IP phone of the system under test: an asyncio SIP UA, vendor management APIs, control.

- :mod:`stack.phone.ua`: :class:`SipEndpoint` (one UDP socket, many phones) and :class:`Phone`.
- :mod:`stack.phone.control`: :class:`PhoneControl`, what an agent client may do to its phone,
  in-process (:class:`LocalPhoneControl`) or over the Yealink-style API (:class:`HttpPhoneControl`).
- :mod:`stack.phone.api`: the Yealink-style and Poly-style HTTP APIs; ``python -m stack.phone`` runs one.
"""

from stack.phone.control import HttpPhoneControl, LocalPhoneControl, PhoneControl
from stack.phone.ua import Phone, PhoneEvent, SipEndpoint, SipTimers

__all__ = [
    "HttpPhoneControl",
    "LocalPhoneControl",
    "Phone",
    "PhoneControl",
    "PhoneEvent",
    "SipEndpoint",
    "SipTimers",
]
