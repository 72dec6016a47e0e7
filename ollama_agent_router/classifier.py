"""Task classifier: one chat request -> task type, complexity, confidence and the signals that decided it.

Pure and stdlib-only: no model calls, no I/O after import. Three layers, first match wins:

1. ``router.taskType`` given explicitly (any string but ``auto``) is taken verbatim.
2. Structure rules: a request over ``large_context_tokens`` is ``large_context``; a non-empty ``tools`` array or a
   tool-calling exchange is ``tool_use``, except in a coding agent's request (``harness.read``), where tools are
   always on offer and only an ask for them or a model mid-loop is; a user turn with no words is ``unknown``.
3. A small softmax (multinomial logistic regression) over sparse binary features of the user's newest ask, read
   in the context of the conversation. Keywords match whole words only, so ``debug`` is not ``bug``, ``prefix`` is
   not ``fix``. Its weights live in ``classifier_model.json``, trained by ``tools/train_classifier.py``.
"""

from __future__ import annotations

import json
import math
import pkgutil
import re
import struct
from dataclasses import dataclass
from typing import NamedTuple

from .config.schema import CORE_TASK_TYPES
from .harness import Reading, read

TASK_TYPES = CORE_TASK_TYPES
MEDIUM_TOKENS = 3000  # above this a request is at least medium (original §4.5)
_HEAVY_TYPES = frozenset({"agentic_reasoning", "large_context"})


@dataclass(frozen=True)
class ClassifierSettings:
    large_context_tokens: int = 12_000
    min_confidence: float = 0.0
    default_task_type: str = "unknown"


class Classification(NamedTuple):
    """A tuple, not a frozen dataclass: one is built per request, and a frozen dataclass pays a setattr per field."""

    task_type: str
    complexity: str  # light | medium | heavy
    confidence: float  # 0..1
    requires_large_context: bool
    requires_tool_use: bool
    token_estimate: int
    explicit: bool  # came from router.taskType
    signals: tuple[str, ...]  # short reasons, e.g. ("kw:fix", "code:trace")
    harness: bool = False  # shaped like a coding agent's request: decided by the user's ask alone
    mid_loop: bool = False  # the newest turn is a tool result


