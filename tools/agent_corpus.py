"""Turn what ``CAPTURE=DIR bench/clients/agents.sh`` recorded into the labelled agent set in tests/data/agents/.

    python tools/agent_corpus.py DEV_CAPTURE HOLDOUT_CAPTURE

writes tests/data/agents/{claude_code,codex}.jsonl from the capture of bench/clients/agent_prompts.tsv and
{claude_code,codex}_holdout.jsonl from that of agent_prompts_holdout.tsv, with one harness.json for both.

Kept: every request of the agent's own conversation (``/v1/messages`` or ``/v1/responses``). Left out: the
liveness probes, and Claude Code's sub-agents (requests with ``x-claude-code-agent-id``): the simulated model
starts those with the prompt "sim", which no user wrote.

Each kept request is labelled by where it stands in its conversation:

- ``ask``: the newest turn is the user's message; the label is the one bench/clients/agent_prompts.tsv gives
  that prompt;
- ``loop``: the newest turn is a tool result, the model is mid-loop; labelled ``tool_use``, what a router that
  has not seen the conversation before should say (a sticky session keeps it on its first model instead).

Trimmed: the capture's temporary paths become ``/home/user/...``, the kernel version a fixed one, and install
and device ids zeros; only the session and protocol headers are kept. The harness's parts are kept whole,
since they are the point, but stored once: ``tools``, and any text (a system block, ``instructions``, a
message, a tool output) of 1,000 characters or more go to ``harness.json`` under their hash, and the body holds ``{"$ref": hash}``
(``tests/agent_data.py`` puts them back).
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "agents"
DOORS = ("/v1/messages", "/v1/responses")
KEPT_HEADERS = ("x-claude-code-session-id", "session-id", "thread-id", "anthropic-version", "anthropic-beta")
SHARED_KEYS = ("text", "content", "output", "system", "instructions")
SHARED_TEXT = 1000
_SCRUB = (
    (re.compile(r"-tmp-oar-agents-\w+-conv-[\w-]+-tinycalc"), "-home-user-tinycalc"),  # Claude Code's project dir
    (re.compile(r"/tmp/oar-agents\.\w+/conv/\w+/[\w-]+/tinycalc"), "/home/user/tinycalc"),
    (re.compile(r"/tmp/oar-agents\.\w+/conv/\w+/[\w-]+/home"), "/home/user"),
    (re.compile(r"/tmp/oar-agents\.\w+/bin"), "/home/user/.local/bin"),
    (re.compile(r"/tmp/oar-agents\.\w+"), "/home/user/.cache/agents"),
    (re.compile(r"OS Version: Linux [^\\\"]+"), "OS Version: Linux 6.8.0-generic"),
    (re.compile(r'(\\?"(?:device_id|installation_id|x-codex-installation-id)\\?":\s*\\?")[0-9a-f-]+'),
     lambda m: m.group(1) + re.sub(r"[0-9a-f]", "0", m.group(0)[len(m.group(1)):])),
)


def scrub(text: str) -> str:
    for pattern, replacement in _SCRUB:
        text = pattern.sub(replacement, text)
    return text


def turn_of(body: dict) -> str:
    """``loop`` when the newest turn is a tool result, else ``ask``."""
    if "messages" in body:
        last = body["messages"][-1]
        content = last.get("content")
        blocks = content if isinstance(content, list) else []
        return "loop" if last["role"] == "user" and any(b.get("type") == "tool_result" for b in blocks) else "ask"
    items = body["input"] if isinstance(body["input"], list) else []
    return "loop" if items and items[-1].get("type") == "function_call_output" else "ask"


class Shared:
    """The harness parts, stored once under the first 12 hex digits of their JSON's SHA-256."""

    def __init__(self) -> None:
        self.parts: dict[str, object] = {}

    def ref(self, value: object) -> dict[str, str]:
        key = hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:12]
        self.parts[key] = value
        return {"$ref": key}

    def body(self, body: dict) -> dict:
        return {k: self.ref(v) if k == "tools" and v else self._texts(v) if isinstance(v, (dict, list))
                else self.ref(v) if self._long(k, v) else v for k, v in body.items()}

    @staticmethod
    def _long(key: str, value: object) -> bool:
        return key in SHARED_KEYS and isinstance(value, str) and len(value) >= SHARED_TEXT

    def _texts(self, value: object) -> object:
        if isinstance(value, dict):
            return {k: self.ref(v) if self._long(k, v) else self._texts(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._texts(v) for v in value]
        return value


def cases(capture: Path, client: str, shared: Shared) -> list[dict]:
    out = []
    for conversation in sorted((capture / client).iterdir()):
        _, label, _ = (conversation / "prompt.tsv").read_text(encoding="utf-8").rstrip("\n").split("\t", 2)
        n = 0
        for path in sorted(conversation.glob("*.json")):
            entry = json.loads(scrub(path.read_text(encoding="utf-8")))
            if entry["method"] != "POST" or entry["path"].split("?")[0] not in DOORS:
                continue
            if "x-claude-code-agent-id" in entry["headers"]:
                continue
            n += 1
            turn = turn_of(entry["body"])
            out.append({
                "id": f"{conversation.name}/{n}", "label": label if turn == "ask" else "tool_use", "turn": turn,
                "path": entry["path"], "headers": {k: entry["headers"][k] for k in KEPT_HEADERS if k in entry["headers"]},
                "body": shared.body(entry["body"]),
            })
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    shared = Shared()
    OUT.mkdir(parents=True, exist_ok=True)
    for capture, suffix in zip(map(Path, argv), ("", "_holdout")):
        for client in ("claude_code", "codex"):
            rows = cases(capture, client, shared)
            with open(OUT / f"{client}{suffix}.jsonl", "w", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
            print(f"{client}{suffix}: {len(rows)} requests")
    (OUT / "harness.json").write_text(json.dumps(dict(sorted(shared.parts.items())), ensure_ascii=False, indent=0) + "\n",
                                      encoding="utf-8")
    print(f"harness.json: {len(shared.parts)} shared parts")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
