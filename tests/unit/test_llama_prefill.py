"""The embedded llama.cpp backend evaluates a prompt in batches it can stop between,
reusing what its cache holds (a fake model records what would be evaluated)."""

import threading

import numpy as np

from services.policy.backends import PREFILL_BATCH, LlamaCppBackend
from services.policy.settings import PolicySettings


class FakeLlama:
    """llama-cpp-python's Llama as _prefill uses it: input_ids, n_tokens, eval."""

    def __init__(self, cached: list[int], on_eval: threading.Event | None = None) -> None:
        self.input_ids = np.zeros(4096, dtype=np.intc)
        self.input_ids[: len(cached)] = cached
        self.n_tokens = len(cached)
        self.batches: list[list[int]] = []
        self.stop_after_first = on_eval

    def eval(self, tokens: list[int]) -> None:
        self.input_ids[self.n_tokens : self.n_tokens + len(tokens)] = tokens
        self.n_tokens += len(tokens)
        self.batches.append(list(tokens))
        if self.stop_after_first is not None:
            self.stop_after_first.set()


def backend_with(llm: FakeLlama) -> LlamaCppBackend:
    backend = LlamaCppBackend(PolicySettings())
    backend._llm = llm
    return backend


def test_the_cached_prefix_is_kept_and_only_the_rest_evaluated_in_batches() -> None:
    prompt = list(range(1, 301))
    llm = FakeLlama(cached=[*prompt[:100], 999, 998])  # a turn's prompt, then its reply
    assert backend_with(llm)._prefill(llm, prompt, threading.Event())
    evaluated = [t for batch in llm.batches for t in batch]
    assert evaluated == prompt[100:-1], "the shared 100 kept; the last left to sample from"
    assert all(len(b) <= PREFILL_BATCH for b in llm.batches)
    assert llm.n_tokens == len(prompt) - 1


def test_a_stop_between_batches_ends_the_evaluation() -> None:
    stop = threading.Event()
    llm = FakeLlama(cached=[], on_eval=stop)  # stopped as the first batch ends
    assert not backend_with(llm)._prefill(llm, list(range(1, 1001)), stop)
    assert len(llm.batches) == 1, "a cancelled summary keeps the model for one batch at most"


def test_a_prompt_the_cache_holds_whole_is_not_evaluated_again() -> None:
    prompt = [5, 6, 7, 8]
    llm = FakeLlama(cached=prompt)
    assert backend_with(llm)._prefill(llm, prompt, threading.Event())
    assert llm.batches == []
    assert llm.n_tokens == 3, "the last token is evaluated again to sample from"
