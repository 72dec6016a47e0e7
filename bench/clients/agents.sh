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
# Capture mode (CAPTURE=DIR): instead of the one smoke prompt, every conversation in PROMPTS
# (bench/clients/agent_prompts.tsv) is run with both agents, each in a fresh copy of agent_project/, through
# capture.py, a recording proxy in front of the router. Every request body and header (credentials left out)
# lands in DIR/claude_code/<id>/ and DIR/codex/<id>/; tools/agent_corpus.py turns that into the labelled set
# under tests/data/agents/. The simulated model answers a request that offers tools by calling the first one
# with "sim" as its arguments; the `sim` script on the agents' PATH prints the file the prompt names, so the
# tool results that come back look like a real session's.
#
# Usage: bench/clients/agents.sh            (ROUTER="python -m ollama_agent_router" to run from a checkout)
#        CAPTURE=/tmp/captured bench/clients/agents.sh
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)

PROMPT=${PROMPT:-"Write a Python function that reverses a string"}
ROUTER=${ROUTER:-ollama-agent-router}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/oar-agents.XXXXXX")
NPM_DIR=${AGENTS_NPM_DIR:-$WORK/npm}
PROMPTS=${PROMPTS:-$HERE/agent_prompts.tsv}
CAPTURE=${CAPTURE:-}
ROUTER_PID=""
PROXY_PID=""

cleanup() {
    for pid in $PROXY_PID $ROUTER_PID; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
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

run_claude() {  # base URL, HOME, working directory, output file, prompt, extra arguments...
    local url=$1 home=$2 dir=$3 out=$4 prompt=$5
    shift 5
    (cd "$dir" && HOME=$home ANTHROPIC_BASE_URL=$url ANTHROPIC_AUTH_TOKEN=ollama ANTHROPIC_API_KEY='' \
        DISABLE_TELEMETRY=1 CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 \
        "$BIN/claude" "$@" -p "$prompt" < /dev/null > "$out" 2>&1)
}

run_codex() {  # base URL, HOME, working directory, output file, prompt, extra arguments (before the prompt)...
    local url=$1 home=$2 dir=$3 out=$4 prompt=$5
    shift 5
    (cd "$dir" && HOME=$home "$BIN/codex" exec --skip-git-repo-check \
        -c model_provider=oar -c "model_providers.oar={name=\"oar\",base_url=\"$url/v1\",wire_api=\"responses\"}" \
        -m auto "$@" "$prompt" < /dev/null > "$out" 2>&1)
}

capture() {  # every conversation in $PROMPTS, both agents, through the recording proxy
    local raw=$WORK/raw port proxy id label shows tools prompt client n=0
    mkdir -p "$raw" "$CAPTURE"
    python3 "$HERE/capture.py" --port 0 --target "$URL" --out "$raw" > "$WORK/proxy.port" &
    PROXY_PID=$!
    for _ in $(seq 100); do [[ -s $WORK/proxy.port ]] && break; sleep 0.1; done
    proxy=http://127.0.0.1:$(cat "$WORK/proxy.port")
    mkdir -p "$WORK/bin" && cp "$HERE/sim" "$WORK/bin/sim"
    while IFS=$'\t' read -r id label shows tools prompt; do
        [[ -z $id || $id == \#* ]] && continue
        n=$((n + 1))
        for client in claude_code codex; do
            local conv=$WORK/conv/$client/${id#+} home dir args=()
            if [[ $id != +* ]]; then  # a new conversation: its own HOME and a fresh copy of the project
                rm -rf "$conv" && mkdir -p "$conv/home" && cp -r "$HERE/agent_project" "$conv/tinycalc"
                echo "$conv" > "$WORK/conv/$client.last"
            fi
            conv=$(cat "$WORK/conv/$client.last")
            home=$conv/home dir=$conv/tinycalc
            # Codex runs its shell as a login shell, which resets PATH from the profile.
            local where=-
            [[ $shows != - ]] && where=$HERE/$shows
            printf 'export PATH=%q:$PATH SIM_SHOWS=%q\n' "$WORK/bin" "$where" | tee "$home/.bash_profile" > "$home/.bashrc"
            if [[ $client == claude_code ]]; then
                args=(--allowedTools 'Bash(sim)')
                [[ $tools == noagent ]] && args+=(--disallowedTools Agent)
                [[ $id == +* ]] && args+=(--continue)
                PATH=$WORK/bin:$PATH SIM_SHOWS=$where run_claude "$proxy" "$home" "$dir" "$WORK/out" "$prompt" "${args[@]}" \
                    || { cat "$WORK/out"; fail "claude: $id"; }
            else
                [[ $id == +* ]] && args=(resume --last)
                PATH=$WORK/bin:$PATH SIM_SHOWS=$where run_codex "$proxy" "$home" "$dir" "$WORK/out" "$prompt" "${args[@]}" \
                    || { cat "$WORK/out"; fail "codex: $id"; }
            fi
            mkdir -p "$CAPTURE/$client/$(printf '%02d' $n)-${id#+}"
            printf '%s\t%s\t%s\n' "$id" "$label" "$prompt" > "$CAPTURE/$client/$(printf '%02d' $n)-${id#+}/prompt.tsv"
            find "$raw" -name '*.json' -exec mv -t "$CAPTURE/$client/$(printf '%02d' $n)-${id#+}" {} +
        done
        echo "captured $id ($label)"
    done < "$PROMPTS"
    echo "OK: captured $n conversations from both agents under $CAPTURE"
}

if [[ -n $CAPTURE ]]; then
    capture
    exit 0
fi

# smoke NAME RUNNER DIR DOOR: one prompt through an agent, then its requests must be in the router's log, routed.
smoke() {
    local name=$1 runner=$2 dir=$3 door=$4 from rc=0
    from=$(($(wc -l < "$LOG") + 1))
    mkdir -p "$WORK/$dir-home" "$WORK/$dir-work"
    "$runner" "$URL" "$WORK/$dir-home" "$WORK/$dir-work" "$WORK/$dir.out" "$PROMPT" || rc=$?
    [[ $rc == 0 ]] || { cat "$WORK/$dir.out"; fail "$dir exited $rc"; }
    check "$name" "$door" "$WORK/$dir.out" "$from"
}

smoke "Claude Code" run_claude claude /v1/messages
smoke "Codex CLI" run_codex codex /v1/responses

echo "OK: both agents completed a prompt through the router, each request routed"
