"""HW5's sequence-to-sequence networks and their decoding: a torch.nn Transformer and the course's RNN sample.

Both expose the same incremental interface that `greedy_search` / `beam_search` drive:
`encode(src) -> state` and `decode_step(prev_tokens, state) -> (log_probs, state)`, where `state` is a
dict of tensors (or lists of them) whose first dimension is the sentence (or beam): reordering beams,
or dropping finished sentences, is one `index_select` on each of them.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

State = dict[str, torch.Tensor | list[torch.Tensor]]


def reorder(state: State, index: torch.Tensor) -> State:
    """Rows `index` of every tensor in `state` (beam reordering, dropping finished sentences)."""
    return {key: [t.index_select(0, index) for t in value] if isinstance(value, list) else value.index_select(0, index)
            for key, value in state.items()}


def sinusoidal_positions(length: int, dim: int, offset: int = 0, device=None) -> torch.Tensor:
    """The Transformer paper's fixed position encodings (no length limit, as in the course's fairseq model)."""
    position = torch.arange(offset, offset + length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return table


class TransformerSeq2Seq(nn.Module):
    """Encoder-decoder Transformer from `nn.TransformerEncoder`/`nn.TransformerDecoder`: pre-norm layers,
    one embedding shared by source, target and the output projection (one joint SentencePiece vocabulary).

    `nn.TransformerDecoder` recomputes every earlier position at each decoding step; `decode_step`
    runs the same layers (their own weights) on the newest position only, with each layer's
    self-attention keys/values cached and the encoder's keys/values projected once. No torch.nn
    module decodes incrementally, hence the hand-written step; a test checks it equals the full pass.
    """

    def __init__(self, vocab_size: int, embed_dim: int = 256, hidden_dim: int = 1024, encoder_layers: int = 3,
                 decoder_layers: int = 3, attention_heads: int = 4, dropout: float = 0.1, pad_id: int = 0) -> None:
        super().__init__()
        if embed_dim % attention_heads:
            raise ValueError(f"embed_dim {embed_dim} must be divisible by attention_heads {attention_heads}")
        self.pad_id, self.embed_dim, self.heads = pad_id, embed_dim, attention_heads
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        nn.init.normal_(self.embed.weight, std=embed_dim ** -0.5)
        nn.init.zeros_(self.embed.weight[pad_id])
        self.dropout = nn.Dropout(dropout)
        layer = dict(d_model=embed_dim, nhead=attention_heads, dim_feedforward=hidden_dim, dropout=dropout,
                     batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(**layer), encoder_layers,
                                             norm=nn.LayerNorm(embed_dim), enable_nested_tensor=False)
        self.decoder = nn.TransformerDecoder(nn.TransformerDecoderLayer(**layer), decoder_layers,
                                             norm=nn.LayerNorm(embed_dim))

    def embed_tokens(self, tokens: torch.Tensor, offset: int = 0) -> torch.Tensor:
        x = self.embed(tokens) * math.sqrt(self.embed_dim)
        return self.dropout(x + sinusoidal_positions(tokens.shape[1], self.embed_dim, offset, tokens.device))

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: logits (B, T, V) for every target position at once."""
        src_pad = src.eq(self.pad_id)
        memory = self.encoder(self.embed_tokens(src), src_key_padding_mask=src_pad)
        causal = nn.Transformer.generate_square_subsequent_mask(tgt_in.shape[1], device=src.device)
        out = self.decoder(self.embed_tokens(tgt_in), memory, tgt_mask=causal, tgt_is_causal=True,
                           memory_key_padding_mask=src_pad)
        return out @ self.embed.weight.T

    # --- incremental decoding -----------------------------------------------------------------
    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (N, L, D) -> (N, H, L, D/H)

    def encode(self, src: torch.Tensor) -> State:
        src_pad = src.eq(self.pad_id)
        memory = self.encoder(self.embed_tokens(src), src_key_padding_mask=src_pad)
        state: State = {"memory_mask": ~src_pad[:, None, None, :], "step": torch.zeros(len(src), dtype=torch.long),
                        "memory_k": [], "memory_v": [], "self_k": [], "self_v": []}
        for layer in self.decoder.layers:
            attn = layer.multihead_attn
            _, w_k, w_v = attn.in_proj_weight.chunk(3)
            _, b_k, b_v = attn.in_proj_bias.chunk(3)
            state["memory_k"].append(self._heads(F.linear(memory, w_k, b_k)))
            state["memory_v"].append(self._heads(F.linear(memory, w_v, b_v)))
            empty = memory.new_zeros(len(src), self.heads, 0, self.embed_dim // self.heads)
            state["self_k"].append(empty)
            state["self_v"].append(empty)
        return state

    def decode_step(self, prev_tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Log-probabilities (N, V) of the next token after `prev_tokens` (N,), the newest input; eval mode only."""
        step = int(state["step"][0])
        x = self.embed_tokens(prev_tokens[:, None], offset=step)  # (N, 1, D)
        new = {"memory_mask": state["memory_mask"], "step": state["step"] + 1, "memory_k": state["memory_k"],
               "memory_v": state["memory_v"], "self_k": [], "self_v": []}
        for i, layer in enumerate(self.decoder.layers):
            # pre-norm TransformerDecoderLayer: x + SA(norm1(x)), + CA(norm2(x), memory), + FF(norm3(x))
            attn = layer.self_attn
            qkv = F.linear(layer.norm1(x), attn.in_proj_weight, attn.in_proj_bias)
            q, k, v = (self._heads(t) for t in qkv.chunk(3, -1))
            keys = torch.cat([state["self_k"][i].to(k.dtype), k], 2)  # (mixed precision: the first is fp32)
            values = torch.cat([state["self_v"][i].to(v.dtype), v], 2)
            new["self_k"].append(keys)
            new["self_v"].append(values)
            x = x + attn.out_proj(F.scaled_dot_product_attention(q, keys, values).transpose(1, 2).flatten(2))
            cross = layer.multihead_attn
            w_q, b_q = cross.in_proj_weight[: self.embed_dim], cross.in_proj_bias[: self.embed_dim]
            q = self._heads(F.linear(layer.norm2(x), w_q, b_q))
            a = F.scaled_dot_product_attention(q, state["memory_k"][i], state["memory_v"][i],
                                               attn_mask=state["memory_mask"])
            x = x + cross.out_proj(a.transpose(1, 2).flatten(2))
            x = x + layer.linear2(layer.activation(layer.linear1(layer.norm3(x))))
        logits = self.decoder.norm(x[:, 0]) @ self.embed.weight.T
        return logits.log_softmax(-1), new


class RNNSeq2Seq(nn.Module):
    """The course's sample model: a bidirectional GRU encoder and a GRU decoder with (Luong) attention
    over the encoder's outputs, one embedding shared by both sides and the output projection.

    The decoder's GRU starts from the encoder's final states (both directions concatenated), so it is
    twice as wide as the encoder's (the course's 512 -> 1024).
    """

    def __init__(self, vocab_size: int, embed_dim: int = 256, hidden_dim: int = 512, encoder_layers: int = 1,
                 decoder_layers: int = 1, dropout: float = 0.3, pad_id: int = 0) -> None:
        super().__init__()
        if encoder_layers != decoder_layers:
            raise ValueError("the RNN sample starts each decoder layer from an encoder layer: "
                             f"encoder_layers ({encoder_layers}) must equal decoder_layers ({decoder_layers})")
        self.pad_id = pad_id
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.dropout = nn.Dropout(dropout)
        self.encoder = nn.GRU(embed_dim, hidden_dim, encoder_layers, batch_first=True, bidirectional=True,
                              dropout=dropout if encoder_layers > 1 else 0.0)
        self.decoder = nn.GRU(embed_dim, 2 * hidden_dim, decoder_layers, batch_first=True,
                              dropout=dropout if decoder_layers > 1 else 0.0)
        self.attn_in = nn.Linear(2 * hidden_dim, 2 * hidden_dim, bias=False)
        self.attn_out = nn.Linear(4 * hidden_dim, 2 * hidden_dim, bias=False)
        self.out_proj = nn.Linear(2 * hidden_dim, embed_dim)

    def encode(self, src: torch.Tensor) -> State:
        lengths = src.ne(self.pad_id).sum(1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(self.dropout(self.embed(src)), lengths, batch_first=True,
                                                   enforce_sorted=False)
        out, hidden = self.encoder(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=src.shape[1])
        hidden = hidden.unflatten(0, (-1, 2))  # (layers, directions, N, H)
        hidden = torch.cat([hidden[:, 0], hidden[:, 1]], -1)  # (layers, N, 2H)
        return {"memory": self.dropout(out), "memory_mask": src.ne(self.pad_id), "hidden": hidden.transpose(0, 1)}

    def _decode(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (N, T, V) for `tokens` (N, T) and the GRU's last hidden state (N, layers, 2H)."""
        out, hidden = self.decoder(self.dropout(self.embed(tokens)), state["hidden"].transpose(0, 1).contiguous())
        scores = self.attn_in(out) @ state["memory"].transpose(1, 2)  # (N, T, S)
        scores = scores.masked_fill(~state["memory_mask"][:, None, :], float("-inf"))
        context = scores.softmax(-1) @ state["memory"]
        out = self.dropout(torch.tanh(self.attn_out(torch.cat([out, context], -1))))
        return self.out_proj(out) @ self.embed.weight.T, hidden.transpose(0, 1)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        return self._decode(tgt_in, self.encode(src))[0]

    def decode_step(self, prev_tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        logits, hidden = self._decode(prev_tokens[:, None], state)
        return logits[:, 0].log_softmax(-1), {**state, "hidden": hidden}


# --- search --------------------------------------------------------------------------------------
def max_lengths(src: torch.Tensor, pad_id: int, max_len_a: float, max_len_b: int) -> torch.Tensor:
    """The course's output length limit per sentence: a * source length + b tokens (</s> included)."""
    return (src.ne(pad_id).sum(1).float() * max_len_a + max_len_b).long()


@torch.no_grad()
def greedy_search(model: nn.Module, src: torch.Tensor, bos_id: int, eos_id: int, pad_id: int,
                  max_len_a: float = 1.2, max_len_b: int = 10) -> list[list[int]]:
    """The most likely token at each step; finished sentences leave the batch. Returns token ids without specials."""
    limit = max_lengths(src, pad_id, max_len_a, max_len_b)
    state = model.encode(src)
    active = torch.arange(len(src), device=src.device)  # which sentences the rows of `state` belong to
    prev = torch.full((len(src),), bos_id, dtype=torch.long, device=src.device)
    out: list[list[int]] = [[] for _ in range(len(src))]
    for step in range(int(limit.max())):
        log_probs, state = model.decode_step(prev, state)
        log_probs[limit[active] <= step + 1, :] = float("-inf")  # at the limit, only </s> is left
        log_probs[limit[active] <= step + 1, eos_id] = 0.0
        prev = log_probs.argmax(-1)
        done = prev.eq(eos_id)
        for row, token in zip(active[~done].tolist(), prev[~done].tolist()):
            out[row].append(token)
        if done.all():
            break
        keep = (~done).nonzero().squeeze(1)
        if len(keep) < len(active):
            state, active, prev = reorder(state, keep), active[keep], prev[keep]
    return out


@torch.no_grad()
def beam_search(model: nn.Module, src: torch.Tensor, bos_id: int, eos_id: int, pad_id: int, beam_size: int = 5,
                len_penalty: float = 1.0, max_len_a: float = 1.2, max_len_b: int = 10) -> list[list[int]]:
    """fairseq's beam search, batched over sentences: each step keeps the `beam_size` best unfinished
    hypotheses per sentence from the 2 x beam best extensions; a hypothesis ending in </s> is set aside
    with score sum(log p) / length ** len_penalty; a sentence is done with `beam_size` of them.
    Returns the best finished hypothesis per sentence, token ids without specials."""
    k = beam_size
    limit = max_lengths(src, pad_id, max_len_a, max_len_b)
    num, device = len(src), src.device
    state = reorder(model.encode(src), torch.arange(num, device=device).repeat_interleave(k))
    active = torch.arange(num, device=device)  # sentences still searching; state rows = active x k beams
    scores = torch.zeros(num, k, device=device)
    scores[:, 1:] = float("-inf")  # at first all beams are the same <s>: expand only one
    tokens = torch.full((num, k, 1), bos_id, dtype=torch.long, device=device)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(num)]
    for step in range(int(limit.max())):
        log_probs, state = model.decode_step(tokens[:, :, -1].flatten(), state)
        vocab = log_probs.shape[-1]
        at_limit = (limit[active] <= step + 1).repeat_interleave(k)
        log_probs[at_limit, :] = float("-inf")  # at the limit, only </s> is left
        log_probs[at_limit, eos_id] = 0.0
        candidates = (scores[:, :, None] + log_probs.view(-1, k, vocab)).flatten(1)  # (n, k * V)
        top_scores, top = candidates.topk(min(2 * k, candidates.shape[1]), dim=1)
        beam, token = top // vocab, top % vocab
        is_eos = token.eq(eos_id) & torch.isfinite(top_scores)
        length = step + 1  # tokens in the hypothesis, </s> included
        for i, j in is_eos.nonzero().tolist():
            sentence = int(active[i])
            # only candidates ranked among the first k count, as in fairseq
            if j < k and len(finished[sentence]) < k:
                hyp = tokens[i, beam[i, j], 1:].tolist()
                finished[sentence].append((float(top_scores[i, j]) / length ** len_penalty, hyp))
        done = torch.tensor([len(finished[int(s)]) >= k for s in active], device=device)
        done |= limit[active] <= step + 1  # nothing can follow the forced </s>
        if done.all():
            break
        # the k best extensions that do not end in </s> continue
        rank = torch.where(is_eos, float("inf"), torch.arange(top.shape[1], device=device, dtype=torch.float))
        keep = torch.argsort(rank, dim=1, stable=True)[:, :k]
        beam, token, new_scores = beam.gather(1, keep), token.gather(1, keep), top_scores.gather(1, keep)
        live = (~done).nonzero().squeeze(1)
        rows = (live[:, None] * k + beam[live]).flatten()
        state = reorder(state, rows)
        tokens = torch.cat([tokens[live[:, None], beam[live]], token[live][:, :, None]], 2)
        scores, active = new_scores[live], active[live]
    best = []
    for sentence in range(num):
        hyps = finished[sentence]
        best.append(max(hyps, key=lambda h: h[0])[1] if hyps else [])
    return best
