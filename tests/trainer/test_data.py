"""Training data: formats, validation with line numbers, prompt rendering, the label mask."""

from __future__ import annotations

import json

import pytest

from ragtune.errors import InvalidRequestError
from ragtune.templates import PLAIN_TEMPLATE
from tests.trainer.helpers import json_rows, write_jsonl
from trainer.data import (
    MAX_PROBLEMS,
    load_training_file,
    prepare,
    render_messages,
    render_prompt,
    split_rows,
    tokenize_example,
)


def test_prompt_completion_jsonl(tmp_path):
    data = load_training_file(write_jsonl(tmp_path / "d.jsonl", json_rows(3)))
    assert data.format == "prompt-completion"
    assert [e.prompt for e in data.examples] == ["Restaurant: Alimentum.", "Restaurant: Aromi.", "Restaurant: Bibimbap."]
    assert data.examples[0].completion == '{"name": "Alimentum"}'
    assert len(data.sha256) == 64


def test_openai_chat_jsonl_last_assistant_is_completion(tmp_path):
    record = {"messages": [
        {"role": "system", "content": "Answer in JSON."},
        {"role": "user", "content": "Name?"},
        {"role": "assistant", "content": "{}"},
        {"role": "user", "content": "Again?"},
        {"role": "assistant", "content": '{"name": "x"}'},
    ]}
    data = load_training_file(write_jsonl(tmp_path / "chat.jsonl", [record, "", record]))  # blank line is skipped
    assert data.format == "chat"
    assert len(data.examples) == 2
    example = data.examples[0]
    assert example.completion == '{"name": "x"}'
    assert example.prompt == record["messages"][:-1]
    assert data.examples[1].line == 3


def test_alpaca_jsonl_and_json_array(tmp_path):
    rows = [{"instruction": "Translate", "input": "hello", "output": "bonjour"},
            {"instruction": "Say hi", "input": "", "output": "hi"}]
    jsonl = load_training_file(write_jsonl(tmp_path / "a.jsonl", rows))
    array = tmp_path / "alpaca_data.json"
    array.write_text(json.dumps(rows))
    as_array = load_training_file(array)
    for data in (jsonl, as_array):
        assert data.format == "alpaca"
        assert data.examples[0].prompt == "Translate\n\nhello"
        assert data.examples[1].prompt == "Say hi"  # an empty input adds nothing
        assert data.examples[1].completion == "hi"


def test_bad_lines_are_reported_with_file_and_line(tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", [
        {"prompt": "ok", "completion": "fine"},
        {"prompt": "no completion here"},
        "{not json",
        {"prompt": "x", "completion": 3},
        ["a", "list"],
        {"instruction": "alpaca in a prompt/completion file", "output": "y"},
        {"prompt": "", "completion": "empty prompt"},
    ])
    with pytest.raises(InvalidRequestError) as info:
        load_training_file(path)
    message = info.value.message
    assert "7 problems" not in message  # six bad lines, one good
    assert "6 problems; nothing was trained" in message
    assert "data.jsonl:2: missing 'completion'" in message
    assert "data.jsonl:3: not valid JSON" in message
    assert "data.jsonl:4: 'completion' must be a string, got int" in message
    assert "data.jsonl:5: expected a JSON object, got list" in message
    assert "data.jsonl:6: alpaca record in a prompt-completion file (format set by line 1)" in message
    assert "data.jsonl:7: 'prompt' is empty" in message
    assert info.value.param == "data"


