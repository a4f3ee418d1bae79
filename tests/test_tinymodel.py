"""The tiny offline model and the sample dataset it is built from."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["MLX_DISABLE_COMPILE"] = "1"

import hashlib  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from macfinetune.backend.tinymodel import build_demo_model, build_tiny_model  # noqa: E402
from macfinetune.core.paths import shipped  # noqa: E402

SAMPLE = Path(shipped("resources", "sample_data", "train.jsonl")).parent
TEXTS = ["Arr, matey! The sky be blue.", "What color is grass?", "Yo ho ho!"] * 5
SYSTEM = {"role": "system", "content": "You are a pirate."}
CONVERSATION = [
    {"role": "user", "content": "What color is the sky?"},
    {"role": "assistant", "content": "Arr, matey! The sky be blue. Yo ho ho!"},
    {"role": "user", "content": "And grass?"},
    {"role": "assistant", "content": " Green, with a leading space.\n"},
]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def user_prompts(rows: list[dict]) -> set[str]:
    return {m["content"] for row in rows for m in row["messages"] if m["role"] == "user"}


def folder_digest(folder: Path) -> str:
    files = ["tokenizer.json", "model.safetensors", "config.json"]
    return hashlib.sha256(b"".join((folder / f).read_bytes() for f in files)).hexdigest()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """(model, tokenizer) of the demo model, loaded by mlx-lm itself."""
    import mlx_lm

    folder = build_demo_model(tmp_path_factory.mktemp("tiny") / "demo")
    return mlx_lm.load(str(folder))


def test_demo_model_loads_with_expected_special_tokens(demo):
    model, tokenizer = demo
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.eos_token_ids == {tokenizer.convert_tokens_to_ids("<|im_end|>")}
    assert tokenizer.convert_tokens_to_ids("<s>") == tokenizer.bos_token_id
    assert len(tokenizer) <= model.args.vocab_size


def test_demo_model_runs_a_forward_pass(demo):
    import mlx.core as mx

    model, tokenizer = demo
    tokens = tokenizer.apply_chat_template(CONVERSATION[:1], add_generation_prompt=True)
    logits = model(mx.array([tokens]))
    assert logits.shape == (1, len(tokens), model.args.vocab_size)


@pytest.mark.parametrize("n_prompt_messages", [1, 2, 3])
@pytest.mark.parametrize("with_system", [False, True])
def test_prompt_is_a_token_prefix_of_the_conversation(demo, n_prompt_messages, with_system):
    """What mlx-lm's prompt masking needs: render(messages[:-1]) is a prefix of render(messages)."""
    _, tokenizer = demo
    messages = ([SYSTEM] if with_system else []) + CONVERSATION[: n_prompt_messages + 1]
    # mlx-lm's ChatDataset adds the generation prompt only when the last turn is the assistant's
    ends_with_answer = messages[-1]["role"] == "assistant"
    full = tokenizer.apply_chat_template(messages)
    prompt = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=ends_with_answer)
    assert len(prompt) < len(full)
    assert full[: len(prompt)] == prompt
    if ends_with_answer:
        answer = tokenizer.decode(full[len(prompt) :])
        assert answer == messages[-1]["content"] + "<|im_end|>\n"


def test_every_sample_row_has_a_token_prefix_prompt(demo):
    _, tokenizer = demo
    for row in read_jsonl(SAMPLE / "train.jsonl") + read_jsonl(SAMPLE / "valid.jsonl"):
        messages = row["messages"]
        full = tokenizer.apply_chat_template(messages)
        prompt = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True)
        assert full[: len(prompt)] == prompt, messages
        assert len(full) <= 64, messages


def test_same_inputs_give_identical_files(tmp_path):
    first = build_tiny_model(tmp_path / "a", TEXTS, seed=3)
    second = build_tiny_model(tmp_path / "b", TEXTS, seed=3)
    other_seed = build_tiny_model(tmp_path / "c", TEXTS, seed=4)
    assert folder_digest(first) == folder_digest(second)
    assert folder_digest(first) != folder_digest(other_seed)


def test_the_shape_arguments_reach_the_model(tmp_path):
    import mlx_lm

    folder = build_tiny_model(tmp_path / "m", TEXTS, hidden_size=32, num_layers=1, vocab_size=300)
    model, _ = mlx_lm.load(str(folder))
    assert (model.args.hidden_size, len(model.layers), model.args.vocab_size) == (32, 1, 300)


def test_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not an empty folder"):
        build_tiny_model(tmp_path, TEXTS)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_refuses_heads_that_do_not_divide(tmp_path):
    with pytest.raises(ValueError, match="num_heads=3"):
        build_tiny_model(tmp_path / "m", TEXTS, num_heads=3)


@pytest.mark.parametrize("name", ["train.jsonl", "valid.jsonl"])
def test_sample_rows_are_pirate_chats(name):
    rows = read_jsonl(SAMPLE / name)
    assert 40 <= len(rows) <= 400
    for row in rows:
        roles = [m["role"] for m in row["messages"]]
        assert roles in (["user", "assistant"], ["system", "user", "assistant"]), row
        answer = row["messages"][-1]["content"]
        assert answer.startswith("Arr, matey! ") and answer.endswith(" Yo ho ho!"), row


def test_sample_splits_and_heldout_are_disjoint():
    train = read_jsonl(SAMPLE / "train.jsonl")
    valid = read_jsonl(SAMPLE / "valid.jsonl")
    heldout = json.loads((SAMPLE / "heldout.json").read_text(encoding="utf-8"))
    assert 3 <= len(heldout) <= 5 and all(isinstance(p, str) and p for p in heldout)
    assert not user_prompts(train) & user_prompts(valid)
    assert not set(heldout) & (user_prompts(train) | user_prompts(valid))