# ---- lexicons (whole words, lowercase; English, Spanish, German, Polish, French) ---------------------------------
# Each concept becomes one feature ("kw:fix") shared by all its words, so a phrasing never seen in training
# still lands on the right side as long as one of its words is listed here.
_CONCEPTS: dict[str, str] = {
    "kw:fix": """fix fixes fixing fixed patch hotfix resolve solve repair workaround debug debugging correct
        arregla arreglar arreglo corrige corregir soluciona
        behebe beheben repariere reparieren korrigiere
        napraw naprawić popraw rozwiąż
        corriger répare réparer""",
    "kw:symptom": """bug bugs buggy broken breaks crash crashes crashing crashed error errors exception exceptions
        traceback stacktrace failing fails failed fail failure segfault segfaults panic panics panicked regression
        wrong incorrect undefined hangs hang freezes deadlock deadlocks leak leaks doesn isn won didn unexpected
        blows why wy stuck timeout times disconnects refuses refusing denied fatal
        falla fallo errores funciona
        fehler fehlermeldung absturz stürzt kompiliert warum funktioniert
        błąd błędu błędy wywala dlaczego działa
        erreur bogue plante pourquoi marche""",
    "kw:review": """review reviews reviewing reviewer audit audits auditing critique feedback nitpick nits lgtm smell smells
        readability maintainable maintainability idiomatic vulnerabilities vulnerability unsafe insecure assess rate
        opinion thoughts sanity check checks inspect examine evaluate spot risky risks problems issues weaknesses
        improve improvements concerns blocking approve correct
        revisa revisar revisión revises
        überprüfe überprüfen prüfe prüfen begutachte reviewen sicherheitslücken
        przejrzyj sprawdź oceń ocena recenzja
        relis relire revue évalue""",
    "kw:explain": """explain explains explaining walk understand meaning means explica erkläre wyjaśnij explique""",
    "kw:generate": """write writing create creating generate generating implement implementing implementation build
        scaffold add make code coding port convert translate refactor rewrite script boilerplate template stub
        give whip produce extend
        escribe escribir crea crear genera generar implementa implementar
        schreibe schreiben erstelle erstellen implementiere generiere programmiere
        napisz stwórz utwórz zaimplementuj wygeneruj
        écris écrire crée créer génère générer implémente implémenter""",
    "kw:summarize": """summarize summarise summarizing summarising summarized summary summaries tldr tl dr recap condense
        gist digest overview takeaways takeaway highlights highlight outline abstract shorten brief briefly points
        sum bullets notes
        resume resumen resumir resúmen resumo
        zusammenfassung zusammenfassen fasse kurzfassung
        podsumuj podsumowanie streszczenie streść
        résume résumé résumer synthèse""",
    "kw:plan": """plan planning architecture architect architectural design designing roadmap strategy strategies migrate
        migration steps step phases phased milestones milestone investigate investigation decompose breakdown
        approach approaches recommend scalable distributed rollout sequence constraints propose devise sketch
        timeline framework
        planifica planificar arquitectura diseña diseñar estrategia paso pasos
        plane planen architektur entwirf entwerfe strategie schritt schritte
        zaplanuj architekturę architektura zaprojektuj strategia kroki krok opracuj
        planifie planifier conçois stratégie étape étapes""",
    "kw:reason": """reason reasoning think carefully tradeoffs trade hypotheses hypothesis root cause diagnose puzzle
        riddle prove proof generalise generalize deduce logic calculate solve figure""",
    "kw:triage": """classify classification categorize categorise category categories label labels tag tags
        route routing triage prioritize prioritise priority severity urgent urgency spam ham sentiment assign bucket
        buckets intent intents department queue team teams owner p0 p1 p2 p3 toxic duplicate which options
        choose pick decide determine rank sort whether fake genuine flag
        clasifica clasificar categoriza categorías prioriza
        klassifiziere kategorisiere kategorie ordne priorisiere
        sklasyfikuj skategoryzuj przypisz priorytet oznacz kategoria
        classe classifie catégorise catégorie priorise""",
    "kw:chat": """hi hello hey yo thanks thank thx cheers morning evening night joke poem haiku limerick story recipe
        recommend suggest advice tips weather favorite favourite feel feeling sure nice cool great ok okay
        hola gracias qué cuál hallo danke wie cześć dzięki jaka bonjour merci quelle""",
    "kw:lang": """python javascript typescript js ts java golang rust ruby php kotlin swift c cpp csharp sql postgres mysql
        bash shell powershell html css react vue angular django flask fastapi node nodejs express spring rails
        laravel dart flutter scala haskell elixir perl lua terraform dockerfile yaml json regex
        api endpoint function method class variable compiler repo repository git commit pr unittest pytest jest
        npm pip cargo gradle maven webpack numpy pandas""",
    "kw:tech": """server servers nginx apache websocket websockets http https tcp dns ssl tls cors localhost backend
        frontend database db redis kafka docker kubernetes k8s kubectl pod pods container containers deploy
        deployment prod production staging ci pipeline build compile linux ubuntu terminal cli ssh cron aws gcp
        azure s3 ec2 helm oom memory cpu thread threads async query queries schema orm xml csv app ios android
        browser chrome safari firefox""",
    "kw:code": """code snippet module file files script program implementation diff patch pull merge test tests""",
}

# Tokens that show up in code far more than in prose; a few of them make a code signal even without fences.
_CODE_WORDS = frozenset(
    """def elif const let var func fn println printf impl struct usize nullptr namespace std cout isinstance self
    kwargs args async await lambda enum typedef pub mut nil null undefined return import public private static void
    int bool boolean foreach endif esac echo console len str dict init new throw catch try except raise interface
    package val fun defer goroutine chan err select from where join""".split()
)

# Short function words of the five languages: real requests almost always contain one, keyboard mashing never does.
_STOPWORDS = frozenset(
    """the a an is are was be to of in on for and or it this that my me you your i we with how what why can do does
    please pls not no yes from at by as if so but all any there here then than about into over just also some more
    most very too have has had were been will would should could our us they them their he she his her its who
    which when where whats one another way like get got
    el la los las un una es de en y que por para con mi me tu se lo
    der die das ein eine ist und zu mit ich du wie was nicht bitte mein den dem
    w na i z do się nie jak co to jest czy mój
    le les une est et à pour avec je tu ce que qui pas mon ma""".split()
)

