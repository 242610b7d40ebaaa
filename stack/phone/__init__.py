"""The emulated IP phone of the system under test: an asyncio SIP UA, vendor management APIs, control.

- :mod:`stack.phone.ua`: :class:`Phone`, one account, put together from :mod:`~stack.phone.account`
  (state and status), :mod:`~stack.phone.registration`, :mod:`~stack.phone.calls` (dialling, hang-up),
  :mod:`~stack.phone.answering` (incoming requests) and :mod:`~stack.phone.refer` (click-to-dial: a
  REFER from the registrar makes the phone call a number).
- :mod:`stack.phone.endpoint`: :class:`SipEndpoint`, one UDP socket for many phones;
  :mod:`stack.phone.transaction`: client transactions and :class:`SipTimers`.
- :mod:`stack.phone.control`: :class:`PhoneControl`, what an agent client may do to its phone,
  in-process (:class:`LocalPhoneControl`) or over the Yealink-style API (:class:`HttpPhoneControl`).
- :mod:`stack.phone.api`: the Yealink-style and Poly-style HTTP APIs; ``python -m stack.phone`` runs one.

SIP itself (message model, digest) is :mod:`sipcore`'s, shared with the rest of the lab.
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
