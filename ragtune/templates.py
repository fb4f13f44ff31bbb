"""The plain instruction layout adapters are trained on when the base model has no chat template.

It lives here, not in trainer/ or router/, because training and serving must render the very
same text: an adapter served with a different layout than it learned silently degrades.
"""

from __future__ import annotations

SYSTEM_HEADER = "### System:\n"
INSTRUCTION_HEADER = "### Instruction:\n"
RESPONSE_HEADER = "### Response:\n"
PLAIN_TEMPLATE = INSTRUCTION_HEADER + "{prompt}\n\n" + RESPONSE_HEADER
# A base model continuing past its answer starts the next section with this.
INSTRUCTION_STOPS = ["\n### "]

_HEADERS = {"system": SYSTEM_HEADER, "user": INSTRUCTION_HEADER, "assistant": RESPONSE_HEADER}


def render_instruction(messages: list[dict[str, str]]) -> str:
    """``### System/Instruction/Response`` sections, ending with an open ``### Response:``."""
    parts = [f"{_HEADERS[m['role']]}{m['content']}\n\n" for m in messages]
    return "".join(parts) + RESPONSE_HEADER


def render_messages(messages: list[dict[str, str]], tokenizer) -> str:
    """Render chat messages as the prompt text the adapter was trained on, ready for generation.

    With a chat template: the template with the generation prompt appended. Without one (a base
    model): the plain ``### System/Instruction/Response`` layout. The text is meant to be tokenized
    with the tokenizer's default special tokens (it adds ``<bos>`` itself), so a ``<bos>`` the
    template writes is removed here to avoid a doubled one.
    """
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        bos = tokenizer.bos_token
        if bos and text.startswith(bos) and _adds_bos(tokenizer):
            text = text[len(bos):]
        return text
    return render_instruction(messages)


def _adds_bos(tokenizer) -> bool:
    ids = tokenizer("x")["input_ids"]
    return bool(ids) and ids[0] == tokenizer.bos_token_id