_HEAVY_WORDS = frozenset(
    "architecture architectural architect roadmap microservices multistep architektur arquitectura architektura".split()
)
# Asking for the agent's tools (read on harness-shaped requests only, where tools on offer say nothing):
# a run or search verb with its object. "find" and "list" alone are not enough: "find the bug" is a fix.
_RUN_VERBS = frozenset("run rerun execute exec launch invoke".split())
_RUN_OBJECTS = frozenset("""test tests suite pytest jest unittest tox npm yarn pnpm make build lint linter linters
    command commands script scripts migration migrations benchmark benchmarks git docker cargo mypy ruff ci checks
    typecheck""".split())
_SEARCH_VERBS = frozenset("search grep find locate list scan".split())
_SEARCH_OBJECTS = frozenset("""codebase repo repository project files directory directories folder folders usages usage
    uses callers occurrences references definitions todo todos everywhere where""".split())
# Tokens that name a source file next to a dot ("conftest.py" tokenizes to "conftest", "py").
_FILE_EXTENSIONS = frozenset("py js jsx ts tsx rs java kt rb php cpp hpp cs swift yaml yml toml tf vue".split())
# Substrings that stack traces and compiler or test-runner output print (Python, JS, Java, Go, Rust, C, npm).
_TRACE_MARKERS = ("error:", "exception:", "error[", "\tat ", "    at ", "panic", "segmentation fault", "npm err!")
_HEAD, _TAIL = 800, 400  # characters of a long message's prose read for words
_INTENTS = (
    "kw:fix",
    "kw:symptom",
    "kw:review",
    "kw:explain",
    "kw:generate",
    "kw:summarize",
    "kw:plan",
    "kw:reason",
    "kw:triage",
)

_WORD_RE = re.compile(r"\w")
_MASH_RE = re.compile(r"[bcdfghjklmnpqrstvwxz]{4,}")
_URL_RE = re.compile(r"(?:[a-z]+://|www\.)\S+", re.IGNORECASE)
# ASCII punctuation and whitespace become spaces, all other bytes (UTF-8 letters included) stay: splitting the
# translated bytes is several times faster than a regex findall, and this runs on every request.
_ASCII_SEPARATORS = bytes(32 if (not chr(i).isalnum() and chr(i) != "_" and i < 128) else i for i in range(256))
_UNICODE_SEPARATORS = str.maketrans({c: " " for c in "¿¡«»„“”‘’–—…·•"})


def _build_lexicon(prefix: str) -> dict[str, tuple[str, ...]]:
    lexicon: dict[str, list[str]] = {}
    for concept, words in _CONCEPTS.items():
        for word in words.split():
            concepts = lexicon.setdefault(word, [])
            if prefix + concept not in concepts:
                concepts.append(prefix + concept)
    return {word: tuple(concepts) for word, concepts in lexicon.items()}


# One lexicon per feature prefix, built once, so no feature name is assembled per request.
_LEXICON = _build_lexicon("")
_LEAD_LEXICON = _build_lexicon("lead:")
_CONTEXT_LEXICON = _build_lexicon("ctx:")
_LEXICON_WORDS = frozenset(_LEXICON)
# Words that put a request in a technical setting even without code in it ("nginx", "python").
_TECH_WORDS = frozenset(w for w, concepts in _LEXICON.items() if "kw:lang" in concepts or "kw:tech" in concepts)
# An intent word means different things next to code and in plain prose ("review my essay", "fix my bike"), so
# each intent also becomes "<intent>+code" or "<intent>+prose"; one lexicon for each case keeps that a lookup.
_CODE_LEXICON = {w: cs + tuple(c + "+code" for c in cs if c in _INTENTS) for w, cs in _LEXICON.items()}
_PROSE_LEXICON = {w: cs + tuple(c + "+prose" for c in cs if c in _INTENTS) for w, cs in _LEXICON.items()}
_FIRST_INTENT = {
    word: tuple("first:" + c for c in concepts if c in _INTENTS)
    for word, concepts in _LEXICON.items()
    if any(c in _INTENTS for c in concepts)
}
_CODE_FEATURES = {
    prefix: {name: prefix + "code:" + name for name in ("fence", "trace", "diff", "path", "syntax", "inline")}
    for prefix in ("", "ctx:")
}


