"""A small vision-language-action policy from standard parts, saved and loaded in HF format.

Inputs per policy call: the instruction's word tokens, the state vector (proprioception, object and
goal positions; normalised with stored statistics) and optionally a camera image (a small CNN by
default, or any ``transformers`` vision encoder loaded by path). These become prefix embeddings of a
causal GPT-2 backbone (``transformers.GPT2Model`` on ``inputs_embeds``), followed by one placeholder
query per action token of the chunk; each query's output gives that token's distribution over the
``n_bins`` action bins. This is OpenVLA-OFT's parallel decoding (one forward per call, tokens
conditionally independent given the observation), which SimpleVLA-RL trains with GRPO.

Learner seam: ``sequence_logprobs(batch, ...)`` recomputes, for a trajectory row of ``Rollouts``,
every call's action-token log-probs from the observations the rollout stored in
``batch.extras["vla_state"]`` (B, C, S) and ``batch.extras["vla_image"]`` (B, C, H, W, 3), with the
instruction in ``batch.prompt_ids``; the response row is the concatenation of the C calls' tokens.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, GPT2Config, GPT2Model, PretrainedConfig, PreTrainedModel

PAD, UNK = 0, 1


class VLAConfig(PretrainedConfig):
    model_type = "reasonrl_vla"

    def __init__(self, words: list[str] | None = None, state_dim: int = 31, action_dim: int = 4, chunk_len: int = 4,
                 n_bins: int = 256, image_size: int = 0, vision_encoder: str | None = None, d_model: int = 64,
                 n_layer: int = 2, n_head: int = 4, state_mean: list[float] | None = None,
                 state_std: list[float] | None = None, action_low: list[float] | None = None,
                 action_high: list[float] | None = None, head: str = "bins", min_sigma: float = 0.05,
                 learn_sigma: bool = True, **kw):
        self.words = list(words or [])  # instruction vocabulary; ids 0 = pad, 1 = unknown word
        self.state_dim, self.action_dim, self.chunk_len, self.n_bins = state_dim, action_dim, chunk_len, n_bins
        self.image_size = image_size  # 0 = no camera input
        self.vision_encoder = vision_encoder  # path of a transformers vision model (None = small CNN)
        self.d_model, self.n_layer, self.n_head = d_model, n_layer, n_head
        self.hidden_size = d_model
        self.state_mean = list(state_mean) if state_mean is not None else [0.0] * state_dim
        self.state_std = list(state_std) if state_std is not None else [1.0] * state_dim
        self.action_low = list(action_low) if action_low is not None else [-1.0] * action_dim
        self.action_high = list(action_high) if action_high is not None else [1.0] * action_dim
        if head not in ("bins", "gaussian"):
            raise ValueError(f"head must be 'bins' or 'gaussian', got {head!r}")
        self.head = head  # "bins": free logit per bin (OpenVLA); "gaussian": discretised Gaussian over the bins
        self.min_sigma = min_sigma  # gaussian head: smallest standard deviation, in normalised action units
        self.learn_sigma = learn_sigma  # gaussian head: False = width fixed at min_sigma (the head reads a mean only)
        super().__init__(**kw)

    @property
    def tokens_per_call(self) -> int:
        return self.chunk_len * self.action_dim


class SmallCNN(nn.Module):
    """64x64 RGB -> 4 tokens (2x2 pooled conv features); uint8 in, normalised inside."""

    def __init__(self, d: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 16, 5, 2, 2), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
                                 nn.Conv2d(32, 32, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
        self.proj = nn.Linear(32, d)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = img.permute(0, 3, 1, 2).float() / 127.5 - 1.0
        return self.proj(self.net(x).flatten(2).transpose(1, 2))


class HFVision(nn.Module):
    """Any transformers vision encoder by path; its last hidden states projected to the backbone width."""

    def __init__(self, path: str, d: int):
        super().__init__()
        self.enc = AutoModel.from_pretrained(path, local_files_only=True)
        width = getattr(self.enc.config, "hidden_size", None) or self.enc.config.hidden_sizes[-1]
        self.proj = nn.Linear(width, d)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = img.permute(0, 3, 1, 2).float() / 127.5 - 1.0
        h = self.enc(pixel_values=x).last_hidden_state
        if h.dim() == 4:  # conv encoders: (B, C, h, w) -> tokens
            h = h.flatten(2).transpose(1, 2)
        return self.proj(h)


class VLAPolicy(PreTrainedModel):
    config_class = VLAConfig
    base_model_prefix = "vla"
    _no_split_modules: list[str] = []

    def __init__(self, config: VLAConfig):
        super().__init__(config)
        d = config.d_model
        self.word_emb = nn.Embedding(len(config.words) + 2, d, padding_idx=PAD)
        self.state_proj = nn.Sequential(nn.Linear(config.state_dim, d), nn.GELU(), nn.Linear(d, d))
        self.image_enc = None
        if config.image_size:
            self.image_enc = HFVision(config.vision_encoder, d) if config.vision_encoder else SmallCNN(d)
        self.queries = nn.Parameter(torch.randn(config.tokens_per_call, d) * 0.02)
        self.backbone = GPT2Model(GPT2Config(n_embd=d, n_layer=config.n_layer, n_head=config.n_head, n_positions=128,
                                             vocab_size=1, bos_token_id=None, eos_token_id=None, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
        gaussian = getattr(config, "head", "bins") == "gaussian"
        self.head = nn.Linear(d, (2 if getattr(config, "learn_sigma", True) else 1) if gaussian else config.n_bins)
        self.register_buffer("bin_values", torch.linspace(-1.0, 1.0, config.n_bins), persistent=False)
        self.register_buffer("state_mean", torch.tensor(config.state_mean, dtype=torch.float32))
        self.register_buffer("state_std", torch.tensor(config.state_std, dtype=torch.float32))
        self.post_init()

    # ------------------------------------------------------------------ language
    def encode_instruction(self, text: str) -> list[int]:
        idx = {w: i + 2 for i, w in enumerate(self.config.words)}
        return [idx.get(w, UNK) for w in text.lower().split()]

    def instruction_batch(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded word ids and mask (the rows' ``prompt_ids`` / ``prompt_mask``)."""
        enc = [self.encode_instruction(t) for t in texts]
        width = max(1, max((len(e) for e in enc), default=1))
        ids = torch.full((len(enc), width), PAD, dtype=torch.long)
        mask = torch.zeros((len(enc), width), dtype=torch.long)
        for i, e in enumerate(enc):
            if e:
                ids[i, width - len(e):] = torch.tensor(e)
                mask[i, width - len(e):] = 1
        return ids, mask

    # ------------------------------------------------------------------ one forward per policy call
    def call_hidden(self, instr: torch.Tensor, instr_mask: torch.Tensor, state: torch.Tensor,
                    image: torch.Tensor | None = None) -> torch.Tensor:
        """(N, tokens_per_call, d): backbone outputs at the action-query positions."""
        n = state.shape[0]
        s = (state.float() - self.state_mean) / self.state_std
        parts = [self.word_emb(instr), self.state_proj(s)[:, None]]
        masks = [instr_mask.long(), instr_mask.new_ones((n, 1))]
        if self.image_enc is not None:
            if image is None:
                raise ValueError("this policy reads camera images (config.image_size > 0) but no image was given")
            it = self.image_enc(image)
            parts.append(it)
            masks.append(instr_mask.new_ones((n, it.shape[1])))
        q = self.queries[None].expand(n, -1, -1)
        parts.append(q)
        masks.append(instr_mask.new_ones((n, q.shape[1])))
        emb, mask = torch.cat(parts, 1), torch.cat(masks, 1)
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        h = self.backbone(inputs_embeds=emb, attention_mask=mask, position_ids=pos, use_cache=False).last_hidden_state
        return h[:, -q.shape[1]:]

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Action-token logits (..., n_bins) from backbone outputs.

        ``head="gaussian"`` reads a mean and a width per token and scores bin value ``c`` by
        ``-(c - mu)^2 / (2 sigma^2)``: still a softmax over the same ``n_bins`` action tokens (sampling,
        log-probs and every recipe unchanged), but neighbouring bins share credit, so an update toward a
        successful action also moves its neighbours (the free per-bin head learns each bin separately).
        """
        out = self.head(h)
        if getattr(self.config, "head", "bins") != "gaussian":
            return out
        mu = torch.tanh(out[..., :1].float()) * 1.05
        if not getattr(self.config, "learn_sigma", True):  # exploration width = min_sigma x sqrt(temperature)
            return -0.5 * ((self.bin_values - mu) / self.config.min_sigma) ** 2
        sigma = nn.functional.softplus(out[..., 1:].float() + 0.5) * 0.5 + self.config.min_sigma
        return -0.5 * ((self.bin_values - mu) / sigma) ** 2

    def call_logits(self, instr, instr_mask, state, image=None) -> torch.Tensor:
        return self.logits(self.call_hidden(instr, instr_mask, state, image))

    @torch.no_grad()
    def act(self, instr: torch.Tensor, instr_mask: torch.Tensor, state: torch.Tensor, image: torch.Tensor | None,
            temperature: float, greedy: bool = False, generator: torch.Generator | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample (or argmax) one chunk per row: tokens (N, tokens_per_call) and their log-probs under
        the temperature-scaled distribution (the learner's ``logp_temperature``)."""
        lsm = torch.log_softmax(self.call_logits(instr, instr_mask, state, image).float() / temperature, -1)
        if greedy:
            tok = lsm.argmax(-1)
        else:
            flat = lsm.exp().reshape(-1, lsm.shape[-1])
            tok = torch.multinomial(flat, 1, generator=generator).view(lsm.shape[:-1])
        return tok, lsm.gather(-1, tok[..., None]).squeeze(-1)

    # ------------------------------------------------------------------ learner seam
    def sequence_logprobs(self, batch, temperature: float, micro_batch: int | None = None, with_entropy: bool = False,
                          return_hidden: bool = False):
        """``(logp, entropy[, hidden])`` (B, Tr) for trajectory rows; see the module docstring.

        Only calls that contain a valid token are forwarded. ``hidden`` is (B, Tp+Tr, d) in the text
        layout (the state *before* response token t sits at column Tp-1+t), zeros elsewhere.
        """
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        dev = self.queries.device
        tpc = self.config.tokens_per_call
        resp = batch.response_ids.to(dev)
        b, tr = resp.shape
        n_calls = math.ceil(tr / tpc) if tr else 0
        pad = n_calls * tpc - tr
        valid = batch.response_valid.to(dev).bool()
        resp_p = nn.functional.pad(resp, (0, pad)).view(b, n_calls, tpc)
        valid_p = nn.functional.pad(valid, (0, pad)).view(b, n_calls, tpc)
        rows, calls = valid_p.any(-1).nonzero(as_tuple=True)
        logp = torch.zeros((b, n_calls, tpc), device=dev)
        ent = torch.zeros((b, n_calls, tpc), device=dev) if with_entropy else None
        hid = torch.zeros((b, n_calls, tpc, self.config.d_model), device=dev) if return_hidden else None
        states = batch.extras["vla_state"].to(dev)
        images = batch.extras.get("vla_image")
        instr, imask = batch.prompt_ids.to(dev), batch.prompt_mask.to(dev)
        step = micro_batch or max(len(rows), 1)
        for s in range(0, len(rows), step):
            r, c = rows[s: s + step], calls[s: s + step]
            img = images[r.cpu(), c.cpu()].to(dev) if images is not None and self.image_enc is not None else None
            h = self.call_hidden(instr[r], imask[r], states[r, c], img)
            lsm = torch.log_softmax(self.logits(h).float() / temperature, -1)
            logp = logp.index_put((r, c), lsm.gather(-1, resp_p[r, c][..., None]).squeeze(-1))
            if with_entropy:
                ent = ent.index_put((r, c), -(lsm.exp() * lsm).sum(-1))
            if return_hidden:
                hid = hid.index_put((r, c), h)
        logp = logp.view(b, -1)[:, :tr].masked_fill(~valid, 0.0)
        if with_entropy:
            ent = ent.view(b, -1)[:, :tr].masked_fill(~valid, 0.0)
        if not return_hidden:
            return logp, ent
        tp = batch.prompt_ids.shape[1]
        hidden = torch.zeros((b, tp + tr, self.config.d_model), device=dev)
        hidden[:, tp - 1: tp - 1 + tr] = hid.view(b, -1, self.config.d_model)[:, :tr]
        return logp, ent, hidden


AutoConfig.register(VLAConfig.model_type, VLAConfig, exist_ok=True)
AutoModel.register(VLAConfig, VLAPolicy, exist_ok=True)
AutoModelForCausalLM.register(VLAConfig, VLAPolicy, exist_ok=True)  # the trainer's resume loads checkpoints this way
