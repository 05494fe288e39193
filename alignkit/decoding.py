"""Decode engine: batched generation in a preallocated KV cache, where finished rows leave and waiting rows enter.

Why not ``model.generate``: its ``DynamicLayer`` concatenates the whole KV cache at every step. At batch 64 with ~200
cached positions that was 82 % of a decode step's CPU time on a 2-core Xeon, each step allocating (and page-faulting)
a fresh 10 MB tensor per layer; here ``aten::mm`` is the top op (61 %). A finished row also keeps its slot until the
whole batch is done (eval spent 16,384 decode slots on 14,414 tokens), and top-p sorts the whole vocabulary each step
(see :mod:`alignkit.sampling`).

How it works:

- **Slots.** Each layer's keys and values live in one (slots, kv_heads, capacity, head_dim) buffer
  (:class:`SlotLayer`, a ``DynamicLayer`` subclass). A forward writes its new column in place and attends over a
  view, so nothing is concatenated. The live rows are always slots ``0..n-1``, and every forward runs only those.
- **Layout.** Every slot holds the shared prompt prefix in columns ``[0, P)``, and its own prompt tokens and reply
  right-aligned before the write column ``t``; the columns between are masked. All live rows write column ``t`` in
  the same step. Positions are per row (``position_ids``), so where a row's columns sit in the buffer does not
  change its numbers.
- **Entering.** Rows enter longest prompt first: ``[0, P)`` is the prefix computed once
  (:func:`alignkit.prefix_cache.prefix_cache`), and the rest of the prompt but its last token is prefilled in small
  length groups (:func:`alignkit.prefix_cache.prefill_rows`) and copied into the free slots. The last prompt token
  runs in the row's first decode step, beside every other row.
- **Leaving.** A row that ends (an end-of-turn id, ``max_new_tokens``, or the loop stop) hands its slot to the last
  live row, whose cache row is copied over (one row, not the batch). Once a quarter of the slots are free, the next
  waiting rows enter. Columns that no live row uses any more are dropped when rows enter, if they are more than a
  third of the width.

Numbers: the same computation as ``model.generate`` on the same prefill (:mod:`alignkit.prefix_cache`), with only the
logits of the last position computed. Greedy output is token-identical to ``model.generate`` up to fp rounding: a
batch of another size or composition sums matmuls in another order (~1e-6 relative), which can flip a near-tie. A
model on the fast path (:func:`alignkit.inference_precision.bf16_matmuls`) also projects onto the vocabulary in bf16
here, unless log-probs are asked for (:func:`alignkit.inference_precision.bf16_generation_head`).

Sampling (:mod:`alignkit.sampling`) draws from one stream per prompt, seeded from (seed, prompt index), one number
per generated token. A row's tokens therefore depend only on (seed, its index, its prompt, the config, the model),
not on which prompts share its batch or enter beside it, up to the same fp rounding.

Log-probs (``return_logprobs``) are those of the chosen tokens under the model's raw distribution,
``log_softmax(logits)`` in fp32, before temperature, top-k or top-p: what a reference model would assign.

:func:`supported` is the one check: decoder-only, rotary positions, every cache layer a plain full-attention
``DynamicLayer`` (what :func:`alignkit.prefix_cache.supported` already requires, plus the layer type). Callers fall
back to ``model.generate`` otherwise (sliding-window or hybrid caches, prompt-learning adapters, learned positions).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicLayer

from alignkit import prefix_cache as prefix
from alignkit.inference_precision import bf16_generation_head
from alignkit.prefix_cache import shared_prefix_len
from alignkit.sampling import RowStreams, candidates, pick
from alignkit.stop_tokens import LOOP_MAX_PERIOD, loop_span


@dataclass(frozen=True)
class Sampler:
    """How the next token is chosen: greedy (``do_sample=False``) or sampled, as in ``transformers``'s config."""

    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0


