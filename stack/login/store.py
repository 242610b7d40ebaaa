"""The unified login's durable state: the latest known session of every agent, and planned-switch rules.

Why one row per agent (not per session): fencing only needs the newest login of an agent anywhere. A row
names the site holding it and its epoch; when the peer reports a newer epoch the row moves to the peer's
site and this site's session is fenced by that very update. Epochs are wall-clock milliseconds bumped past
anything known (a hybrid logical clock), so two sites that could not talk still order their logins.
Rules are replicated last-writer-wins on ``updated``; a removal is a tombstone so it replicates too.

SQLite in WAL mode with ``synchronous=NORMAL``: a commit costs no fsync, yet a crash loses at most the
last moments and never corrupts; the in-memory dicts are the read path.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SCOPES = ("agent", "skill_group", "region", "system")  # most specific first: that order decides ties

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    agent TEXT PRIMARY KEY, site TEXT NOT NULL, epoch INTEGER NOT NULL, extension TEXT NOT NULL,
    status TEXT NOT NULL, since REAL NOT NULL, via TEXT NOT NULL DEFAULT 'local'
);
CREATE TABLE IF NOT EXISTS rules (
    id TEXT PRIMARY KEY, scope TEXT NOT NULL, value TEXT NOT NULL, target TEXT NOT NULL,
    enabled INTEGER NOT NULL, created REAL NOT NULL, updated REAL NOT NULL, removed INTEGER NOT NULL DEFAULT 0
);
"""


@dataclass
class SessionRow:
    agent: str
    site: str
    epoch: int
    extension: str
    status: str  # "active" | "logged_out"
    since: float
    via: str = "local"

    def view(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Rule:
    id: str
    scope: str
    value: str
    target: str
    enabled: bool
    created: float
    updated: float
    removed: bool = False

    def view(self) -> dict[str, Any]:
        return asdict(self)


class Store:
    """SQLite-backed sessions and rules with in-memory read copies."""

    def __init__(self, path: str | Path) -> None:
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self.sessions: dict[str, SessionRow] = {
            r[0]: SessionRow(*r)
            for r in self.db.execute("SELECT agent, site, epoch, extension, status, since, via FROM sessions")
        }
        self.rules: dict[str, Rule] = {
            r[0]: Rule(r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6], bool(r[7]))
            for r in self.db.execute(
                "SELECT id, scope, value, target, enabled, created, updated, removed FROM rules"
            )
        }

    def close(self) -> None:
        self.db.close()

    # ---- sessions ------------------------------------------------------------------------------------

    def next_epoch(self, agent: str, floor: int = 0) -> int:
        """An epoch above every one known for ``agent`` (and above ``floor``), from the wall clock."""
        known = self.sessions.get(agent)
        return max(int(time.time() * 1000), (known.epoch + 1) if known else 0, floor + 1)

    def put_session(self, row: SessionRow) -> None:
        self.sessions[row.agent] = row
        self.db.execute(
            "INSERT OR REPLACE INTO sessions (agent, site, epoch, extension, status, since, via) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (row.agent, row.site, row.epoch, row.extension, row.status, row.since, row.via),
        )

    def merge_session(self, row: SessionRow) -> SessionRow | None:
        """Take ``row`` if it is newer than what we hold; return the replaced row (None if not taken).

        Newer means a higher epoch, or the same epoch going from active to logged out.
        """
        cur = self.sessions.get(row.agent)
        if cur is not None and (
            row.epoch < cur.epoch
            or (row.epoch == cur.epoch and not (cur.status == "active" and row.status != "active"))
        ):
            return None
        self.put_session(row)
        return cur or SessionRow(row.agent, "", 0, row.extension, "none", 0.0)

    # ---- rules ---------------------------------------------------------------------------------------

    def add_rule(self, scope: str, value: str, target: str, enabled: bool = True) -> Rule:
        now = time.time()
        rule = Rule("r" + secrets.token_hex(4), scope, value, target, enabled, now, now)
        self.put_rule(rule)
        return rule

    def put_rule(self, rule: Rule) -> None:
        self.rules[rule.id] = rule
        self.db.execute(
            "INSERT OR REPLACE INTO rules (id, scope, value, target, enabled, created, updated, removed) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                rule.id,
                rule.scope,
                rule.value,
                rule.target,
                int(rule.enabled),
                rule.created,
                rule.updated,
                int(rule.removed),
            ),
        )

    def merge_rule(self, rule: Rule) -> bool:
        """Take a replicated rule if it is newer than ours (last writer wins); True when taken."""
        cur = self.rules.get(rule.id)
        if cur is not None and cur.updated >= rule.updated:
            return False
        self.put_rule(rule)
        return True

    def live_rules(self) -> list[Rule]:
        return [r for r in self.rules.values() if not r.removed]

    def match(self, attrs: dict[str, str]) -> Rule | None:
        """The enabled rule that applies to an agent: the most specific scope, then the newest."""
        best: Rule | None = None
        for r in self.rules.values():
            if r.removed or not r.enabled or attrs.get(r.scope) != r.value:
                continue
            key = (SCOPES.index(r.scope), -r.created)
            if best is None or key < (SCOPES.index(best.scope), -best.created):
                best = r
        return best
