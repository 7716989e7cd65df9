"""Multi-turn tool loop and SSRL information masking: exact ids and masks, token-in/token-out,
sampler/learner log-prob alignment with inserted tool tokens."""

import pytest
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from reasonrl.batch import Rollouts
from reasonrl.models.tokenizer import train_tokenizer
from reasonrl.rollout import HFEngine, SamplingParams, sequence_logprobs
from reasonrl.rollout.engine import Engine
from reasonrl.rollout.multiturn import (Calculator, InformationMaskEngine, MultiTurnEngine, char_ends,
                                        span_token_mask, tag_spans)

CHARS = "abcdefghijklmnopqrstuvwxyz0123456789 +-*=.<>/\n"
SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
EOS = 2


def char_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character, so expected masks can be written per character."""
    vocab = {s: i for i, s in enumerate(SPECIALS + list(CHARS))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>",
                                   unk_token="<unk>")


class Scripted(LlamaForCausalLM):
    """A real (random) Llama whose logits get ``bias`` on ``script[pos + 1]``: with a large bias it
    writes ``script`` exactly, with a small one it mostly follows it but samples genuinely."""

    def setup(self, script: list[int], bias: float, replace: bool):
        self.script, self.bias, self.replace = torch.tensor(script), bias, replace
        return self

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None, logits_to_keep=0, **kw):
        out = super().forward(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                              cache=cache, logits_to_keep=logits_to_keep, **kw)
        t = out.logits.shape[1]
        pos = position_ids[:, -t:]
        nxt = self.script[(pos + 1).clamp(max=len(self.script) - 1)]
        base = torch.zeros_like(out.logits) if self.replace else out.logits
        out.logits = base.scatter_add(-1, nxt[..., None], torch.full_like(nxt[..., None], self.bias, dtype=base.dtype))
        return out


def scripted_model(vocab: int, script: list[int], bias: float = 50.0, replace: bool = True, seed: int = 0,
                   init: float = 0.1):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                      pad_token_id=0, bos_token_id=1, eos_token_id=EOS, initializer_range=init)
    return Scripted(cfg).setup(script, bias, replace).eval()


def ids_of(tok, text):
    return list(tok(text, add_special_tokens=False)["input_ids"])


def test_scripted_policy_exact_ids_and_mask():
    tok = char_tokenizer()
    prompt = "q 2*3\n"
    gen1, ins, gen2 = "<calc>2*3</calc>", "<result>6</result>", "ok.<calc>1/0</calc>"
    ins2, gen3 = "<result>error: ZeroDivisionError</result>", "done"
    # the script is the whole sequence, so the policy only stays on it if the loop inserts exactly the
    # tool output it expects (the error text has capitals, <unk> in this vocabulary: still exact ids)
    full = ids_of(tok, prompt + gen1) + ids_of(tok, ins) + ids_of(tok, gen2) + ids_of(tok, ins2) + ids_of(tok, gen3) + [EOS]
    model = scripted_model(len(tok), full)
    eng = MultiTurnEngine(HFEngine(model, tok), [Calculator()], max_turns=3)
    r = eng.generate([prompt], SamplingParams(n=2, greedy=True, max_new_tokens=200))
    p = len(ids_of(tok, prompt))
    want = full[p:]
    want_mask = ([1.0] * len(gen1) + [0.0] * len(ids_of(tok, ins)) + [1.0] * len(gen2)
                 + [0.0] * len(ids_of(tok, ins2)) + [1.0] * (len(gen3) + 1))
    for i in range(2):
        assert r.response_ids[i].tolist() == want
        assert r.loss_mask[i].tolist() == want_mask
        assert r.response_valid[i].tolist() == [1.0] * len(want)
        assert r.info["tool_calls"][i] == ["calc", "calc"]
        assert r.info["turn_lengths"][i] == [len(gen1), len(gen2), len(gen3) + 1]
        assert len(r.info["tool_latency_s"][i]) == 2 and r.info["finish_reason"][i] == "eos"
        ins_pos = torch.tensor(want_mask) == 0
        assert (r.rollout_logp[i][ins_pos] == 0).all()
        assert r.rollout_logp[i][~ins_pos].abs().max() < 1e-4  # bias 50: every scripted token has p ~ 1
    assert eng.last_metrics["rollout/tool_calls_mean"] == 2.0


def test_turn_limit_and_budget():
    tok = char_tokenizer()
    prompt = "q\n"
    call = "<calc>1+1</calc>"
    full = ids_of(tok, prompt) + (ids_of(tok, call) + ids_of(tok, "<result>2</result>")) * 2 + ids_of(tok, call + "x") + [EOS]
    model = scripted_model(len(tok), full)
    eng = MultiTurnEngine(HFEngine(model, tok), [Calculator()], max_turns=2)
    r = eng.generate([prompt], SamplingParams(greedy=True, max_new_tokens=200))
    # third call is past the limit: no tool runs, generation continues to EOS
    assert r.info["tool_calls"][0] == ["calc", "calc"]
    assert r.response_text[0].endswith(call + "x")
    assert r.info["finish_reason"][0] == "eos" and not r.truncated[0]
    # a budget that ends inside the first tool output: output cut, row truncated
    r2 = eng.generate([prompt], SamplingParams(greedy=True, max_new_tokens=len(call) + 3))
    assert r2.response_ids.shape[1] == len(call) + 3
    assert r2.loss_mask[0].tolist() == [1.0] * len(call) + [0.0] * 3
    assert r2.truncated[0] and r2.info["finish_reason"][0] == "length"


def test_token_in_token_out_never_retokenises():
    """The policy spells words character by character that BPE would merge; the batch keeps its ids."""
    text = "<calc>2*3</calc><result>6</result> the answer the answer\n"
    tok = train_tokenizer([text] * 50, 100)
    prompt = "the\n"
    gen1 = [i for c in "<calc>2*3</calc>" for i in ids_of(tok, c)]
    ins = ids_of(tok, "<result>6</result>")
    gen2 = [i for c in "the" for i in ids_of(tok, c)] + [tok.eos_token_id]
    full = ids_of(tok, prompt) + gen1 + ins + gen2
    model = scripted_model(len(tok), full)
    eng = MultiTurnEngine(HFEngine(model, tok, add_special_tokens=False), [Calculator()])
    r = eng.generate([prompt], SamplingParams(greedy=True, max_new_tokens=100))
    got = r.response_ids[0].tolist()
    assert got == gen1 + ins + gen2
    assert r.response_text[0] == "<calc>2*3</calc><result>6</result>the"
    assert ids_of(tok, r.response_text[0]) + [tok.eos_token_id] != got  # a re-encoding would differ


def test_rollout_logp_matches_learner_with_tool_tokens():
    tok = char_tokenizer()
    prompts = ["q\n", "what is 3*4\n"]
    call = ids_of(tok, "<calc>3*4</calc>") + ids_of(tok, "<result>12</result>") + ids_of(tok, "ab") + [EOS]
    # position-indexed script (aligned to the longer prompt's length); bias 7: mostly on script, still sampled
    full = [5] * len(ids_of(tok, prompts[1])) + call
    model = scripted_model(len(tok), full, bias=7.0, replace=False, seed=3)
    eng = MultiTurnEngine(HFEngine(model, tok, micro_batch=5), [Calculator()], max_turns=2)
    calls = 0
    for seed in range(3):
        params = SamplingParams(n=6, temperature=0.8, max_new_tokens=48, seed=seed)
        r = eng.generate(prompts, params)
        calls += sum(len(c) for c in r.info["tool_calls"])
        with torch.no_grad():
            lp, _ = sequence_logprobs(model, r, params.logp_temperature)
        m = r.loss_mask.bool()
        torch.testing.assert_close(lp[m], r.rollout_logp[m], atol=1e-5, rtol=0)
        inserted = r.response_valid.bool() & ~m
        assert (r.rollout_logp[inserted] == 0).all()
    assert calls >= 5  # the comparison really covered tokens generated after inserted tool output


def test_same_seed_same_rollouts():
    tok = char_tokenizer()
    full = ids_of(tok, "q\n<calc>1+2</calc><result>3</result>ab") + [EOS]
    model = scripted_model(len(tok), full, bias=3.0, replace=False)
    eng = MultiTurnEngine(HFEngine(model, tok), [Calculator()])
    p = SamplingParams(n=4, max_new_tokens=40, seed=7)
    a, b = eng.generate(["q\n"], p), eng.generate(["q\n"], p)
    assert torch.equal(a.response_ids, b.response_ids) and torch.equal(a.loss_mask, b.loss_mask)


def test_calculator():
    c = Calculator()
    assert c.call("3*(4+5)") == "27"
    assert c.call(" 7/2 ") == "3.5"
    assert c.call("-2**3") == "-8"
    assert c.call("1/0") == "error: ZeroDivisionError"
    assert c.call("__import__('os')").startswith("error")
    assert c.call("9**9**9").startswith("error")
    assert c.call("") .startswith("error")


# --------------------------------------------------------------------------- information masking
def test_span_token_mask_straddling_and_empty():
    # tokens cover [0,3) [3,6) [6,9); span [4,7) touches tokens 1 and 2
    assert span_token_mask([3, 6, 9], [(4, 7)]) == [1.0, 0.0, 0.0]
    assert span_token_mask([3, 6, 9], []) == [1.0, 1.0, 1.0]
    assert span_token_mask([], [(0, 5)]) == []
    # a zero-width token (e.g. a skipped special token) inside a span is masked, at its edge it is not
    assert span_token_mask([2, 2, 5], [(1, 4)]) == [0.0, 0.0, 0.0]
    assert span_token_mask([2, 2, 5], [(2, 4)]) == [1.0, 1.0, 0.0]


def test_tag_spans_dotall_and_unclosed():
    t = "<think>a</think><information>x\ny\n</information>z<information>q"
    assert tag_spans(t) == [(16, 47)]
    assert tag_spans("<information>never closed") == []
    assert tag_spans("<information>a</information><information>b</information>") == [(0, 28), (28, 56)]


class _FixedEngine(Engine):
    """Returns a fixed batch (response ids given), standing in for a policy's single-pass output."""

    def __init__(self, tok, responses, inserted=None):
        self._tok, self.responses, self.inserted = tok, responses, inserted or [[] for _ in responses]

    @property
    def tokenizer(self):
        return self._tok

    def load_weights(self, weights):
        pass

    def generate(self, prompts, params, task_index=None):
        ids = [ids_of(self._tok, r) for r in self.responses]
        t = max(map(len, ids))
        b = len(ids)
        resp = torch.zeros((b, t), dtype=torch.long)
        mask = torch.zeros((b, t))
        for i, x in enumerate(ids):
            resp[i, : len(x)] = torch.tensor(x)
            mask[i, : len(x)] = 1.0
            for j in self.inserted[i]:
                mask[i, j] = 0.0
        valid = (torch.arange(t)[None] < torch.tensor([len(x) for x in ids])[:, None]).float()
        return Rollouts(prompt_ids=torch.ones((b, 1), dtype=torch.long), prompt_mask=torch.ones((b, 1), dtype=torch.long),
                        response_ids=resp, loss_mask=mask, rollout_logp=torch.zeros((b, t)),
                        group_ids=torch.arange(b), task_index=list(range(b)), response_text=list(self.responses),
                        truncated=torch.zeros(b, dtype=torch.bool), valid_mask=valid)


