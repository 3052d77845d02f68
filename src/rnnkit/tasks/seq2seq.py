r"""An attention decoder for sequence-to-sequence tasks: attention, a decoder, greedy and beam search.

The decoder reads any encoder's outputs, the *memory* ``(T, B, D)`` with each sequence's
``lengths`` ``(B,)``, and writes a token sequence; ``translate`` feeds it a bidirectional
``rnnkit.Recurrent`` over source words, a captioning task can feed it frame features.

Shape symbols: T memory steps, B batch, D memory features, U output steps, V output
vocabulary, E token embedding, H decoder state, A attention size.

Attention (``Attention``), a score per memory step, a softmax over the valid steps, a context:

.. math::
    \text{additive (Bahdanau et al. 2015, "Neural Machine Translation by Jointly Learning to
    Align and Translate", eq. 6 and A.1.2):}\quad e_{tj} = v^\top \tanh(W_q s_t + W_k m_j)

    \text{multiplicative (Luong et al. 2015, "Effective Approaches to Attention-based Neural
    Machine Translation", sec. 3.1, "general"):}\quad e_{tj} = s_t^\top W_a m_j

    \alpha_{tj} = \frac{\exp e_{tj}}{\sum_{k < \text{len}} \exp e_{tk}} \;(0 \text{ for } j \ge \text{len}),
    \qquad c_t = \sum_j \alpha_{tj} m_j

The decoder (``Decoder``) follows Luong et al. 2015 (sec. 3.1 and 3.3, input feeding) for
both scores: with y_{t-1} the previous token (``<s>`` first) and \tilde h_0 = 0,

.. math::
    s_t = \text{cell}([E y_{t-1}; \tilde h_{t-1}], s_{t-1}), \qquad
    c_t = \text{attend}(s_t, m), \qquad
    \tilde h_t = \tanh(W_c [c_t; s_t]), \qquad
    p(y_t \mid y_{<t}, m) = \text{softmax}(W_o \tilde h_t)

and every state tensor of every layer starts from the mean of the valid memory steps,
s_0 = \tanh(W_0 \bar m) (Bahdanau et al. A.2.2 start from the backward encoder state; the mean needs
nothing but the memory, so any encoder fits). The cell is any rnnkit cell (``rnnkit.Recurrent``,
unidirectional, stepped with ``Recurrent.step``). Implementation note: with the additive score
the flow stays Luong's (the score reads s_t, not s_{t-1} as in Bahdanau et al.); only the score
function differs.

Training is teacher forcing: the input at step t is the reference y_{t-1}. Scheduled sampling
(Bengio et al. 2015, "Scheduled Sampling for Sequence Prediction with Recurrent Neural
Networks") feeds, per sequence and step, a token sampled from the model's own distribution
instead, with probability ``sampling_prob``.

Search: ``greedy`` takes the most likely token at every step; ``beam_search`` keeps the K best
prefixes by summed log-probability, a finished prefix (one ending in ``</s>``) stays in the
beam unchanged, and the final choice is by the length-normalized score of Wu et al. 2016
("Google's Neural Machine Translation System", eq. 14):

.. math::
    \text{score}(Y) = \frac{\log P(Y \mid m)}{lp(Y)}, \qquad lp(Y) = \frac{(5 + |Y|)^\alpha}{(5 + 1)^\alpha}

with |Y| the tokens generated, ``</s>`` included, and α = ``length_penalty`` (0: none). With
one beam, beam search is greedy search.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..cells import LSTMState, map_state
from ..recurrent import Recurrent

ATTENTIONS = ("additive", "multiplicative")
DECODERS = ("greedy", "beam")  # the searches: ``greedy`` and ``beam_search``


@dataclass
class EncoderDecoderFields:
    """The Config fields of a task built on this decoder (translate, caption), a field group of
    ``rnnkit.tasks.fields``: the cell and size of the encoder and the decoder, the attention score, the beams."""

    cell: str = field(default="lstm", metadata={"help": "any cell of `rnnkit cells`, encoder and decoder"})
    hidden_size: int = field(default=128, metadata={"help": "H of the encoder (per direction) and the decoder"})
    num_layers: int = field(default=1, metadata={"help": "stacked layers of the encoder and of the decoder"})
    attention: str = field(default="multiplicative", metadata={"help": "additive (Bahdanau) or multiplicative "
                                                                       "(Luong general)"})
    beam_size: int = field(default=5, metadata={"help": "beams of beam search"})


@dataclass
class SearchArgs:
    """The search flags of the evaluate and predict verbs of a task built on this decoder (translate, caption);
    a verb's argument dataclass (``rnnkit.tasks.registry.Verb``) takes it as a base."""

    decoder: str = field(default="beam", metadata={"help": "greedy or beam search", "choices": DECODERS})
    beam_size: int | None = field(default=None, metadata={"help": "beams (default: the training run's)"})