# Fixed-point packing: each feature's per-label weights become one int, _FIELD_BITS bits a label, every field
# raised by _OFFSET so it never goes negative. Scoring a request is then one C-level sum() over its features
# instead of a Python loop per label, and the fields are unpacked once at the end.
_SCALE = 1000  # the model file keeps 3 decimals, so scaled weights are exact ints
_FIELD_BITS = 32
_OFFSET = 1 << 16  # fields stay exact while |weight| * _SCALE < _OFFSET and fewer than 2**15 features are active


def _load_model() -> tuple[tuple[str, ...], tuple[float, ...], dict[str, tuple[float, ...]]]:
    # pkgutil also reads from inside a zipapp or a wheel, and costs less to import than importlib.resources.
    raw = json.loads(pkgutil.get_data(__package__, "classifier_model.json") or b"{}")
    labels, bias = tuple(raw["labels"]), tuple(raw["bias"])
    weights = {feature: tuple(row) for feature, row in raw["weights"].items()}
    rows = [bias, *weights.values()]
    if len(rows) >= 1 << 15 or any(len(r) != len(labels) or max(map(abs, r)) * _SCALE >= _OFFSET for r in rows):
        raise ValueError("classifier_model.json does not fit the packed scoring; retrain it")
    return labels, bias, weights


def _pack(row: tuple[float, ...]) -> int:
    return sum((round(w * _SCALE) + _OFFSET) << (_FIELD_BITS * k) for k, w in enumerate(row))


_LABELS, _BIAS, _WEIGHTS = _load_model()
_VOCABULARY = frozenset(_WEIGHTS)
_PACKED = {feature: _pack(row) for feature, row in _WEIGHTS.items()}
_PACKED_BIAS = _pack(_BIAS)  # counts as one more active feature
_FIELDS = struct.Struct(f"<{len(_LABELS)}I")  # unpacks all the 32-bit fields in one call
# Decision reasons name concepts and shapes ("kw:fix", "code:trace"), not single words: "lead:kw:fix" and
# "first:kw:fix" both read "kw:fix".
_SIGNAL_NAMES = {f: f.removeprefix("lead:").removeprefix("first:") for f in _WEIGHTS if ":" in f}
_NAMED = frozenset(_SIGNAL_NAMES)
_NAMED_WEIGHTS = tuple({f: _WEIGHTS[f][k] for f in _NAMED} for k in range(len(_LABELS)))


# ---- features ------------------------------------------------------------------------------------------------------
def _tokens(lowered: str) -> list[str]:
    spaced = lowered.encode("utf-8", "surrogatepass").translate(_ASCII_SEPARATORS).decode("utf-8", "surrogatepass")
    if not spaced.isascii():
        spaced = spaced.translate(_UNICODE_SEPARATORS)
    return spaced.split()


def _ends(text: str) -> str:
    """The ask sits at the start or the end of a message; the middle of a long one is pasted material."""
    return text if len(text) <= _HEAD + _TAIL else text[:_HEAD] + " " + text[-_TAIL:]


def _code_features(text: str, words: set[str], names: dict[str, str]) -> list[str]:
    found = []
    if "```" in text:
        found.append(names["fence"])
    elif text.count("`") >= 2:
        found.append(names["inline"])
    if any(map(text.__contains__, _TRACE_MARKERS)):
        found.append(names["trace"])
    if "@@ -" in text:  # a unified diff hunk header
        found.append(names["diff"])
    if not _FILE_EXTENSIONS.isdisjoint(words):
        found.append(names["path"])
    if len(words & _CODE_WORDS) + min(text.count(";") + text.count("{") + text.count("=>"), 4) >= 4:
        found.append(names["syntax"])
    return found


def _concepts(words: set[str], lexicon: dict[str, tuple[str, ...]]) -> set[str]:
    return {c for word in words & _LEXICON_WORDS for c in lexicon[word]}


def _is_mash(prose: str, tokens: list[str]) -> bool:
    """Keyboard mashing: most longer words carry a run of consonants no language here writes."""
    longer = sum(len(t) >= 3 for t in tokens)
    return longer > 0 and 2 * len(_MASH_RE.findall(prose)) >= longer