def test_chat_problems_and_problem_cap(tmp_path):
    bad_chat = [
        {"messages": [{"role": "user", "content": "hi"}]},
        {"messages": [{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "x"}]},
        {"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "x"}]},
        {"messages": []},
    ]
    with pytest.raises(InvalidRequestError) as info:
        load_training_file(write_jsonl(tmp_path / "chat.jsonl", bad_chat))
    message = info.value.message
    assert "chat.jsonl:1: the last message must be the assistant's" in message
    assert "chat.jsonl:2: messages[0].role must be one of" in message
    assert "chat.jsonl:3: no user message before the assistant's" in message
    assert "chat.jsonl:4: 'messages' must be a non-empty list" in message

    many = write_jsonl(tmp_path / "many.jsonl", [{"prompt": "p"}] * (MAX_PROBLEMS + 5))
    with pytest.raises(InvalidRequestError) as info:
        load_training_file(many)
    assert f"{MAX_PROBLEMS + 5} problems" in info.value.message
    assert "... and 5 more" in info.value.message
    assert info.value.message.count("missing 'completion'") == MAX_PROBLEMS


def test_empty_and_missing_files(tmp_path):
    with pytest.raises(InvalidRequestError, match="empty"):
        load_training_file(write_jsonl(tmp_path / "e.jsonl", []))
    with pytest.raises(InvalidRequestError, match="does not exist"):
        load_training_file(tmp_path / "nope.jsonl")


def test_plain_template_without_chat_template(tokenizer):
    assert tokenizer.chat_template is None  # the packaged gemma-3-270m is a base model
    assert render_prompt("Say hi", tokenizer) == PLAIN_TEMPLATE.format(prompt="Say hi")
    rendered = render_messages([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], tokenizer)
    assert rendered == "### System:\nBe brief.\n\n### Instruction:\nHi\n\n### Response:\n"


def test_chat_template_is_used_when_present(tokenizer):
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = (
        "{{ bos_token }}{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    text = render_prompt("Hi", tok)
    # The tokenizer adds <bos> itself: the template's one is dropped so it is not doubled.
    assert text == "<user>Hi</user><assistant>"
    assert tok(text)["input_ids"].count(tok.bos_token_id) == 1


def test_prepare_rejects_duplicates_and_overlong_prompts_then_splits(tmp_path, tokenizer):
    rows = json_rows(8) + [json_rows(1)[0], {"prompt": "word " * 300, "completion": "{}"}]
    data = load_training_file(write_jsonl(tmp_path / "d.jsonl", rows))
    prepared = prepare(data, tokenizer, max_seq_length=64, eval_fraction=0.25, seed=3407)
    assert len(prepared.rejected) == 2
    assert "d.jsonl:9: duplicate of line 1" in prepared.rejected[0]
    assert "d.jsonl:10: prompt is" in prepared.rejected[1]
    assert (len(prepared.train_rows), len(prepared.eval_rows)) == (6, 2)
    assert all(r["completion"].endswith(tokenizer.eos_token) for r in prepared.train_rows)
    assert not {r["prompt"] for r in prepared.train_rows} & {r["prompt"] for r in prepared.eval_rows}


def test_split_holds_out_at_least_one_and_leaves_one_to_train():
    rows = [{"prompt": str(i), "completion": "c"} for i in range(3)]
    train, held = split_rows(rows, 0.01, seed=1)
    assert (len(train), len(held)) == (2, 1)
    train, held = split_rows(rows[:2], 0.9, seed=1)
    assert (len(train), len(held)) == (1, 1)


def test_label_mask_covers_only_completion_tokens(tokenizer):
    """Through trl's own SFTTrainer preparation: labels are -100 exactly on the prompt tokens."""
    prompt = render_prompt("Restaurant: Aromi.", tokenizer)
    completion = '{"name": "Aromi"}' + tokenizer.eos_token
    out = tokenize_example(prompt, completion, tokenizer, max_length=128)
    prompt_ids = tokenizer(prompt)["input_ids"]
    ids, labels = out["input_ids"], out["labels"]
    assert ids[: len(prompt_ids)] == prompt_ids
    assert labels[: len(prompt_ids)] == [-100] * len(prompt_ids)
    assert labels[len(prompt_ids):] == ids[len(prompt_ids):]
    assert all(label != -100 for label in labels[len(prompt_ids):])
    assert labels[-1] == tokenizer.eos_token_id  # the adapter learns to stop
    assert tokenizer.decode(ids[len(prompt_ids):]) == completion