@dataclass
class Decoded:
    """Generated ids per prompt, in the prompts' order.

    ``tokens[i]`` ends with the end-of-turn id when ``ended[i]``; ``logprobs[i]`` (if requested) has one entry per
    token of ``tokens[i]``. ``looping[i]``: stopped by the loop stop (:func:`alignkit.stop_tokens.loop_stop_length`).
    Counters: ``steps`` forwards after the prefills, ``row_steps`` rows summed over them (decode slots spent; equals
    the generated tokens, since no finished row stays), ``relayouts`` cache rebuilds.
    """

    tokens: list[list[int]]
    ended: list[bool]
    looping: list[bool]
    logprobs: list[list[float]] | None = None
    steps: int = 0
    row_steps: int = 0
    relayouts: int = 0


def supported(model: Any) -> bool:
    """Whether :func:`decode` runs ``model``; see the module docstring. Otherwise use ``model.generate``."""
    from transformers import DynamicCache

    if not prefix.supported(model):
        return False
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    import inspect

    params = inspect.signature(inner.forward).parameters
    if not {"position_ids", "logits_to_keep"} <= set(params):
        return False
    return all(type(layer) is DynamicLayer for layer in DynamicCache(config=model.config).layers)


def _new_buffer(like: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Uninitialised: zero-filling the whole cache up front doubled its page-fault cost. Every column a row attends
    to is written first (prefix, prefill, gap, decode columns); tests fill this with NaN to prove it."""
    return like.new_empty(shape)


class _Window:
    """What the next forward sees of the slot buffers: ``rows`` live rows, ``cols`` cached columns."""

    def __init__(self, slots: int) -> None:
        self.slots, self.rows, self.cols, self.capacity = slots, 0, 0, 0


class SlotLayer(DynamicLayer):
    """A ``DynamicLayer`` whose keys and values live in preallocated (slots, heads, capacity, dim) buffers.

    ``update`` writes the new states at column ``window.cols`` of the first ``window.rows`` slots and returns views
    (rows, heads, cols + new, dim); the engine advances ``window.cols`` after the forward."""

    def __init__(self, window: _Window) -> None:
        super().__init__()
        self.window = window
        self.kbuf: torch.Tensor | None = None
        self.vbuf: torch.Tensor | None = None

    def _allocate(self, like: torch.Tensor) -> None:
        shape = (self.window.slots, like.shape[1], self.window.capacity, like.shape[-1])
        self.kbuf, self.vbuf = _new_buffer(like, shape), _new_buffer(like, shape)
        self.device, self.is_initialized = like.device, True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple:
        if self.kbuf is None:
            self._allocate(key_states)
        n, t, q = self.window.rows, self.window.cols, key_states.shape[-2]
        self.kbuf[:n, :, t : t + q] = key_states
        self.vbuf[:n, :, t : t + q] = value_states
        self.keys, self.values = self.kbuf[:n, :, : t + q], self.vbuf[:n, :, : t + q]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.window.cols

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.window.cols + query_length, 0

    def place(self, slots: slice, cols: slice, keys: torch.Tensor | float, values: torch.Tensor | float) -> None:
        """Write prefilled states into ``[slots, :, cols]`` (broadcasting a batch-1 prefix, or a scalar)."""
        if self.kbuf is None:
            self._allocate(keys)
        self.kbuf[slots, :, cols] = keys
        self.vbuf[slots, :, cols] = values

    def move(self, dst: torch.Tensor, src: torch.Tensor, cols: int) -> None:
        """Copy slot rows ``src`` over ``dst`` (first ``cols`` columns)."""
        if self.kbuf is not None:
            self.kbuf[dst, :, :cols] = self.kbuf[src, :, :cols]
            self.vbuf[dst, :, :cols] = self.vbuf[src, :, :cols]

    def relayout(self, rows: int, index: torch.Tensor, capacity: int) -> None:
        """New buffers of ``capacity`` columns whose first ``index.shape[1]`` columns of the first ``rows`` slots are
        ``old[r, :, index[r, c]]``."""
        if self.kbuf is None:
            return
        old_k, old_v = self.kbuf, self.vbuf
        shape = (old_k.shape[0], old_k.shape[1], capacity, old_k.shape[-1])
        self.kbuf, self.vbuf = _new_buffer(old_k, shape), _new_buffer(old_v, shape)
        width, gather = index.shape[1], index[:, None, :, None]
        if rows:
            self.kbuf[:rows, :, :width] = torch.take_along_dim(old_k[:rows], gather, dim=2)
            self.vbuf[:rows, :, :width] = torch.take_along_dim(old_v[:rows], gather, dim=2)


class _Engine:
    """State of one :func:`decode` call. Per-slot tensors (``start``, ``pos``, ``inp``, loop state) are indexed by
    slot; ``row_of[s]`` is the prompt index in slot ``s``."""

    def __init__(
        self,
        model: Any,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int,
        stop_ids: Sequence[int],
        slots: int,
        sampler: Sampler,
        stop_loops: bool,
        return_logprobs: bool,
        pad_id: int,
        share_prefix: bool,
    ) -> None:
        self.model, self.prompts, self.max_new = model, prompts, max_new_tokens
        self.stops, self.sampler, self.stop_loops = set(stop_ids), sampler, stop_loops
        self.with_logprobs = return_logprobs
        self.pad_id, self.device = pad_id, next(model.parameters()).device
        self.slots = min(slots, len(prompts))
        self.kwarg = prefix.cache_kwarg(model)
        n = shared_prefix_len(prompts, min(map(len, prompts)) - 1) if share_prefix else 0
        self.n_prefix = n
        self.prefix_kv = prefix.prefix_cache(model, prompts[0][:n]) if n else None
        self.waiting = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))  # longest first: little padding
        self.waiting.reverse()  # pop() from the end
        self.window = _Window(self.slots)
        n_layers = model.config.get_text_config().num_hidden_layers
        self.layers = [SlotLayer(self.window) for _ in range(n_layers)]
        self.cache = Cache(layers=self.layers)
        self.n = 0  # live rows = slots [0, n)
        self.t = n  # next write column
        dev = self.device
        self.start = torch.zeros(self.slots, dtype=torch.long, device=dev)  # a slot's first own column
        self.pos = torch.zeros(self.slots, dtype=torch.long, device=dev)  # position of the slot's next input token
        self.inp = torch.zeros(self.slots, dtype=torch.long, device=dev)  # the slot's next input token
        self.hist = torch.full((self.slots, LOOP_MAX_PERIOD), -1, dtype=torch.long, device=dev)  # last tokens
        self.runs = torch.zeros((self.slots, LOOP_MAX_PERIOD), dtype=torch.long, device=dev)
        periods = torch.arange(1, LOOP_MAX_PERIOD + 1, device=dev)
        self.need = torch.tensor([loop_span(int(p)) for p in periods], device=dev) - periods
        self.row_of: list[int] = []
        self.streams = RowStreams(sampler.seed) if sampler.do_sample else None
        self.tokens: list[list[int]] = [[] for _ in prompts]
        self.logprobs: list[list[float]] = [[] for _ in prompts]
        self.ended = [False] * len(prompts)
        self.looping = [False] * len(prompts)
        self.steps = self.row_steps = self.relayouts = 0

    # --- entering -------------------------------------------------------------------------------------------
    def admit(self) -> None:
        """Move waiting rows into the free slots ``[n, slots)``."""
        take = min(self.slots - self.n, len(self.waiting))
        rows = [self.waiting.pop() for _ in range(take)]
        if not rows:
            return
        p = self.n_prefix
        tails = [list(self.prompts[i][p:]) for i in rows]
        own = [len(tail) - 1 for tail in tails]  # prefilled tokens per row; the last one runs in the decode step
        width = max(own)
        live_own = int((self.t - self.start[: self.n]).max()) if self.n else 0
        need = max(width, live_own)
        if self.layers[0].kbuf is None:  # first rows: columns [0, P + width), room for every reply
            self.t = p + width
            self.window.capacity = self.t + self.max_new + 1
        elif self.t - p < width or self.t - p > need + need // 2 + 16:  # no room, or over a third unused
            self._relayout(need)
        t, lo, hi = self.t, self.n, self.n + take
        filled = prefix.prefill_rows(self.model, self.prefix_kv, p, tails, self.pad_id) if width else None
        for i, layer in enumerate(self.layers):
            if self.prefix_kv is not None:
                src = self.prefix_kv.layers[i]
                layer.place(slice(lo, hi), slice(0, p), src.keys, src.values)
            if filled is not None:  # [prefix | pads | row], right-aligned at P + width; the pads land masked
                src = filled.layers[i]
                layer.place(slice(lo, hi), slice(t - width, t), src.keys[:, :, p:], src.values[:, :, p:])
            gap_end = t - width if filled is not None else t
            if layer.kbuf is not None and gap_end > p:  # masked, but 0 x NaN would still poison the attention
                layer.place(slice(lo, hi), slice(p, gap_end), 0.0, 0.0)
        dev = self.device
        self.start[lo:hi] = t - torch.tensor(own, device=dev)
        self.pos[lo:hi] = torch.tensor([len(self.prompts[i]) - 1 for i in rows], device=dev)
        self.inp[lo:hi] = torch.tensor([self.prompts[i][-1] for i in rows], device=dev)
        self.hist[lo:hi], self.runs[lo:hi] = -1, 0
        self.row_of.extend(rows)
        self.n = hi

    def _relayout(self, own: int) -> None:
        """Right-align every live row's own columns at ``P + own`` in fresh buffers with room for a full reply."""
        p, n = self.n_prefix, self.n
        target = p + own
        cols = torch.arange(target, device=self.device)
        # new column c < P: the prefix; c >= P: the row's column shifted by (t - target); before its start: masked
        shifted = cols[None, :] + (self.t - target)
        index = torch.where(cols[None, :] < p, cols[None, :].expand(n, -1), shifted.expand(n, -1))
        index = index.clamp(min=0).clone()
        capacity = target + self.max_new + 1
        for layer in self.layers:
            layer.relayout(n, index, capacity)
        self.start[:n] -= self.t - target
        self.t, self.window.capacity = target, capacity
        self.relayouts += 1

    # --- one step -------------------------------------------------------------------------------------------
    def step(self) -> list[int]:
        """Run the live rows one token; returns the slots that finished."""
        n, t = self.n, self.t
        if t + 1 > self.window.capacity:  # longer than planned (rows kept entering): compact and grow
            self._relayout(int((t - self.start[:n]).max()))
            t = self.t
        self.window.rows, self.window.cols = n, t
        cols = torch.arange(t + 1, device=self.device)
        mask = ((cols[None, :] < self.n_prefix) | (cols[None, :] >= self.start[:n, None])).long()
        out = self.model(
            input_ids=self.inp[:n, None],
            attention_mask=mask,
            position_ids=self.pos[:n, None],
            use_cache=True,
            logits_to_keep=1,
            **{self.kwarg: self.cache},
        )
        self.t = t + 1
        self.steps, self.row_steps = self.steps + 1, self.row_steps + n
        logits = out.logits[:, -1].float()
        rows = self.row_of[:n]
        s = self.sampler
        if s.do_sample:
            ids, probs = candidates(logits, s.temperature, s.top_p, s.top_k)
            chosen = pick(ids, probs, self.streams.uniforms(rows).to(self.device))
        else:
            chosen = logits.argmax(-1)
        token_list = chosen.tolist()
        logprob_list = None
        if self.with_logprobs:
            logprob_list = torch.log_softmax(logits, -1).gather(1, chosen[:, None]).squeeze(1).tolist()
        loop_list = self._loop_hits(chosen) if self.stop_loops else None
        done = []
        for slot, (row, token) in enumerate(zip(rows, token_list, strict=True)):
            self.tokens[row].append(token)
            if logprob_list is not None:
                self.logprobs[row].append(logprob_list[slot])
            if token in self.stops:
                self.ended[row] = True
            elif loop_list is not None and loop_list[slot]:
                self.looping[row] = True
            elif len(self.tokens[row]) < self.max_new:
                continue
            done.append(slot)
        self.inp[:n] = chosen
        self.pos[:n] += 1
        return done

    def _loop_hits(self, chosen: torch.Tensor) -> list[bool]:
        """Update each live row's run lengths per period and say which rows now end in a loop
        (the criterion of :func:`alignkit.stop_tokens.loop_stop_length`, kept incrementally)."""
        n = self.n
        # hist[:, -p] is the token p steps back; runs[:, p-1] counts trailing positions equal to p steps back
        same = self.hist[:n].flip(-1) == chosen[:, None]
        self.runs[:n] = (self.runs[:n] + 1) * same
        self.hist[:n] = torch.cat([self.hist[:n, 1:], chosen[:, None]], dim=1)
        return (self.runs[:n] >= self.need).any(-1).tolist()

    # --- leaving --------------------------------------------------------------------------------------------
    def retire(self, done: list[int]) -> None:
        """Free the ``done`` slots: the last live rows move into the holes below the new live count."""
        if not done:
            return
        n_new = self.n - len(done)
        gone = set(done)
        holes = [s for s in done if s < n_new]
        movers = [s for s in range(n_new, self.n) if s not in gone]
        if self.streams is not None:
            for s in done:
                self.streams.drop(self.row_of[s])
        if holes:
            dst = torch.tensor(holes, device=self.device)
            src = torch.tensor(movers, device=self.device)
            for layer in self.layers:
                layer.move(dst, src, self.t)
            for state in (self.start, self.pos, self.inp, self.hist, self.runs):
                state[dst] = state[src]
            for h, m in zip(holes, movers, strict=True):
                self.row_of[h] = self.row_of[m]
        del self.row_of[n_new:]
        self.n = n_new

    def run(self, on_done: Callable[[int], None] | None) -> Decoded:
        threshold = max(1, self.slots // 4)
        while self.n or self.waiting:
            if self.waiting and (self.n == 0 or self.slots - self.n >= threshold):
                self.admit()
            done = self.step()
            self.retire(done)
            if on_done is not None and done:
                on_done(len(done))
        logprobs = self.logprobs if self.with_logprobs else None
        return Decoded(self.tokens, self.ended, self.looping, logprobs, self.steps, self.row_steps, self.relayouts)


def decode(
    model: Any,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    stop_ids: Sequence[int],
    *,
    slots: int = 16,
    sampler: Sampler = Sampler(),
    stop_loops: bool = False,
    return_logprobs: bool = False,
    pad_id: int = 0,
    share_prefix: bool = True,
    on_done: Callable[[int], None] | None = None,
) -> Decoded:
    """Generate up to ``max_new_tokens`` after each of ``prompts`` (token-id lists, chat template applied).

    Args:
        slots: rows decoded together (the batch size); finished rows are replaced by waiting ones.
        stop_ids: end-of-turn ids (:func:`alignkit.stop_tokens.stop_token_ids`); a row ends after emitting one.
        stop_loops: stop a greedy row once its reply ends in a loop (:func:`alignkit.stop_tokens.loop_stop_length`),
            marking it ``looping``. Greedy only: a sampled row can leave a loop.
        return_logprobs: also return log p(token) under the raw (untempered) distribution, fp32.
        share_prefix: compute the prompts' shared opening once (:mod:`alignkit.prefix_cache`).
        on_done: called with the number of rows that finished at each step (progress bars).
    """
    if not prompts:
        return Decoded([], [], [], [] if return_logprobs else None)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if stop_loops and sampler.do_sample:
        raise ValueError("stop_loops applies to greedy decoding only")
    if any(len(p) == 0 for p in prompts):
        raise ValueError(f"prompt {next(i for i, p in enumerate(prompts) if not p)} is empty")
    if slots < 1:
        raise ValueError(f"slots must be >= 1, got {slots}")
    if not supported(model):
        raise ValueError("decode() does not support this model (see alignkit.decoding.supported); use model.generate")
    # the fast path chooses tokens with a bf16 LM head; log-probs, when asked for, keep the fp32 one
    head = nullcontext() if return_logprobs else bf16_generation_head(model)
    with torch.inference_mode(), head:
        engine = _Engine(
            model, prompts, max_new_tokens, stop_ids, slots, sampler, stop_loops, return_logprobs, pad_id, share_prefix
        )
        return engine.run(on_done)