def test_information_mask_engine_multiline_unclosed_and_inserted():
    tok = char_tokenizer()
    texts = [
        "<think>a</think><search>q</search><information>line one\nline two\n</information><answer>b</answer>",
        "<think>a</think><information>x</information><think>b</think><information>y\nz</information><answer>c</answer>",
        "<think>a</think><information>never closed",
        "plain text",
    ]
    inserted = [[0, 1], [], [], []]  # pretend row 0's first two tokens came from a tool: they stay masked
    eng = InformationMaskEngine(_FixedEngine(tok, texts, inserted))
    r = eng.generate(["p"] * 4, SamplingParams())
    for i, t in enumerate(texts):
        want = [1.0] * len(t)
        for s0, s1 in tag_spans(t):
            for k in range(s0, s1):
                want[k] = 0.0
        for k in inserted[i]:
            want[k] = 0.0
        assert r.loss_mask[i, : len(t)].tolist() == want
        assert r.response_valid[i, : len(t)].tolist() == [1.0] * len(t)  # still in the sequence
    # hand-checked: row 0's block is 13 + 8 + 1 + 8 + 1 + 14 = 45 characters (tags and two newlines included)
    assert r.loss_mask[0].sum() == len(texts[0]) - 45 - 2
    assert r.loss_mask[2, : len(texts[2])].sum() == len(texts[2])  # unclosed: nothing masked
    assert eng.last_metrics["rollout/info_masked_frac"] > 0


def test_char_ends_bpe():
    tok = train_tokenizer(["the answer is <information>the\nthing</information>"] * 20, 90)
    ids = ids_of(tok, "the answer <information>the\nthing</information>")
    ends = char_ends(tok, ids)
    assert ends[-1] == len(tok.decode(ids)) and ends == sorted(ends)
    assert any(b - a > 1 for a, b in zip([0] + ends, ends))  # merged tokens are really there


@pytest.mark.parametrize("bad", [[], "nope"])
def test_multiturn_rejects_bad_tools(bad):
    tok = char_tokenizer()
    with pytest.raises((ValueError, TypeError, AttributeError)):
        MultiTurnEngine(HFEngine(scripted_model(len(tok), [0, 1]), tok), bad)