LENGTH_PENALTY_BASE = 5.0  # the constant of Wu et al.'s lp(Y) = ((5 + |Y|) / 6) ** alpha


def valid_mask(lengths: Tensor, T: int) -> Tensor:
    """(T, B) bool, True on each sequence's first ``lengths[b]`` steps."""
    return torch.arange(T, device=lengths.device)[:, None] < lengths[None, :]


def check_memory(memory: Tensor, lengths: Tensor) -> None:
    """Errors that name what is wrong with an encoder's outputs and lengths."""
    if memory.dim() != 3:
        raise ValueError(f"memory must be (T, B, D), got shape {tuple(memory.shape)}")
    T, B, _ = memory.shape
    if lengths.dim() != 1 or lengths.shape[0] != B:
        raise ValueError(f"lengths must be (B,) = ({B},), got shape {tuple(lengths.shape)}")
    if B and (int(lengths.min()) < 1 or int(lengths.max()) > T):
        raise ValueError(f"lengths must be in [1, T={T}], got min {int(lengths.min())} and max {int(lengths.max())}")


class Attention(nn.Module):
    r"""Additive (Bahdanau) or multiplicative (Luong "general") attention over a masked memory.

    ``keys(memory (T, B, D))`` projects the memory once per sequence: (T, B, A) for additive
    (W_k m_j), (T, B, Q) for multiplicative (W_a m_j). ``forward(query (B, Q), keys, memory, mask
    (T, B))`` -> context (B, D) and weights (T, B): each column sums to 1, zero where mask is False.
    """

    def __init__(self, kind: str, query_size: int, memory_size: int, attention_size: int) -> None:
        super().__init__()
        if kind not in ATTENTIONS:
            raise ValueError(f"attention must be one of {', '.join(ATTENTIONS)}, got {kind!r}")
        self.kind = kind
        if kind == "additive":
            self.query_proj = nn.Linear(query_size, attention_size, bias=False)  # W_q
            self.key_proj = nn.Linear(memory_size, attention_size)  # W_k (its bias is the b of tanh(W s + U m + b))
            self.v = nn.Linear(attention_size, 1, bias=False)  # v
        else:
            self.key_proj = nn.Linear(memory_size, query_size, bias=False)  # W_a

    def keys(self, memory: Tensor) -> Tensor:
        return self.key_proj(memory)  # (T, B, A) or (T, B, Q)

    def forward(self, query: Tensor, keys: Tensor, memory: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        if self.kind == "additive":
            scores = self.v(torch.tanh(keys + self.query_proj(query)[None])).squeeze(-1)  # (T, B)
        else:
            scores = (keys * query[None]).sum(-1)  # (T, B)
        scores = scores.float().masked_fill(~mask, float("-inf"))
        weights = scores.softmax(0).to(memory.dtype)  # (T, B), 0 past each length
        context = (weights[..., None] * memory).sum(0)  # (B, D)
        return context, weights


class DecoderState(NamedTuple):
    """Everything a decoding step reads besides the previous token."""

    rnn: Tensor | LSTMState  # (L, B, H), or LSTMState of two
    feed: Tensor  # (B, H) \tilde h_{t-1}, the attentional state fed back as input
    memory: Tensor  # (T, B, D)
    keys: Tensor  # (T, B, A) the attention's projection of the memory
    mask: Tensor  # (T, B) bool, the valid memory steps


def reorder(state: DecoderState, index: Tensor) -> DecoderState:
    """The state of the sequences at ``index`` (B',) of the batch: beam search's reordering."""
    rnn = map_state(lambda s: s.index_select(1, index), state.rnn)
    return DecoderState(rnn, state.feed.index_select(0, index), state.memory.index_select(1, index),
                        state.keys.index_select(1, index), state.mask.index_select(1, index))


class Decoder(nn.Module):
    """An attention decoder (see the module notes); ``bos_id`` starts every output, ``eos_id`` ends it.

    start(memory (T, B, D), lengths (B,)) -> DecoderState
    advance(tokens (B,), state) -> \\tilde h_t (B, H), attention weights (T, B), the next state
    step(tokens (B,), state) -> logits (B, V), attention weights (T, B), the next state
    forward(memory, lengths, targets (U, B), sampling_prob=0.0) -> logits (U, B, V), attention (U, T, B):
        teacher forcing: step t reads ``<s>`` then targets[t - 1]; the logits at t predict targets[t]
    """

    def __init__(self, vocab_size: int, memory_size: int, hidden_size: int, embedding_size: int,
                 bos_id: int, eos_id: int, cell: str = "lstm", num_layers: int = 1,
                 attention: str = "multiplicative", attention_size: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        self.bos_id, self.eos_id, self.vocab_size = bos_id, eos_id, vocab_size
        self.hidden_size = hidden_size
        self.embed = nn.Embedding(vocab_size, embedding_size)
        self.rnn = Recurrent(cell, embedding_size + hidden_size, hidden_size, num_layers)
        self.attention = Attention(attention, hidden_size, memory_size, attention_size or hidden_size)
        self.combine = nn.Linear(memory_size + hidden_size, hidden_size, bias=False)  # W_c
        self.out = nn.Linear(hidden_size, vocab_size)  # W_o
        self.dropout = nn.Dropout(dropout)
        self.state_sizes = self.rnn.cell.state_sizes(hidden_size, 0)  # (H,) or (H, H) for the LSTM family
        self.init = nn.Linear(memory_size, num_layers * sum(self.state_sizes))  # W_0: every state from the mean

    def start(self, memory: Tensor, lengths: Tensor) -> DecoderState:
        check_memory(memory, lengths)
        T, B, _ = memory.shape
        mask = valid_mask(lengths.to(memory.device), T)  # (T, B)
        mean = (memory * mask[..., None]).sum(0) / mask.sum(0)[:, None].to(memory.dtype)  # (B, D)
        L = self.rnn.num_layers
        parts = torch.tanh(self.init(mean)).view(B, L, sum(self.state_sizes)).transpose(0, 1)  # (L, B, sum)
        pieces = [p.contiguous() for p in parts.split(list(self.state_sizes), -1)]  # each (L, B, size)
        rnn = LSTMState(*pieces) if len(pieces) == 2 else pieces[0]
        feed = memory.new_zeros(B, self.hidden_size)
        return DecoderState(rnn, feed, memory, self.attention.keys(memory), mask)

    def advance(self, tokens: Tensor, state: DecoderState) -> tuple[Tensor, Tensor, DecoderState]:
        """The recurrent part of a step: tokens (B,) -> \\tilde h_t (B, H), attention weights (T, B), next state."""
        x = torch.cat([self.dropout(self.embed(tokens)), state.feed], -1)  # (B, E + H)
        s, rnn = self.rnn.step(x, state.rnn)  # s (B, H)
        context, weights = self.attention(s, state.keys, state.memory, state.mask)  # (B, D), (T, B)
        feed = torch.tanh(self.combine(torch.cat([context, s], -1)))  # (B, H): \tilde h_t
        return feed, weights, DecoderState(rnn, feed, state.memory, state.keys, state.mask)

    def step(self, tokens: Tensor, state: DecoderState) -> tuple[Tensor, Tensor, DecoderState]:
        feed, weights, state = self.advance(tokens, state)
        return self.out(self.dropout(feed)), weights, state  # logits (B, V)

    def forward(self, memory: Tensor, lengths: Tensor, targets: Tensor, sampling_prob: float = 0.0
                ) -> tuple[Tensor, Tensor]:
        if not 0.0 <= sampling_prob <= 1.0:
            raise ValueError(f"sampling_prob must be in [0, 1], got {sampling_prob!r}")
        U, B = targets.shape
        state = self.start(memory, lengths)
        tokens = targets.new_full((B,), self.bos_id)
        feeds, all_weights = [], []
        for t in range(U):
            feed, weights, state = self.advance(tokens, state)
            feeds.append(feed)
            all_weights.append(weights)
            tokens = targets[t]
            if sampling_prob > 0 and t + 1 < U:
                # scheduled sampling: some sequences read a sample of the model's own distribution instead
                with torch.no_grad():
                    probs = self.out(feed).float().softmax(-1)  # (B, V)
                sampled = torch.multinomial(probs, 1).squeeze(1)  # (B,)
                own = torch.rand(B, device=targets.device) < sampling_prob
                tokens = torch.where(own, sampled, tokens)
        # the output layer once over all steps: one large product instead of U small ones
        logits = self.out(self.dropout(torch.stack(feeds)))  # (U, B, V)
        return logits, torch.stack(all_weights)  # (U, B, V), (U, T, B)


class Hypotheses(NamedTuple):
    """The outputs of a search, one per input sequence."""

    tokens: list[list[int]]  # without </s>
    log_probs: list[float]  # log P(Y | m) of each output, </s> included where it was generated
    scores: list[float]  # what chose it: log P for greedy, the length-normalized score for beam search


def length_penalty(lengths: Tensor, alpha: float) -> Tensor:
    """lp(Y) = ((5 + |Y|) / (5 + 1)) ** alpha (Wu et al. 2016); 1 for alpha = 0."""
    return ((LENGTH_PENALTY_BASE + lengths.to(torch.float)) / (LENGTH_PENALTY_BASE + 1.0)) ** alpha


def _trim(row: list[int], eos_id: int) -> list[int]:
    return row[: row.index(eos_id)] if eos_id in row else row


@torch.no_grad()
def greedy(decoder: Decoder, memory: Tensor, lengths: Tensor, max_length: int) -> Hypotheses:
    """The most likely token at each step, until ``</s>`` or ``max_length`` tokens, for each sequence."""
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length!r}")
    B = memory.shape[1]
    state = decoder.start(memory, lengths)
    tokens = torch.full((B,), decoder.bos_id, dtype=torch.long, device=memory.device)
    done = torch.zeros(B, dtype=torch.bool, device=memory.device)
    total = torch.zeros(B, dtype=torch.float, device=memory.device)
    out = []
    for _ in range(max_length):
        logits, _, state = decoder.step(tokens, state)
        log_probs = logits.float().log_softmax(-1)  # (B, V)
        best, tokens = log_probs.max(-1)  # (B,), (B,)
        total += torch.where(done, torch.zeros_like(best), best)
        tokens = torch.where(done, torch.full_like(tokens, decoder.eos_id), tokens)
        out.append(tokens)
        done |= tokens == decoder.eos_id
        if bool(done.all()):
            break
    rows = torch.stack(out, 1).tolist()  # (B, U)
    totals = total.tolist()
    return Hypotheses([_trim(r, decoder.eos_id) for r in rows], totals, totals)


@torch.no_grad()
def beam_search(decoder: Decoder, memory: Tensor, lengths: Tensor, beam_size: int, max_length: int,
                alpha: float = 0.6) -> Hypotheses:
    """The best of ``beam_size`` beams per sequence by the length-normalized score (module notes)."""
    if isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1:
        raise ValueError(f"beam_size must be a positive int, got {beam_size!r}")
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length!r}")
    if alpha < 0:
        raise ValueError(f"length_penalty (alpha) must be >= 0, got {alpha!r}")
    T, B, _ = memory.shape
    K, V = beam_size, decoder.vocab_size
    if K > V:
        raise ValueError(f"beam_size {K} exceeds the output vocabulary ({V} tokens)")
    device = memory.device
    flat = torch.arange(B, device=device).repeat_interleave(K)  # (B*K,): the sequence of each beam
    state = decoder.start(memory.index_select(1, flat), lengths.to(device).index_select(0, flat))
    tokens = torch.full((B * K,), decoder.bos_id, dtype=torch.long, device=device)
    scores = torch.full((B, K), float("-inf"), device=device)
    scores[:, 0] = 0.0  # one live beam at the start: the others would repeat it
    done = torch.zeros(B, K, dtype=torch.bool, device=device)
    count = torch.zeros(B, K, dtype=torch.long, device=device)  # tokens generated, </s> included
    history = torch.empty(B, K, 0, dtype=torch.long, device=device)
    # a finished beam continues only with </s> at no cost, so it keeps its score and its place
    finished_row = torch.full((V,), float("-inf"), device=device)
    finished_row[decoder.eos_id] = 0.0
    for _ in range(max_length):
        logits, _, state = decoder.step(tokens, state)
        log_probs = logits.float().log_softmax(-1).view(B, K, V)
        log_probs = torch.where(done[..., None], finished_row, log_probs)
        candidates = (scores[..., None] + log_probs).view(B, K * V)
        scores, index = candidates.topk(K, dim=1)  # (B, K), best first
        beam, tokens = index // V, index % V  # (B, K) each
        done, count = done.gather(1, beam), count.gather(1, beam)
        history = torch.cat([history.gather(1, beam[..., None].expand(-1, -1, history.shape[2])),
                             tokens[..., None]], 2)
        count = count + (~done).long()
        done = done | (tokens == decoder.eos_id)
        state = reorder(state, (torch.arange(B, device=device)[:, None] * K + beam).view(-1))
        tokens = tokens.view(-1)
        if bool(done.all()):
            break
    normalized = scores / length_penalty(count, alpha)  # (B, K)
    best = normalized.argmax(1)  # (B,); ties: the beam of higher log-probability, which comes first
    rows = history[torch.arange(B, device=device), best].tolist()
    picked = scores.gather(1, best[:, None]).squeeze(1).tolist()
    return Hypotheses([_trim(r, decoder.eos_id) for r in rows], picked,
                      normalized.gather(1, best[:, None]).squeeze(1).tolist())


@torch.no_grad()
def sequence_log_probs(decoder: Decoder, memory: Tensor, lengths: Tensor, outputs: list[list[int]],
                       pad_id: int, add_eos: bool = True) -> tuple[list[float], Tensor]:
    """log P(Y | m) of given outputs by teacher forcing (``</s>`` appended with ``add_eos``), and the
    attention weights (U, T, B) along them: a search's score, recomputed; the attention heat map."""
    rows = [list(o) + ([decoder.eos_id] if add_eos else []) for o in outputs]
    U = max(1, max(len(r) for r in rows))
    targets = torch.full((U, len(rows)), pad_id, dtype=torch.long, device=memory.device)
    for b, r in enumerate(rows):
        targets[: len(r), b] = torch.tensor(r, dtype=torch.long)
    logits, weights = decoder(memory, lengths, targets)  # (U, B, V), (U, T, B)
    picked = logits.float().log_softmax(-1).gather(2, targets[..., None]).squeeze(2)  # (U, B)
    keep = valid_mask(torch.tensor([len(r) for r in rows], device=memory.device), U)  # (U, B)
    return (picked * keep).sum(0).tolist(), weights