def _turn_features(text: str) -> set[str]:
    lowered = text.lower()
    chunks = lowered.split("```")
    # Words inside code fences are identifiers, not the request: only the code shape counts from them.
    prose = _ends(" ".join(chunks[0::2])) if len(chunks) > 1 else _ends(lowered)
    tokens = _tokens(prose)
    words = set(tokens)
    code_words = words.union(_tokens(" ".join(chunks[1::2])[:_HEAD])) if len(chunks) > 1 else words
    code = _code_features(lowered, code_words, _CODE_FEATURES[""])
    technical = code or not words.isdisjoint(_TECH_WORDS)
    features = words | _concepts(words, _CODE_LEXICON if technical else _PROSE_LEXICON)
    features.update(code)
    # The opening words, and above all the first intent word, usually name the job:
    # "summarize the bugs in this code" is a summary.
    first_seen = False
    for position, token in enumerate(tokens[:12]):
        if position < 6 and token in _LEAD_LEXICON:
            features.update(_LEAD_LEXICON[token])
        if not first_seen and token in _FIRST_INTENT:
            features.update(_FIRST_INTENT[token])
            first_seen = True
    stripped = lowered.strip()
    size = len(stripped)
    features.add("len:tiny" if size < 16 else "len:short" if size < 60 else "len:mid" if size < 800 else "len:long")
    stopwords = len(words & _STOPWORDS)
    if stopwords:
        features.add("shape:prose")
    elif words.isdisjoint(_LEXICON_WORDS):
        features.add("shape:nostop")
    if stopwords <= 1 and len(tokens) <= 8 and _is_mash(prose, tokens):
        features.add("shape:mash")
    if stripped.endswith("?"):
        features.add("shape:question")
    if "://" in lowered or "www." in lowered:
        features.add("shape:url")
    if _is_heavy(prose, words):
        features.add("shape:heavy")
    return features


def _is_heavy(prose: str, words: set[str]) -> bool:
    """Multi-step or architecture-level wording, which makes a request heavy whatever its type."""
    if not words.isdisjoint(_HEAVY_WORDS) or "end-to-end" in prose:
        return True
    return "step" in words and ("multi" in words or "step by step" in prose or "step-by-step" in prose)


def _asks_heavy(text: str | None) -> bool:
    prose = _ends(text.lower()) if text else ""
    return _is_heavy(prose, set(_tokens(prose)))


def _context_features(reading: Reading) -> set[str]:
    features: set[str] = set()
    if reading.earlier:
        # Only the recent past (harness.CONTEXT_CHARS): the turn right before usually says what "it" refers to.
        recent = reading.earlier.lower()
        words = set(_tokens(recent))
        features.add("ctx:turns")
        features.update(_concepts(words, _CONTEXT_LEXICON))
        features.update(_code_features(recent, words, _CODE_FEATURES["ctx:"]))
    return features


def extract_features(messages: object) -> frozenset[str] | None:
    """The sparse binary features the model scores, or None where a rule decides without the model.

    The trainer learns from exactly what classify() would score.
    """
    reading = read(messages)
    if reading.ask is None or _no_words(reading.ask):
        return None
    return frozenset(_turn_features(reading.ask) | _context_features(reading))


def _asks_for_tools(ask: str) -> bool:
    """The ask needs the agent's tools: a run or search verb, before any other intent word, with its object
    ("run the tests", "search the codebase for ...", "find where X is defined")."""
    tokens = _tokens(_ends(ask.lower()))[:60]
    for position, token in enumerate(tokens[:12]):
        if token in _FIRST_INTENT:
            return False
        objects = _RUN_OBJECTS if token in _RUN_VERBS else _SEARCH_OBJECTS if token in _SEARCH_VERBS else None
        if objects is not None:
            return not objects.isdisjoint(tokens[position + 1:])
    return False


# ---- decision ------------------------------------------------------------------------------------------------------
def _score(features: set[str] | frozenset[str]) -> tuple[str, float, tuple[str, ...]]:
    active = _VOCABULARY.intersection(features)
    total = _PACKED_BIAS + sum(map(_PACKED.__getitem__, active))
    base = (len(active) + 1) * _OFFSET
    scores = [field - base for field in _FIELDS.unpack(total.to_bytes(_FIELDS.size, "little"))]  # scaled by _SCALE
    top = max(scores)
    best = scores.index(top)
    confidence = 1.0 / sum([math.exp((s - top) / _SCALE) for s in scores])
    weight = _NAMED_WEIGHTS[best]
    signals: list[str] = []
    for feature in sorted(_NAMED.intersection(active), key=weight.__getitem__, reverse=True):
        if weight[feature] <= 0 or len(signals) == 3:
            break
        name = _SIGNAL_NAMES[feature]
        if name not in signals:
            signals.append(name)
    return _LABELS[best], confidence, tuple(signals) or ("prior",)


