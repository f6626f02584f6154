"""Answer extraction and option matching: the one extractor shared by the GRPO reward and the
evaluation, so that what is rewarded and what is scored cannot drift apart.

    >>> from sightsound.answers import is_correct, match_option
    >>> match_option("<think>A dog? No: rain.</think><answer>(C)</answer>", ["Dog", "Car", "Rain"])
    2
    >>> is_correct("<answer>B. Woman</answer>", {"options": ["Man", "Woman"], "answer": 1})
    (1, True)

`match_option` reads the last `<answer>` block and tries option letters, then option text, then
embedding similarity; `match_open` judges open-ended answers, `mmau_correct` is MMAU's own rule.
Details: docs/reference.md, "sightsound/answers.py".
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from sightsound.embedding import MINILM, Embedder, default_embedder, minilm_path  # noqa: F401 (answers.* API)

LETTERS = "ABCDEFGH"

# all-MiniLM-L6-v2 cosines of a paraphrase and its option run about 0.4-0.7 ("a canine barking
# loudly" / "Dog" 0.48, "a female voice" / "Woman" 0.53), of unrelated text 0.0-0.25.
SIMILARITY_THRESHOLD = 0.35


NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty".split())}


# --- extraction ---------------------------------------------------------------------------------

# The content may not hold another opening tag, so "<answer>x <answer>y</answer>" yields "y".
_ANSWER_BLOCK = re.compile(r"<\s*answer\s*>((?:(?!<\s*answer\s*>).)*?)<\s*/\s*answer\s*>",
                           re.IGNORECASE | re.DOTALL)
_THINK_BLOCK = re.compile(r"<\s*think\s*>(.*?)(?:<\s*/\s*think\s*>|$)", re.IGNORECASE | re.DOTALL)


def extract_answer(text: str) -> str:
    """The content of the last `<answer>…</answer>` block, or the whole text when there is none."""
    blocks = _ANSWER_BLOCK.findall(text)
    return (blocks[-1] if blocks else text).strip()


def think_text(text: str) -> str:
    """The reasoning of a trace: the content of its first <think> block, else the text before any
    <answer> block (so a teacher's trace can be shown without its answer)."""
    match = _THINK_BLOCK.search(text)
    if match:
        return match.group(1).strip()
    return re.split(r"<\s*answer\s*>", text, maxsplit=1, flags=re.IGNORECASE)[0].strip()


def thinking(text: str) -> str | None:
    """The content of a response's first <think> block, whitespace folded; None when it has none
    (a direct answer does not think)."""
    match = _THINK_BLOCK.search(text)
    return " ".join(match.group(1).split()) if match else None


def has_answer_block(text: str) -> bool:
    """Whether the text holds an `<answer>…</answer>` block (a reward pays nothing without one)."""
    return _ANSWER_BLOCK.search(text) is not None


# --- option matching ----------------------------------------------------------------------------

def match_option(response: str, options: Sequence[str], *,
                 similarity_threshold: float | None = SIMILARITY_THRESHOLD,
                 embedder: Embedder | None = None) -> int | None:
    """The 0-based index of the option the response chooses, or None (rules: docs/reference.md, "sightsound/answers.py").

    `similarity_threshold=None` turns the embedding fallback off; `embedder` replaces the bundled
    MiniLM model (any callable from a list of texts to an [N, D] array).
    """
    if not options:
        return None  # open-ended: see match_open
    text = extract_answer(response)
    words = _words(text)
    said = [w for w, _, _ in words]
    found = _option_spans(options, said)
    taken = [(words[i][1], words[j - 1][2]) for spans in found.values() for i, j in spans]
    letter = _letter(text, len(options), taken, words)
    if letter is not None:
        return letter
    named = _most_specific(found)
    if named is None and len(found) > 1:
        named = _decided(found, said)
    if named is None and not found:
        named = _letter(text, len(options), taken, words, prose=True)  # "Between A and C, I choose C"
    if named is None and not found:
        named = _synonym(said, options)
    if named is not None or similarity_threshold is None:
        return named
    return _closest(text, options, similarity_threshold, embedder)


_WORD = re.compile(r"[^\W_]+#*")  # "#" stays on its word: option "A#" is a note, not the article


def _words(text: str) -> list[tuple[str, int, int]]:
    """(canonical word, start, end) for each word: lowercased, number words as digits."""
    out = []
    for m in _WORD.finditer(text):
        word = m.group().lower()
        out.append((NUMBER_WORDS.get(word, word), m.start(), m.end()))
    return out


def _option_spans(options: Sequence[str], said: list[str]) -> dict[int, list[tuple[int, int]]]:
    """Option index -> (start, end) word spans where that option's words occur in `said`.

    Only the first of several options with the same words is looked up, so repeats resolve to the
    first index.
    """
    found, seen = {}, set()
    for index, option in enumerate(options):
        key = [w for w, _, _ in _words(option)]
        if not key or tuple(key) in seen:
            continue
        seen.add(tuple(key))
        k = len(key)
        spans = [(i, i + k) for i in range(len(said) - k + 1) if said[i:i + k] == key]
        if spans:
            found[index] = spans
    return found


def _most_specific(found: dict[int, list[tuple[int, int]]]) -> int | None:
    """The one option not mentioned only inside a longer mentioned option, else None.

    "Electric guitar" hides "Guitar" when every "guitar" said is the electric one; an exact answer
    hides every other option, since all of them lie inside it.
    """
    def inside_another(index: int) -> bool:
        return all(any(a <= s and e <= b for other, spans in found.items() if other != index
                       for a, b in spans)
                   for s, e in found[index])

    left = [index for index in found if not inside_another(index)]
    return left[0] if len(left) == 1 else None


_NEGATIONS = {"not", "no", "never", "nor", "neither", "without", "excluding", "except", "t"}  # "t": isn't, wasn't
_ARTICLES = {"a", "an", "the", "any", "some"}
_DECISION_CUES = {"but", "therefore", "thus", "hence", "so", "final", "finally", "answer", "choose", "pick", "select",
                  "go", "opt", "guess", "think", "believe", "likely", "must", "actually", "conclude", "conclusion",
                  "overall", "wait"}


_SKIPPED_BEFORE = _ARTICLES | {"option", "choice", "letter"}


def _negated(said: list[str], start: int) -> bool:
    """Whether the word at `start` comes right after a negation ("not the dog", "isn't option A",
    "rather than rain", "ruled out A")."""
    i = start - 1
    while i >= 0 and said[i] in _SKIPPED_BEFORE:
        i -= 1
    if i < 0:
        return False
    return said[i] in _NEGATIONS or said[i - 1:i + 1] in (["rather", "than"], ["instead", "of"], ["ruled", "out"],
                                                           ["rule", "out"])


def _decided(found: dict[int, list[tuple[int, int]]], said: list[str]) -> int | None:
    """Among several options mentioned, the one a reader would take as chosen, else None: options
    named only after a negation ("not the dog", "rather than rain", "isn't a cat") are set aside,
    and of those left, the one named alone after the last decision cue ("..., but I think it is
    the cat", "Final answer: wind")."""
    left = {index: [(s, e) for s, e in spans if not _negated(said, s)] for index, spans in found.items()}
    left = {index: spans for index, spans in left.items() if spans}
    if len(left) == 1:
        return next(iter(left))
    cues = [i for i, word in enumerate(said) if word in _DECISION_CUES]
    if not cues or not left:
        return None
    after = [index for index, spans in left.items() if any(s > cues[-1] for s, _ in spans)]
    return after[0] if len(after) == 1 else None


_LETTER = "[A-Ha-h]"
_BRACKETED = rf"[(\[]\s*({_LETTER})\s*[)\]]"
# Each pattern captures one letter; together they are the letter "dresses" that count.
_LETTER_PATTERNS = [
    # the whole answer is one letter: "B", "(b)", "[B]", "B.", "b)", "**B**"
    re.compile(rf"^\W*({_LETTER})\W*$"),
    # at the start, before the option text: "(B) Woman", "B. Woman", "b) woman", "B: Woman"
    # ("A.I." and "e.g." are not letters: a dot must not be followed by a word character)
    re.compile(rf"^\W*?(?:{_BRACKETED}|({_LETTER})(?:[):\]]|\.(?!\w)))"),
    # "(B)" or "[b]" or "**B**" anywhere
    re.compile(_BRACKETED),
    re.compile(rf"\*\*\s*[(\[]?\s*({_LETTER})\s*[)\]]?\s*[.:]?\s*\*\*"),
    # "Option B", "choice (c)"
    re.compile(rf"\b(?:option|choice)\s*[(\[]?\s*({_LETTER})(?!\w)", re.IGNORECASE),
    # "Answer: b", "The answer is B", "answer is (A)"; a bare A here only with punctuation or the
    # end after it, since "The answer is a dog" uses the article
    re.compile(rf"\b(?:answer|option|choice)\s*(?:is|would be|should be)?\s*[:=]?\s*"
               rf"(?:{_BRACKETED}|([B-Hb-h])(?!\w)|([Aa])(?=\s*(?:[.,;:!)]|$)))", re.IGNORECASE),
]


# In prose, a capital letter standing alone is an option letter ("Between A and C, I choose C"),
# but for the article: "A" before a lower-case word other than these.
_PROSE_LETTER = re.compile(r"(?<![\w'’.-])([A-H])(?![\w'’-]|\.\w)")  # not "A.I.", "U.S.A."
_AFTER_LETTER_A = {"and", "or", "but", "is", "was", "nor", "vs", "versus", "seems", "fits", "matches"}


def _letter(text: str, n_options: int, taken: list[tuple[int, int]], words: list[tuple[str, int, int]],
            prose: bool = False) -> int | None:
    """The option index named by a letter: the one letter named, or of several, the one a reader
    would take as chosen (`_decided`: "Not A; B", "either (A) or (B), I'd go with (B)"), else None.
    `prose` also counts capital letters standing alone. `taken` are character spans of option
    texts found in `text`: a letter inside one is that option's own text ("C major", "A#")."""
    at_of: dict[int, list[int]] = {}
    for pattern in [_PROSE_LETTER] if prose else _LETTER_PATTERNS:
        for m in pattern.finditer(text):
            group = next(g for g in range(1, len(m.groups()) + 1) if m.group(g) is not None)
            index = LETTERS.index(m.group(group).upper())
            at = m.start(group)
            if prose and m.group(group) == "A" and _article(text, m.end(group)):
                continue
            if index < n_options and not any(s <= at < e for s, e in taken):
                at_of.setdefault(index, []).append(at)
    if len(at_of) <= 1:
        return next(iter(at_of), None)
    starts = [start for _, start, _ in words]
    found = {index: [(starts.index(a), starts.index(a) + 1) for a in ats if a in starts]
             for index, ats in at_of.items()}
    said = [w for w, _, _ in words]
    decided = _decided(found, said)
    return decided if decided is not None else _last_alone(found, said, text, words)


def _article(text: str, end: int) -> bool:
    """Whether the "A" ending at `end` is the article: a lower-case word other than a few follows."""
    following = re.match(r"\s+([a-z]+)", text[end:])
    return bool(following) and following.group(1) not in _AFTER_LETTER_A


def _last_alone(found: dict[int, list[tuple[int, int]]], said: list[str], text: str,
                words: list[tuple[str, int, int]]) -> int | None:
    """The letter that is the whole of the last sentence ("A or B? B."), else None."""
    last = max(s for spans in found.values() for s, _ in spans)
    sentence = re.split(r"[.?!;:]\s+", text[:words[last][1]])[-1]
    if _WORD.search(sentence) or words[last][0] != said[-1]:
        return None
    return next(index for index, spans in found.items() if any(s == last for s, _ in spans))


_BARE_LETTER = re.compile(r"""[\s"'*`]*(?:(?:the\s+)?(?:answer|option|choice)\s*(?:is\s*)?[:=]?\s*)?"""
                          r"""[\s(\[]*([A-H])[\s)\].:*"'`]*""", re.IGNORECASE)


def bare_letter(text: str, n_options: int) -> int | None:
    """The option index when `text` is an option letter and nothing else but its dress ("B",
    "(b)", "B.", "**B**", "Answer: B"), else None."""
    match = _BARE_LETTER.fullmatch(text)
    index = LETTERS.index(match.group(1).upper()) if match else None
    return index if index is not None and index < n_options else None


# --- synonyms of the option words audio benchmarks use --------------------------------------------

# all-MiniLM-L6-v2 cannot tell these apart: it puts an adjective nearer its antonym as often as its
# synonym ("hushed": loud 0.50, soft 0.34; "deep": high 0.40, low 0.43; "melancholy": happy 0.38,
# sad 0.35), and no WordNet installs without a download; so the attribute words of audio questions
# (pitch, loudness, tempo, mood, size, distance) carry their common synonyms here.
SYNONYMS = {
    "high": {"shrill", "squeaky", "treble", "piercing", "soprano"},
    "low": {"deep", "bass", "rumbling", "baritone"},
    "loud": {"noisy", "thunderous", "deafening", "blaring", "roaring", "booming", "intense"},
    "quiet": {"soft", "faint", "hushed", "muted", "gentle", "subdued", "whispered", "muffled"},
    "soft": {"quiet", "faint", "hushed", "muted", "gentle", "subdued", "whispered"},
    "fast": {"quick", "rapid", "swift", "brisk", "speedy", "hurried"},
    "slow": {"sluggish", "leisurely", "unhurried", "languid"},
    "happy": {"joyful", "cheerful", "upbeat", "merry", "joyous", "glad", "jovial"},
    "sad": {"melancholy", "melancholic", "sorrowful", "gloomy", "mournful", "somber", "sombre", "unhappy"},
    "angry": {"furious", "irritated", "annoyed", "enraged", "irate"},
    "calm": {"peaceful", "relaxed", "serene", "tranquil", "soothing"},
    "big": {"large", "huge", "enormous", "giant", "massive"},
    "small": {"little", "tiny", "miniature"},
    "near": {"close", "nearby"},
    "far": {"distant", "faraway", "remote"},
}


def _synonym(said: list[str], options: Sequence[str]) -> int | None:
    """The one option whose single word has a synonym in the answer (not after a negation), else None."""
    hits = set()
    for index, option in enumerate(options):
        key = [w for w, _, _ in _words(option)]
        if len(key) == 1 and any(w in SYNONYMS.get(key[0], ()) and not _negated(said, i) for i, w in enumerate(said)):
            hits.add(index)
    return hits.pop() if len(hits) == 1 else None


# --- similarity fallback ------------------------------------------------------------------------

def _closest(text: str, options: Sequence[str], threshold: float, embedder: Embedder | None) -> int | None:
    """The option most similar to `text` by cosine, if at least `threshold`."""
    return closest_options([text], [options], threshold, embedder)[0]


def closest_options(texts: Sequence[str], options_list: Sequence[Sequence[str]], threshold: float,
                    embedder: Embedder | None = None) -> list[int | None]:
    """`_closest` for many responses at once: one embedding call for every text and distinct option
    (what evaluation uses for the fallback of a whole batch of unmatched answers)."""
    texts = [extract_answer(t) for t in texts]
    asked = [i for i, t in enumerate(texts) if _WORD.search(t)]  # an empty answer chooses nothing
    result: list[int | None] = [None] * len(texts)
    if not asked:
        return result
    distinct = list(dict.fromkeys(o for i in asked for o in options_list[i]))
    embed = embedder or default_embedder()
    vectors = np.asarray(embed([texts[i] for i in asked] + distinct), dtype=np.float64)  # [A + O, D]
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12
    row = {option: len(asked) + k for k, option in enumerate(distinct)}
    for a, i in enumerate(asked):
        similarity = vectors[[row[o] for o in options_list[i]]] @ vectors[a]  # [n]
        best = int(np.argmax(similarity))  # the first of equal scores, so repeats resolve to the first
        result[i] = best if similarity[best] >= threshold else None
    return result


# --- open-ended answers (MUSIC-AVQA) ------------------------------------------------------------

def normalize_open(text: str) -> str:
    """Lowercase words separated by single spaces; punctuation and underscores become spaces and
    number words become digits: "Acoustic_Guitar!" -> "acoustic guitar", "More than ten" ->
    "more than 10"."""
    words = re.sub(r"[^\w\s]|_", " ", text.lower()).split()
    return " ".join(NUMBER_WORDS.get(w, w) for w in words)


_COUNT = re.compile(r"\bmore than \d+\b|\b\d+\b")


def match_open(response: str, answer_text: str) -> bool:
    """Whether the response's answer says `answer_text`, compared as normalized whole words.

    Yes/no and counts are closed sets that hedging answers mix ("yes, there is no violin", "two or
    three"): for them the FIRST yes/no word, or the first number ("more than ten" being one), in
    the answer decides. Any other answer must appear as whole words: "no" is not in "piano" or
    "not", "acoustic_guitar" is "acoustic guitar".
    """
    answer = normalize_open(answer_text)
    said = normalize_open(extract_answer(response))
    if not answer or not said:
        return False
    if answer in ("yes", "no"):
        return next((w for w in said.split() if w in ("yes", "no")), None) == answer
    if _COUNT.fullmatch(answer):
        first = _COUNT.search(said)
        return first is not None and first.group() == answer
    return f" {answer} " in f" {said} "


# --- dispatch -----------------------------------------------------------------------------------

def option_index(answer: int | str, options: Sequence[str]) -> int:
    """The 0-based index an `answer` names: an index as is, a text as the first option equal to it
    (failing that, equal after trimming and case-folding). ValueError when it names none."""
    if isinstance(answer, int) and not isinstance(answer, bool):
        if 0 <= answer < len(options):
            return answer
        raise ValueError(f"answer index {answer} is out of range for {len(options)} options")
    if isinstance(answer, str):
        if answer in options:
            return list(options).index(answer)
        same = [i for i, option in enumerate(options) if _plain(option) == _plain(answer)]
        if same:
            return same[0]
        raise ValueError(f"answer {answer!r} is not one of the options {list(options)!r}")
    raise ValueError(f"answer should be an option index or text, found {answer!r}")


def is_correct(response: str, sample_like, **match_kwargs) -> tuple[int | None, bool]:
    """(predicted option index or None, correct) for a Sample, a sample dict or a prediction line.

    With options, the answer (an index, or the option text; a Sample's `answer_text` when its
    `answer` is None) is compared by text, so either copy of a repeated option is right. Without
    options, `match_open` compares against the answer text and the index is None. `match_kwargs`
    go to `match_option` (similarity_threshold, embedder).
    """
    options = list(_get(sample_like, "options") or [])
    answer = _get(sample_like, "answer")
    if answer is None:
        answer = _get(sample_like, "answer_text")
    if not options:
        if not isinstance(answer, str):
            raise ValueError(f"an open-ended answer should be text, found {answer!r}")
        return None, match_open(response, answer)
    expected = options[option_index(answer, options)]
    pred = match_option(response, options, **match_kwargs)
    return pred, pred is not None and same_option(options[pred], expected)


def same_option(a: str, b: str) -> bool:
    """Option texts compared as the scorer does (so either copy of a repeated option is right)."""
    return _plain(a) == _plain(b)


def _get(obj, name: str):
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def _plain(text: str) -> str:
    return " ".join(text.split()).casefold()


# --- MMAU's official rule -----------------------------------------------------------------------

def _mmau_tokens(text: str) -> set[str]:
    return set(re.findall(r"\b\w+\b", text.lower()))


def mmau_correct(prediction: str, answer: str, choices: Sequence[str]) -> bool:
    """MMAU's `evaluation.py` string match: every answer token is in the prediction, and no token
    that only wrong choices have is. A choice with the answer's tokens (a repeat of it) is not
    wrong. An empty prediction is wrong."""
    said = _mmau_tokens(prediction)
    right = _mmau_tokens(answer)
    if not said:
        return False
    wrong_only = set()
    for choice in choices:
        tokens = _mmau_tokens(choice)
        if tokens != right:
            wrong_only |= tokens - right
    return right <= said and said.isdisjoint(wrong_only)
