"""A small decoder-only transformer (GPT-2 style, pre-LayerNorm) for character-level LMs.

    model = create_model("gpt", num_classes=65, input_shape=(128,), width=128)
    logits = model(tokens)        # int64 (B, T) -> (B, T, vocab)

Module names follow the layers WTA-CRS converts by default (the attention output projection
and the feed-forward layers, not q/k/v): ``blocks.N.attn.qkv`` (fused q, k, v projection),
``blocks.N.attn.proj``, ``blocks.N.mlp.fc``, ``blocks.N.mlp.proj``; plus ``tok_emb``,
``pos_emb``, ``ln_f`` and ``head``. Causal attention through
``F.scaled_dot_product_attention(is_causal=True)``; GELU feed-forward of width ``4 * n_embd``;
no dropout; no weight tying. Init: normal(0, 0.02) weights, zero biases, residual
projections (``attn.proj``, ``mlp.proj``) scaled by ``1 / sqrt(2 * n_layer)`` (GPT-2).
Limits: sequences longer than ``block_size`` are rejected (learned position embeddings);
no KV cache / generation helper; every call attends over the whole input window.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention: ``qkv`` projection, SDPA, output ``proj``."""

    def __init__(self, n_embd: int, n_head: int) -> None:
        super().__init__()
        if n_embd % n_head != 0:
            raise ValueError(f"n_embd={n_embd} must be divisible by n_head={n_head}")
        self.n_head = n_head
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)

    def forward(self, x: Tensor) -> Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        shape = (b, t, self.n_head, c // self.n_head)
        q, k, v = (z.view(shape).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class MLP(nn.Module):
    """``fc`` (n_embd -> 4 n_embd) -> GELU -> ``proj`` (4 n_embd -> n_embd)."""

    def __init__(self, n_embd: int) -> None:
        super().__init__()
        self.fc = nn.Linear(n_embd, 4 * n_embd)
        self.proj = nn.Linear(4 * n_embd, n_embd)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    """Pre-LN transformer block: ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))``."""

    def __init__(self, n_embd: int, n_head: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head)
        self.ln2 = nn.LayerNorm(n_embd)
        self.mlp = MLP(n_embd)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Token + position embeddings -> ``n_layer`` blocks -> LayerNorm -> vocabulary logits.

    Input int64 tokens ``(B, T)`` with ``T <= block_size``; output logits ``(B, T, vocab)``.
    """

    def __init__(
        self, vocab_size: int, *, n_layer: int = 4, n_head: int = 4, n_embd: int = 128,
        block_size: int = 128,
    ) -> None:
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("n_layer", n_layer),
                            ("n_head", n_head), ("n_embd", n_embd), ("block_size", block_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GPT: {name} must be an integer >= 1, got {value!r}")
        self.block_size = block_size
        self.tok_emb = nn.Embedding(vocab_size, n_embd)
        self.pos_emb = nn.Embedding(block_size, n_embd)
        self.blocks = nn.ModuleList(Block(n_embd, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, vocab_size, bias=False)
        self._init_weights(n_layer)

    def _init_weights(self, n_layer: int) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        for block in self.blocks:
            assert isinstance(block, Block)
            for proj in (block.attn.proj, block.mlp.proj):
                nn.init.normal_(proj.weight, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.dim() != 2:
            raise ValueError(f"GPT expects int64 tokens of shape (B, T), got {tuple(tokens.shape)}")
        t = tokens.shape[1]
        if t > self.block_size:
            raise ValueError(f"sequence length {t} exceeds block_size {self.block_size}")
        pos = torch.arange(t, device=tokens.device)
        x = self.tok_emb(tokens) + self.pos_emb(pos)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))
