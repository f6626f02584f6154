import pytest

from sightsound.prompts import audio_variant, format_options


@pytest.mark.parametrize("source, expected", [
    ("What is the man in the video doing?", "What is the man in the audio doing?"),
    ("Video shows what?", "Audio shows what?"),
    ("WHAT IS IN THE VIDEO", "WHAT IS IN THE AUDIO"),
    ("Across the videos, which?", "Across the audios, which?"),
    ("Which Videos?", "Which Audios?"),
    ("A videotape and a video-game", "A videotape and a audio-game"),  # whole words only
    ("No match here", "No match here"),
])
def test_audio_variant_by_whole_word_keeping_case(source, expected):
    assert audio_variant(source) == expected


def test_format_options_letters_and_strips():
    assert format_options([" dog", "cat "]) == "A. dog\nB. cat"
    assert format_options(list("abcdefgh")).splitlines()[-1] == "H. h"
    with pytest.raises(ValueError, match="at most 8"):
        format_options(list("abcdefghi"))


def test_the_answer_format_is_the_letter_or_the_options_words():
    import pytest

    from sightsound import prompts

    asked = prompts.fill(prompts.DIRECT_PROMPT, "Which?", ["drum", "bell"])
    assert "only the option letter" in asked and "A. drum" in asked
    assert "the words of the option" in prompts.fill(prompts.DIRECT_PROMPT, "Which?", ["drum", "bell"], "text")
    assert "a single word or number" in prompts.fill(prompts.DIRECT_PROMPT, "How many?", [], "text")
    with pytest.raises(ValueError, match="unknown answer format 'name'"):
        prompts.fill(prompts.DIRECT_PROMPT, "Which?", ["drum"], "name")
