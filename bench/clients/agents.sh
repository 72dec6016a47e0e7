#!/usr/bin/env bash
# Smoke test with the real coding agents: Claude Code (Anthropic Messages) and Codex CLI (OpenAI Responses)
# each complete one non-interactive prompt through `ollama-agent-router serve --simulate`, offline.
#
# Not part of CI (it needs the npm registry). It installs both CLIs from npm into a temporary directory
# (or uses AGENTS_NPM_DIR when it already holds them), starts the router with its embedded simulator on a
# free loopback port, runs each agent with its own empty HOME, and checks that
#   - the agent exited 0 and printed the simulator's answer, and
#   - the router's access log shows the agent's requests on its door, answered 200, with the routing
#     decision (task type and model) on each line.
# The output is what docs/clients.md quotes.
#
# Usage: bench/clients/agents.sh            (ROUTER="python -m ollama_agent_router" to run from a checkout)
set -euo pipefail

PROMPT=${PROMPT:-"Write a Python function that reverses a string"}
ROUTER=${ROUTER:-ollama-agent-router}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/oar-agents.XXXXXX")
NPM_DIR=${AGENTS_NPM_DIR:-$WORK/npm}
ROUTER_PID=""

cleanup() {
    if [[ -n $ROUTER_PID ]]; then
        kill "$ROUTER_PID" 2>/dev/null || true
        wait "$ROUTER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

if [[ ! -x $NPM_DIR/node_modules/.bin/claude || ! -x $NPM_DIR/node_modules/.bin/codex ]]; then
    mkdir -p "$NPM_DIR"
    (cd "$NPM_DIR" && npm install -s @anthropic-ai/claude-code @openai/codex)
fi
BIN=$NPM_DIR/node_modules/.bin
echo "Claude Code $("$BIN/claude" --version < /dev/null), $("$BIN/codex" --version < /dev/null)"

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL=http://127.0.0.1:$PORT
LOG=$WORK/router.log
# Its own HOME and working directory: the bundled simulation profile, not a config lying around.
(cd "$WORK" && HOME=$WORK exec $ROUTER serve --simulate --host 127.0.0.1 --port "$PORT" --log-level info) > "$LOG" 2>&1 &
ROUTER_PID=$!
for _ in $(seq 100); do
    curl -sf "$URL/health" > /dev/null && break
    kill -0 "$ROUTER_PID" 2>/dev/null || { cat "$LOG"; fail "the router did not start"; }
    sleep 0.1
done
curl -sf "$URL/health" > /dev/null || fail "the router did not answer /health"
echo "router: $URL ($(head -1 "$LOG"))"

# The access-log lines for one door since line $2 of the log, as "METHOD path status taskType model".
decisions() {
    tail -n "+$2" "$LOG" | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        d = json.loads(line)
    except ValueError:
        continue
    if d.get("event") == "request" and d.get("path") != "/api/ps":
        print(d["method"], d["path"], d["status"], d.get("taskType", "-"), d.get("model", "-"))
' | grep -E "$1" || true
}

check() {  # name, door path, output file, log line the run started at
    local name=$1 door=$2 out=$3 from=$4 lines
    grep -q "Simulated reply from" "$out" || { cat "$out"; fail "$name printed no answer from the simulator"; }
    lines=$(decisions " $door " "$from")
    [[ -n $lines ]] || fail "$name sent nothing to $door"
    if grep -qv " 200 " <<< "$lines"; then echo "$lines"; fail "$name got a refusal on $door"; fi
    if grep -q " - -$" <<< "$lines"; then echo "$lines"; fail "$name has a request on $door without a routing decision"; fi
    echo "$name: answer \"$(grep -o 'Simulated reply from [^ ]*' "$out" | tail -1)\""
    echo "$name: router log (method, path, status, task type, model):"
    decisions . "$from" | sort | uniq -c | sed 's/^/    /'
}

from=$(($(wc -l < "$LOG") + 1))
mkdir -p "$WORK/claude-home"
rc=0
HOME=$WORK/claude-home ANTHROPIC_BASE_URL=$URL ANTHROPIC_AUTH_TOKEN=ollama ANTHROPIC_API_KEY='' \
    DISABLE_TELEMETRY=1 CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 \
    "$BIN/claude" -p "$PROMPT" < /dev/null > "$WORK/claude.out" 2>&1 || rc=$?
[[ $rc == 0 ]] || { cat "$WORK/claude.out"; fail "claude exited $rc"; }
check "Claude Code" /v1/messages "$WORK/claude.out" "$from"

from=$(($(wc -l < "$LOG") + 1))
mkdir -p "$WORK/codex-home" "$WORK/codex-work"
rc=0
(cd "$WORK/codex-work" && HOME=$WORK/codex-home "$BIN/codex" exec --skip-git-repo-check \
    -c model_provider=oar -c "model_providers.oar={name=\"oar\",base_url=\"$URL/v1\",wire_api=\"responses\"}" \
    -m auto "$PROMPT" < /dev/null > "$WORK/codex.out" 2>&1) || rc=$?
[[ $rc == 0 ]] || { cat "$WORK/codex.out"; fail "codex exited $rc"; }
check "Codex CLI" /v1/responses "$WORK/codex.out" "$from"

echo "OK: both agents completed a prompt through the router, each request routed"
