"""What to do after an upstream attempt: pure decisions over plain data, no I/O and no event loop.

The runner asks ``after_attempt`` once per attempt and does what the answer says; the cooldown bookkeeping
is a value (``Cooldowns``) whose timers the runner owns. Nothing here has reached the client yet when it
is asked: failing over is only possible before the first byte, and that is the runner's business.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

# A 5xx is the model's failure (a crashed runner, a full Ollama queue): another model may do better.
FAILOVER_STATUSES = frozenset({500, 502, 503, 504})


class Step(NamedTuple):
    """The answer to "this attempt ended like this: what next?"."""

    retry: bool  # try the next model in the failover order
    failed: bool  # count one consecutive failure toward the model's cooldown
    ollama_down: bool  # a connection refusal is Ollama-wide: refresh reachability, never blame the model


_OLLAMA_DOWN = Step(retry=False, failed=False, ollama_down=True)
_SPENT = Step(retry=False, failed=True, ollama_down=False)  # failed, and no other model may be tried
_NEXT = Step(retry=True, failed=True, ollama_down=False)
_ANSWER = Step(retry=False, failed=False, ollama_down=False)


def after_attempt(outcome: str, status: int = 0, *, has_next: bool) -> Step:
    """``outcome`` is ``ok`` (a reply head arrived, with ``status``), ``connect``, ``timeout`` or ``closed``.

    - A refused connection is Ollama's, not the model's: stop, no cooldown.
    - A timeout has used up the caller's time: count it, but do not retry.
    - A cut connection or a 5xx before the first byte: count it and try the next model, if there is one.
    - Any other reply (2xx, 4xx) is the answer, and clears the model's failure count.
    """
    if outcome == "ok" and status not in FAILOVER_STATUSES:
        return _SPENT if status >= 500 else _ANSWER
    if outcome == "connect":
        return _OLLAMA_DOWN
    if outcome == "timeout":
        return _SPENT
    return _NEXT if has_next else _SPENT  # a cut connection, or a 5xx, before the first byte


@dataclass
class Cooldowns:
    """Consecutive failures per model; ``threshold`` in a row puts a model in cooldown (and resets its count)."""

    threshold: int
    failures: dict[str, int] = field(default_factory=dict)

    def failed(self, model: str) -> bool:
        """Count a failure; True when this one starts a cooldown."""
        n = self.failures.get(model, 0) + 1
        if n >= self.threshold:
            self.failures.pop(model, None)
            return True
        self.failures[model] = n
        return False

    def succeeded(self, model: str) -> None:
        self.failures.pop(model, None)
