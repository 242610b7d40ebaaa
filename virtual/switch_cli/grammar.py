"""Command grammar: keyword trees with unique-prefix abbreviation, as both vendors parse.

Why one parser for two dialects: IOS and VRP both accept any unique prefix of a keyword and take an
interface name as one token or two (``gi0/3``, ``GE 0/0/3``); they differ only in the words and in how an
error is printed, which the dialects own.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from virtual.switch_cli.ports import PortTable


class _Node:
    __slots__ = ("words", "params", "handler")

    def __init__(self) -> None:
        self.words: dict[str, _Node] = {}
        self.params: list[tuple[str, _Node]] = []
        self.handler: Callable[..., list[str]] | None = None


@dataclass
class Parsed:
    handler: Callable[..., list[str]] | None = None
    args: list[Any] = field(default_factory=list)
    error: str = ""  # "invalid" | "incomplete" | "ambiguous" | "wrong"
    pos: int = 0


class Grammar:
    """Commands of one CLI mode. Specs are words plus <if>, <num>, <word>, <rest> parameters."""

    def __init__(self, ports: PortTable) -> None:
        self.root = _Node()
        self.ports = ports

    def add(self, spec: str, handler: Callable[..., list[str]]) -> None:
        node = self.root
        for tok in spec.split():
            if tok.startswith("<"):
                child = next((c for kind, c in node.params if kind == tok), None)
                if child is None:
                    child = _Node()
                    node.params.append((tok, child))
                node = child
            else:
                node = node.words.setdefault(tok.lower(), _Node())
        node.handler = handler

    def parse(self, line: str) -> Parsed:
        tokens = [(m.start(), m.group()) for m in re.finditer(r"\S+", line)]
        node, args, i = self.root, [], 0
        while i < len(tokens):
            pos, tok = tokens[i]
            low = tok.lower()
            words = [low] if low in node.words else [w for w in node.words if w.startswith(low)]
            if len(words) == 1:
                node, i = node.words[words[0]], i + 1
                continue
            if len(words) > 1:
                return Parsed(error="ambiguous", pos=pos)
            for kind, child in node.params:
                got = self._param(kind, line, tokens, i)
                if got is not None:
                    value, used = got
                    args.append(value)
                    node, i = child, i + used
                    break
            else:
                return Parsed(error="wrong" if node.params and not node.words else "invalid", pos=pos)
        if node.handler is None:
            return Parsed(error="incomplete", pos=len(line.rstrip()))
        return Parsed(handler=node.handler, args=args)

    def _param(self, kind: str, line: str, tokens: list[tuple[int, str]], i: int) -> tuple[Any, int] | None:
        pos, tok = tokens[i]
        if kind == "<num>":
            return (int(tok), 1) if tok.isdigit() else None
        if kind == "<word>":
            return tok, 1
        if kind == "<rest>":
            return line[pos:].strip(), len(tokens) - i
        if kind == "<if>":
            port = self.ports.resolve(tok)
            if port:
                return port, 1
            if i + 1 < len(tokens):
                port = self.ports.resolve(tok + tokens[i + 1][1])
                if port:
                    return port, 2
            return None
        raise ValueError(f"unknown parameter kind {kind}")

    def specs(self) -> list[tuple[str, Callable[..., list[str]]]]:
        """Every (spec, handler) of this grammar, to build one mode's grammar from another's."""
        return _walk(self.root)


def _walk(node: _Node, prefix: str = "") -> list[tuple[str, Callable[..., list[str]]]]:
    found = []
    if node.handler is not None:
        found.append((prefix.strip(), node.handler))
    for word, child in node.words.items():
        found += _walk(child, f"{prefix} {word}")
    for kind, child in node.params:
        found += _walk(child, f"{prefix} {kind}")
    return found
