"""The shared helpers of alignkit.chat_format and alignkit.stop_tokens, on hand-made inputs."""

from types import SimpleNamespace

from alignkit.chat_format import as_messages, completion_text, transcript
from alignkit.stop_tokens import reply_length, stop_token_ids


def test_stop_ids_join_the_tokenizer_eos_and_the_generation_config():
    tok = SimpleNamespace(eos_token_id=151645)
    qwen = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=[151645, 151643]))
    assert stop_token_ids(tok, qwen) == [151643, 151645]
    assert stop_token_ids(tok, SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=None))) == [151645]
    assert stop_token_ids(SimpleNamespace(eos_token_id=2)) == [2]  # no model: the tokenizer's EOS alone


def test_reply_length_stops_at_the_first_stop_id():
    assert reply_length([5, 6, 2, 7, 2], [2, 9]) == (2, True)
    assert reply_length([5, 9], {2, 9}) == (1, True)
    assert reply_length([5, 6, 7], [2]) == (3, False)  # cut by max_new_tokens
    assert reply_length([], [2]) == (0, False)


def test_completion_text_of_every_completion_format():
    assert completion_text("plain") == "plain"
    assert completion_text({"role": "assistant", "content": "one"}) == "one"
    turns = [
        {"role": "assistant", "content": "a"},
        {"role": "tool", "content": "ignored"},
        {"content": "no role counts"},
        {"role": "assistant", "content": [{"type": "text", "text": "multi"}, {"type": "image"}, "x"]},
        {"role": "assistant", "content": None},
    ]
    assert completion_text(turns) == "a\nno role counts\nmulti\n"


def test_messages_and_transcripts():
    assert as_messages("Hi") == [{"role": "user", "content": "Hi"}]
    chat = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]
    assert transcript(chat) == "Q"
    assert transcript([*chat, {"role": "assistant", "content": "A"}, {"role": "user", "content": "Q2"}]) == (
        "User: Q\nAssistant: A\nUser: Q2"
    )


def test_plugins_use_the_one_stop_and_completion_helpers():
    from alignkit import chat_format, stop_tokens
    from alignkit.plugins import graders
    from alignkit.plugins.common import reward_units, text_graders
    from alignkit.plugins.dpo import policy_samples

    assert graders.completion_text is chat_format.completion_text  # the public name stays importable
    assert text_graders.completion_text is reward_units.completion_text is chat_format.completion_text
    assert policy_samples.stop_token_ids is stop_tokens.stop_token_ids
    assert policy_samples.reply_length is stop_tokens.reply_length
