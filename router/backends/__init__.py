"""Generation backends: in-process vLLM and transformers+peft behind one ``Backend`` contract."""

from router.backends.base import Backend, Generation, GenerationRequest, make_backend

__all__ = ["Backend", "Generation", "GenerationRequest", "make_backend"]
