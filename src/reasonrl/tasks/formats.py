"""Other frameworks' dataset rows, read as they are: veRL's RL parquet and TRL's prompt formats.

Users bring datasets already prepared for veRL or TRL; converting them with a script is where
fields get lost. ``to_reasonrl_row`` recognises a row's format and rewrites it into our row shape
(``prompt``, ``answer``, optional ``solution``/``verifier``/``id`` plus meta), which
``reasonrl.tasks.files.row_to_task`` then validates as usual. ``write_verl_parquet`` goes the other
way, so the built-in suites can feed a veRL run.

Formats (field names as the frameworks write them; checked against veRL 0.9.1's
``examples/data_preprocess/gsm8k.py`` and TRL's dataset-format documentation):

- **veRL**: ``prompt`` is a list of chat messages ``{"role", "content"}``; the gold answer is
  ``reward_model.ground_truth``; ``data_source`` picks veRL's reward function, and we map it to a
  verifier (``VERL_SOURCES``; unknown sources grade as ``math``); ``extra_info`` is kept in meta
  (its ``split`` is not used to filter: as in veRL, the file is the split).
- **TRL conversational**: ``prompt`` is a list of messages, optional ``completion`` a list with the
  assistant's message (a demonstration).
- **TRL standard**: ``prompt`` a string, optional ``completion`` a string.
- For TRL rows the gold answer comes from ``answer``, ``ground_truth`` or, failing both, the
  ``\\boxed{}`` of ``solution`` (TRL's GRPO examples pass such columns to reward functions).

A chat-list prompt keeps its messages in ``meta["messages"]``: the ``chat`` template renders them
with the tokenizer's chat template exactly as given (system turns included); ``plain``/``boxed``
use the text of the last user message.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from reasonrl.rewards.extract import extract_boxed
from reasonrl.tasks.base import Task

# veRL data_source -> our verifier (veRL 0.9.1 default_compute_score dispatch, by family)
VERL_SOURCES = {
    "openai/gsm8k": "math",
    "lighteval/MATH": "math",
    "DigitalLearningGmbH/MATH-lighteval": "math",
    "HuggingFaceH4/MATH-500": "math",
    "math_dapo": "math",
    "math": "math",
    "searchR1_nq": "qa",
    "searchR1_triviaqa": "qa",
    "searchR1_popqa": "qa",
    "searchR1_hotpotqa": "qa",
    "searchR1_2wikimultihopqa": "qa",
    "searchR1_musique": "qa",
    "searchR1_bamboogle": "qa",
}
ROLES = ("system", "user", "assistant", "tool")


class FormatError(ValueError):
    """A row in a recognised foreign format with a bad field; the message names the field."""


def _messages(value: Any, field: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise FormatError(f"field {field!r} must be a non-empty list of chat messages {{'role', 'content'}}")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or m.get("role") not in ROLES:
            raise FormatError(f"field {field}[{i}] must be a message {{'role': one of {ROLES}, 'content': "
                              f"string}}, got {m!r:.80}")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def _last_user(msgs: list[dict[str, str]], field: str) -> str:
    users = [m["content"] for m in msgs if m["role"] == "user"]
    if not users:
        raise FormatError(f"field {field!r} has no 'user' message; a prompt needs one")
    return users[-1]


def detect(row: dict) -> str | None:
    """``"verl"``, ``"trl"`` or ``None`` (our own shape)."""
    if "reward_model" in row or "data_source" in row:
        return "verl"
    if isinstance(row.get("prompt"), list) or "completion" in row:
        return "trl"
    code = row.get("verifier") == "code" or any(k in row for k in ("tests", "test_list", "input_output", "test"))
    if row.get("answer") is None and not code and ("ground_truth" in row or "solution" in row):
        return "trl"  # standard prompt + a reward column, as TRL's GRPO examples pass them
    return None


def _verl(row: dict) -> dict:
    msgs = _messages(row.get("prompt"), "prompt")
    rm = row.get("reward_model")
    if not isinstance(rm, dict) or rm.get("ground_truth") is None:
        raise FormatError("veRL row needs 'reward_model.ground_truth' (the gold answer); "
                          f"got reward_model={rm!r:.80}")
    gt = rm["ground_truth"]
    if isinstance(gt, list):  # some veRL QA sources list every acceptable answer
        if not gt or not all(isinstance(g, str) for g in gt):
            raise FormatError("'reward_model.ground_truth' as a list must hold strings")
        answer, aliases = gt[0], list(gt[1:])
    else:
        answer, aliases = gt, None
    source = row.get("data_source")
    if source is not None and not isinstance(source, str):
        raise FormatError(f"field 'data_source' must be a string, got {type(source).__name__}")
    extra = row.get("extra_info") if isinstance(row.get("extra_info"), dict) else {}
    try:
        ours = json.loads(extra.get("reasonrl_meta") or "{}")  # written by write_verl_parquet
    except json.JSONDecodeError as e:
        raise FormatError(f"field 'extra_info.reasonrl_meta' is not valid JSON ({e.msg})") from None
    out: dict[str, Any] = {
        **(ours if isinstance(ours, dict) else {}),
        "prompt": _last_user(msgs, "prompt"), "answer": answer,
        "verifier": row.get("verifier") or VERL_SOURCES.get(source or "", "math"),
        "messages": msgs, "data_source": source, "extra_info": extra,
    }
    if aliases:
        out["aliases"] = aliases  # the qa verifiers accept any of them
    if isinstance(extra.get("solution"), str):
        out["solution"] = extra["solution"]
    uid = row.get("id", row.get("uid", extra.get("uid", extra.get("index"))))
    if uid is not None:
        out["id"] = uid
    for k in ("ability",):
        if k in row:
            out[k] = row[k]
    return out


def _trl(row: dict) -> dict:
    prompt = row.get("prompt")
    out = {k: v for k, v in row.items() if k not in ("prompt", "completion")}
    if isinstance(prompt, list):
        msgs = _messages(prompt, "prompt")
        out.update(prompt=_last_user(msgs, "prompt"), messages=msgs)
    else:
        out["prompt"] = prompt
    comp = row.get("completion")
    if isinstance(comp, list):
        cm = _messages(comp, "completion")
        if cm[-1]["role"] != "assistant":
            raise FormatError("field 'completion' must end with an 'assistant' message")
        comp = cm[-1]["content"]
    if comp is not None and not isinstance(comp, str):
        raise FormatError(f"field 'completion' must be a string or a list of messages, got {type(comp).__name__}")
    if out.get("answer") is None:
        if row.get("ground_truth") is not None:
            out["answer"] = out.pop("ground_truth")
        else:
            for text in (row.get("solution"), comp):
                boxed = extract_boxed(text) if isinstance(text, str) else None
                if boxed:
                    out["answer"] = boxed
                    break
    if comp is not None and not isinstance(out.get("solution"), str):
        out["solution"] = comp
    if out.get("answer") is None:
        raise FormatError("TRL-style row has no gold answer: add an 'answer' or 'ground_truth' column, or a "
                          "'solution'/'completion' whose final answer is in \\boxed{}")
    return out


def to_reasonrl_row(row: dict) -> dict:
    """``row`` rewritten into our row shape when it is a veRL or TRL row; our own rows pass through."""
    kind = detect(row)
    if kind == "verl":
        return _verl(row)
    if kind == "trl":
        return _trl(row)
    return row


def to_verl_row(task: Task, index: int, instruction: str) -> dict:
    """One Task as a veRL RL row (``instruction`` is appended to the question, as veRL's examples do)."""
    rule = task.meta.get("instruction")
    question = f"{task.prompt} {rule}" if rule else task.prompt
    family = task.meta.get("family", "file")
    # what our verifiers need (Countdown's numbers/target, family, difficulty) as one JSON string:
    # struct columns would have to agree across families
    meta = {k: v for k, v in task.meta.items() if isinstance(v, (str, int, float, bool, list)) and k != "row"}
    extra = {"index": index, "uid": task.uid, "reasonrl_meta": json.dumps(meta)}
    if task.solution:
        extra["solution"] = task.solution
    if "split" in task.meta:
        extra["split"] = task.meta["split"]
    return {"data_source": f"reasonrl/{family}",
            "prompt": [{"role": "user", "content": question + instruction}],
            "ability": "math" if task.verifier == "math" else task.verifier,
            "reward_model": {"style": "rule", "ground_truth": task.answer},
            "verifier": task.verifier,
            "extra_info": extra}


def write_verl_parquet(tasks: list[Task], path: str | Path, instruction: str | None = None) -> Path:
    """Write ``tasks`` as a veRL RL parquet file (code tasks are refused: their tests are not a
    ``ground_truth`` string veRL's rule rewards understand)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from reasonrl.tasks.templates import BOXED_SUFFIX

    bad = [t.uid for t in tasks if t.verifier == "code"]
    if bad:
        raise FormatError(f"code tasks cannot be written in veRL's RL format (first: {bad[0]}); "
                          f"export answer-graded families only")
    rows = [to_verl_row(t, i, BOXED_SUFFIX if instruction is None else instruction) for i, t in enumerate(tasks)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(pa.Table.from_pylist(rows), tmp)
    tmp.replace(path)
    return path
