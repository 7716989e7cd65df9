"""The vLLM adapter's conversion code on CPU, against objects shaped like vLLM's (vllm is not
installable here). The fake LLM samples with our HFEngine and reports in vLLM's output format, so a
round trip through the adapter must reproduce HFEngine's batch exactly."""

from dataclasses import dataclass, field

import pytest
import torch
from rollout_tiny import EOS, build_model

from reasonrl.config import ConfigError, load_config
from reasonrl.rollout import HFEngine, SamplingParams
from reasonrl.rollout import vllm_engine as ve

PROMPTS = ["ab", "1+2=", "compute 7*8.", "q"]


@dataclass
class Logprob:  # vllm.sequence.Logprob
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:  # vllm.outputs.CompletionOutput
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, Logprob]] | None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:  # vllm.outputs.RequestOutput
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool = True


@dataclass
class FakeSamplingParams:  # the vllm.SamplingParams fields the adapter sets; unknown names raise TypeError
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_tokens: int | None = 16
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    include_stop_str_in_output: bool = False
    seed: int | None = None
    logprobs: int | None = None


class FakeLLM:
    """Generates with HFEngine, answers like ``vllm.LLM.generate`` (completions shuffled by index)."""

    def __init__(self, model, tok):
        self.engine = HFEngine(model, tok)
        self.tok = tok
        self.model = _FakeVLLMModel()
        self.prefix_resets = 0
        self.llm_engine = type("E", (), {})()
        self.llm_engine.model_executor = type("X", (), {})()
        self.llm_engine.model_executor.driver_worker = type("W", (), {})()
        self.llm_engine.model_executor.driver_worker.model_runner = type("R", (), {"model": self.model})()

    def reset_prefix_cache(self):
        self.prefix_resets += 1

    def generate(self, prompts, sp, use_tqdm=True):
        assert sp.logprobs == 0 and sp.include_stop_str_in_output
        greedy = sp.temperature == 0
        ours = SamplingParams(n=sp.n, greedy=greedy, temperature=1.0 if greedy else sp.temperature, top_p=sp.top_p,
                              top_k=max(sp.top_k, 0), max_new_tokens=sp.max_tokens, stop=sp.stop, seed=sp.seed)
        texts = [self.tok.decode(p["prompt_token_ids"], skip_special_tokens=True) for p in prompts]
        r = self.engine.generate(texts, ours)
        outs = []
        for i, p in enumerate(prompts):
            comps = []
            for j in range(sp.n):
                row = i * sp.n + j
                n = int(r.loss_mask[row].sum())
                ids = r.response_ids[row, :n].tolist()
                lps = [{t: Logprob(float(r.rollout_logp[row, k]), rank=1)} for k, t in enumerate(ids)]
                fr = r.info["finish_reason"][row]
                stop_reason = None
                if fr == "stop":
                    stop_reason = next(s for s in sp.stop if s in r.response_text[row])
                elif fr == "eos" and ids[-1] != EOS:
                    stop_reason = ids[-1]
                comps.append(CompletionOutput(j, r.response_text[row], ids, None, lps,
                                              "length" if fr == "length" else "stop", stop_reason))
            outs.append(RequestOutput(str(i), None, list(p["prompt_token_ids"]), comps[::-1]))
        return outs


class _FakeVLLMModel:
    """Parameters under vLLM's fused names; ``load_weights`` takes HF names and stacks them (as vLLM's
    Llama does), failing on any name it does not know."""

    STACKED = {"q_proj": ("qkv_proj", 0), "k_proj": ("qkv_proj", 1), "v_proj": ("qkv_proj", 2),
               "gate_proj": ("gate_up_proj", 0), "up_proj": ("gate_up_proj", 1)}

    def __init__(self):
        self.received: list[str] = []
        self.parts: dict[str, dict[int, torch.Tensor]] = {}
        self.plain: dict[str, torch.Tensor] = {}

    def load_weights(self, items):
        for name, t in items:
            self.received.append(name)
            for hf, (fused, shard) in self.STACKED.items():
                if f".{hf}." in name:
                    self.parts.setdefault(name.replace(hf, fused), {})[shard] = t.clone()
                    break
            else:
                if "rotary_emb" in name or name.startswith(("module.", "_orig_mod.")):
                    raise KeyError(name)
                self.plain[name] = t.clone()

    def fused(self, name):
        p = self.parts[name]
        return torch.cat([p[k] for k in sorted(p)])


