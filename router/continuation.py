"""Stop strings count only once the answer has begun.

A base model often opens its answer with a newline ("Answer:\\n Ingrid ..."), most of all after
long retrieved passages; with a ``"\\n"`` stop (one-line answers) the engine then ends the answer
before its first word, and the caller gets an empty string. The engines apply stop strings from
the first token, so the router continues such a generation instead: the prompt plus what was
generated (the blank text and the stop string) becomes the next prompt, with the tokens left.
Under greedy decoding that is the answer the model would have written had the stop waited for
content; it costs a second, short request only where the first came back blank.
"""

from __future__ import annotations

from router.backends.base import Generation, GenerationRequest

# Blank stops tolerated before the answer: "\n", "\n\n" and the like come one or two at a time.
MAX_ROUNDS = 3


def needs_more(req: GenerationRequest, gen: Generation) -> bool:
    """The text so far is blank and a stop string (not EOS, not the length cap) ended it."""
    return gen.stop_reason is not None and not gen.text.strip() and gen.completion_tokens < req.max_tokens


def continuation(req: GenerationRequest, gen: Generation) -> GenerationRequest:
    return req.model_copy(update={
        "prompt": req.prompt + gen.text + gen.stop_reason,
        "max_tokens": req.max_tokens - gen.completion_tokens,
        "min_tokens": max(0, req.min_tokens - gen.completion_tokens),
    })


def joined(first: Generation, more: Generation) -> Generation:
    """One generation as if the engine had not stopped: the blank start, its stop string, the rest."""
    return Generation(
        text=first.text + (first.stop_reason or "") + more.text,
        token_ids=first.token_ids + more.token_ids,
        prompt_tokens=first.prompt_tokens,
        completion_tokens=first.completion_tokens + more.completion_tokens,
        finish_reason=more.finish_reason,
        stop_reason=more.stop_reason,
    )


async def agenerate_until_content(backend, req: GenerationRequest) -> Generation:
    """``backend.agenerate``, continued while a stop left the answer blank (at most MAX_ROUNDS times)."""
    gen = await backend.agenerate(req)
    for _ in range(MAX_ROUNDS):
        if not needs_more(req, gen):
            break
        # Each round continues from the original prompt plus everything generated so far.
        gen = joined(gen, await backend.agenerate(continuation(req, gen)))
    return gen