def _complexity(task_type: str, tokens: int, heavy_marker: bool, settings: ClassifierSettings) -> str:
    if task_type in _HEAVY_TYPES or tokens > settings.large_context_tokens or heavy_marker:
        return "heavy"
    if tokens > MEDIUM_TOKENS or task_type.startswith("code_") or task_type == "tool_use":
        return "medium"
    return "light"


def _no_words(text: str | None) -> str | None:
    """Why a last user turn holds no task at all (the signal), or None when it has words to read."""
    if text is None:
        return "no-user-turn"
    if not text.strip():
        return "empty"
    if not _WORD_RE.search(text):
        return "no-words"
    if ("://" in text or "www." in text) and not _WORD_RE.search(_URL_RE.sub(" ", text)):
        return "url-only"
    return None


def _content_decision(ask: str | None, reading: Reading) -> tuple[str, float, tuple[str, ...], bool]:
    reason = _no_words(ask)
    if reason or ask is None:
        return "unknown", 0.95, (reason or "no-user-turn",), False
    features = _turn_features(ask)
    task_type, confidence, signals = _score(features | _context_features(reading))
    return task_type, confidence, signals, "shape:heavy" in features


def _agent_decision(reading: Reading, continuing: bool) -> tuple[str, float, tuple[str, ...], bool]:
    """A harness-shaped request is decided by the user's ask alone (docs/classifier.md, "Agent requests").

    Tools on offer say nothing: ``tool_use`` is an ask that needs them, or a model mid-loop in a conversation
    not classified before (``continuing`` False: no sticky session knows it)."""
    if reading.mid_loop and not continuing:
        return "tool_use", 0.9, ("harness", "mid-loop"), _asks_heavy(reading.ask)
    if reading.ask is not None and not _no_words(reading.ask) and _asks_for_tools(reading.ask):
        return "tool_use", 0.9, ("harness", "asks-for-tools"), _asks_heavy(reading.ask)
    task_type, confidence, signals, heavy = _content_decision(reading.ask, reading)
    return task_type, confidence, ("harness",) + signals, heavy


def classify(
    messages: list,
    tools: list | None = None,
    explicit_task_type: str | None = None,
    settings: ClassifierSettings = ClassifierSettings(),
    *,
    continuing: bool = False,
) -> Classification:
    """``continuing``: the conversation was classified before (a sticky session knows it), so a model mid-loop
    is still working on the user's ask rather than on an unknown tool task."""
    reading = read(messages, tools)
    tokens = math.ceil(reading.total_chars / 4)
    # A harness's system prompt is the same for every task: its requests are sized by the conversation alone.
    task_tokens = math.ceil((reading.total_chars - reading.system_chars) / 4) if reading.harness else tokens
    large = task_tokens > settings.large_context_tokens
    tool_use = (isinstance(tools, list) and len(tools) > 0) or reading.tool_exchange

    explicit = isinstance(explicit_task_type, str) and explicit_task_type not in ("", "auto")
    if explicit:
        task_type, confidence, signals = str(explicit_task_type), 1.0, ("explicit",)
        complexity = "heavy" if task_type in _HEAVY_TYPES else "medium"
        large, tool_use = large or task_type == "large_context", tool_use or task_type == "tool_use"
    else:
        heavy_marker = False
        if large:
            task_type, confidence, signals = "large_context", 0.99, (f"tokens>{settings.large_context_tokens}",)
        elif reading.harness:
            task_type, confidence, signals, heavy_marker = _agent_decision(reading, continuing)
        elif tool_use:
            task_type, confidence = "tool_use", 0.99
            signals = ("tools[]",) if isinstance(tools, list) and tools else ("tool-exchange",)
            heavy_marker = _asks_heavy(reading.ask)
        else:
            task_type, confidence, signals, heavy_marker = _content_decision(reading.ask, reading)
        if confidence < settings.min_confidence:
            signals = signals + (f"low-confidence->{settings.default_task_type}",)
            task_type = settings.default_task_type
        complexity = _complexity(task_type, task_tokens, heavy_marker, settings)
    return Classification(task_type, complexity, round(confidence, 4), large, tool_use, tokens, explicit, signals,
                          reading.harness, reading.mid_loop)