def _engine(model, tok, **kw):
    return ve.VLLMEngine(FakeLLM(model, tok), tok, sampling_cls=FakeSamplingParams, **kw)


def test_sampling_kwargs_mapping():
    kw = ve.sampling_kwargs(SamplingParams(n=4, temperature=0.7, top_p=0.9, top_k=0, max_new_tokens=33,
                                           stop=["\n\n"], seed=5), stop_token_ids=[2, 7])
    assert kw == {"n": 4, "temperature": 0.7, "top_p": 0.9, "top_k": -1, "max_tokens": 33, "stop": ["\n\n"],
                  "stop_token_ids": [2, 7], "include_stop_str_in_output": True, "seed": 5, "logprobs": 0}
    g = ve.sampling_kwargs(SamplingParams(greedy=True, temperature=0.3, top_k=5))
    assert g["temperature"] == 0.0 and g["top_k"] == -1 and g["top_p"] == 1.0
    assert ve.sampling_kwargs(SamplingParams(top_k=5))["top_k"] == 5
    FakeSamplingParams(**kw)  # every name is a real field


@pytest.mark.parametrize("params_kw", [{"greedy": True}, {"temperature": 0.8, "seed": 3},
                                       {"top_k": 6, "seed": 1}])
def test_round_trip_equals_hf_engine(eos_model, tok, params_kw):
    p = SamplingParams(n=3, max_new_tokens=10, **params_kw)
    a = _engine(eos_model, tok).generate(PROMPTS, p, task_index=[5, 6, 7, 8])
    b = HFEngine(eos_model, tok).generate(PROMPTS, p, task_index=[5, 6, 7, 8])
    for f in ("prompt_ids", "prompt_mask", "response_ids", "loss_mask", "rollout_logp", "group_ids", "truncated"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f
    assert a.response_text == b.response_text and a.task_index == b.task_index
    assert a.info["finish_reason"] == b.info["finish_reason"] and a.info["prompt"] == b.info["prompt"]


def test_stop_strings_and_stop_ids_map_to_finish_reasons(model, tok):
    base = HFEngine(model, tok, eos_token_ids=[]).generate(PROMPTS, SamplingParams(greedy=True, max_new_tokens=20))
    stop = base.response_text[0][4:6]
    p = SamplingParams(greedy=True, max_new_tokens=20, stop=[stop])
    fake = FakeLLM(model, tok)
    fake.engine = HFEngine(model, tok, eos_token_ids=[])
    a = ve.VLLMEngine(fake, tok, eos_token_ids=[], sampling_cls=FakeSamplingParams).generate(PROMPTS, p)
    b = HFEngine(model, tok, eos_token_ids=[]).generate(PROMPTS, p)
    assert a.info["finish_reason"] == b.info["finish_reason"] and "stop" in a.info["finish_reason"]
    assert a.response_text == b.response_text
    # a stop *token* id (vLLM: finish_reason "stop", stop_reason = the id) is our "eos"
    sid = int(base.response_ids[1, 2])
    fake.engine = HFEngine(model, tok, eos_token_ids=[], stop_token_ids=[sid])
    c = ve.VLLMEngine(fake, tok, eos_token_ids=[], stop_token_ids=[sid], sampling_cls=FakeSamplingParams)
    r = c.generate(PROMPTS[1:2], SamplingParams(greedy=True, max_new_tokens=20))
    assert r.info["finish_reason"] == ["eos"] and r.response_ids[0, int(r.loss_mask[0].sum()) - 1] == sid


def test_conversion_rejects_malformed_outputs(tok):
    comp = CompletionOutput(0, "", [5, 6], None, None, "length")
    out = RequestOutput("0", None, [1, 5], [comp])
    kw = dict(pad_token_id=0, stop_token_ids=[EOS])
    with pytest.raises(ValueError, match="logprobs=0"):
        ve.rollouts_from_outputs([out], ["ab"], tok, SamplingParams(), **kw)
    comp.logprobs = [{5: Logprob(-1.0)}]
    with pytest.raises(ValueError, match="log-prob entries"):
        ve.rollouts_from_outputs([out], ["ab"], tok, SamplingParams(), **kw)
    comp.logprobs = [{5: Logprob(-1.0)}, {6: -0.5}]  # plain floats are accepted too
    r = ve.rollouts_from_outputs([out], ["ab"], tok, SamplingParams(), **kw)
    assert r.rollout_logp.tolist() == [[-1.0, -0.5]] and r.truncated.tolist() == [True]
    with pytest.raises(ValueError, match="n=2"):
        ve.rollouts_from_outputs([out], ["ab"], tok, SamplingParams(n=2), **kw)
    comp.finish_reason = "abort"
    with pytest.raises(ValueError, match="abort"):
        ve.rollouts_from_outputs([out], ["ab"], tok, SamplingParams(), **kw)
    with pytest.raises(ValueError, match="2 prompts"):
        ve.rollouts_from_outputs([out], ["ab", "cd"], tok, SamplingParams(), **kw)


def test_weight_items_names():
    sd = {"module._orig_mod.model.layers.0.self_attn.q_proj.weight": torch.ones(2),
          "model.layers.0._fsdp_wrapped_module.mlp.up_proj.weight": torch.ones(2),
          "model.rotary_emb.inv_freq": torch.ones(2), "lm_head.weight": torch.ones(2, dtype=torch.float64)}
    names = [n for n, _ in ve.weight_items(sd, tie_word_embeddings=True)]
    assert names == ["model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.up_proj.weight"]
    items = ve.weight_items(sd, tie_word_embeddings=False, dtype=torch.bfloat16)
    assert items[-1][0] == "lm_head.weight" and all(t.dtype == torch.bfloat16 for _, t in items)


def test_weight_sync_reaches_fused_vllm_params_and_follows_the_policy(tok):
    policy = build_model(seed=3)
    eng = _engine(policy, tok, policy=policy)
    fake = eng.llm.model
    eng.generate(PROMPTS[:1], SamplingParams(max_new_tokens=2, seed=0))
    assert fake.received == []  # nothing changed since construction: no push
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.01)  # an optimizer step (in place)
    eng.generate(PROMPTS[:1], SamplingParams(max_new_tokens=2, seed=0))
    assert eng.weight_version == 1 and eng.llm.prefix_resets == 1
    a = policy.model.layers[1].self_attn
    torch.testing.assert_close(fake.fused("model.layers.1.self_attn.qkv_proj.weight"),
                               torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]))
    m = policy.model.layers[0].mlp
    torch.testing.assert_close(fake.fused("model.layers.0.mlp.gate_up_proj.weight"),
                               torch.cat([m.gate_proj.weight, m.up_proj.weight]))
    hf_names = {n for n, _ in policy.named_parameters()}
    assert set(fake.received) == hf_names  # untied model: every parameter, lm_head included
    eng.generate(PROMPTS[:1], SamplingParams(max_new_tokens=2, seed=0))
    assert eng.weight_version == 1  # unchanged weights are not pushed again


def test_engine_vllm_fails_at_config_load_without_vllm(monkeypatch):
    monkeypatch.setattr(ve, "vllm_available", lambda: False)
    with pytest.raises(ConfigError, match="vllm"):
        load_config(None, ["rollout.engine=vllm"])
    with pytest.raises(ve.VLLMUnavailableError, match="rollout.engine=native"):
        ve.VLLMEngine(object(), None)


def test_decode_graph_needs_native_engine():
    with pytest.raises(ConfigError, match="rollout.engine=native"):
        load_config(None, ["rollout.decode_graph=cuda_graph"])
    cfg = load_config(None, ["rollout.engine=native", "rollout.decode_graph=cuda_graph"])
    assert cfg.rollout.engine == "native"
