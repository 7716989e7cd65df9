"""Load user tasks from ``.jsonl``, ``.parquet`` or a Hugging Face ``datasets`` ``save_to_disk`` folder.

Rows in veRL's RL format or TRL's prompt formats are read as they are (``reasonrl.tasks.formats``).

Every row needs ``prompt`` (string) and ``answer`` (string or number); ``solution`` (string) and
``verifier`` (string, default ``"math"``) are optional, an ``id``/``uid`` column names the task, and
every other column lands in ``Task.meta`` (e.g. Countdown's ``numbers`` and ``target``). Code tasks
(``verifier: code``, or rows with ``tests``/``test_list``/``input_output`` and no ``answer``) take
their test cases instead of an answer (formats: ``reasonrl.tasks.code.FORMATS_HINT``). Bad rows
fail loudly at load time with the file, row and field, because a silently skipped row or a
stringified ``None`` answer would only surface as a mysteriously flat reward curve.
"""

from __future__ import annotations

import json
import math
import numbers
from pathlib import Path
from typing import Any, Iterable, Iterator

from reasonrl.tasks.base import Task
from reasonrl.tasks.formats import FormatError, detect, to_reasonrl_row

FORMATS = (".jsonl", ".parquet", "a datasets save_to_disk directory")
_FIELDS_HINT = "every row needs 'prompt' (string) and 'answer' (string or number)"


class TaskDataError(ValueError):
    """A user data file that cannot become tasks; the message names file, row and field."""


def _where(path: Path, row: int, part: str | None) -> str:
    return f"{path}: {'split ' + repr(part) + ', ' if part else ''}row {row}"


def _answer_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    if isinstance(value, numbers.Integral):
        return str(int(value))
    value = float(value)
    if not math.isfinite(value):
        return None
    # 3.0 from a float column (parquet turns int columns with gaps into floats) means the integer 3.
    return str(int(value)) if value.is_integer() else repr(value)


def row_to_task(row: Any, path: Path, row_no: int, part: str | None = None) -> Task:
    """Validate one row (a dict) and build its Task; ``row_no`` is 1-based."""
    where = _where(path, row_no, part)
    if not isinstance(row, dict):
        raise TaskDataError(f"{where}: expected an object with fields, got {type(row).__name__}; {_FIELDS_HINT}")
    try:
        row = to_reasonrl_row(row)  # veRL / TRL rows, read as they are (tasks/formats.py)
    except FormatError as e:
        raise TaskDataError(f"{where} ({detect(row)} format): {e}") from None
    if _is_code_row(row):
        return _code_row_to_task(row, path, row_no, part, where)
    for name in ("prompt", "answer"):
        if row.get(name) is None:
            raise TaskDataError(f"{where}: missing required field {name!r}; {_FIELDS_HINT}. "
                                f"Add it or remove the row.")
    prompt = row["prompt"]
    if not isinstance(prompt, str) or not prompt.strip():
        raise TaskDataError(f"{where}: field 'prompt' must be a non-empty string, got "
                            f"{type(prompt).__name__} {prompt!r:.60}")
    answer = _answer_text(row["answer"])
    if answer is None:
        raise TaskDataError(f"{where}: field 'answer' must be a string or a finite number, got "
                            f"{type(row['answer']).__name__} {row['answer']!r:.60}; write it as a string")
    solution = row.get("solution")
    if solution is not None and not isinstance(solution, str):
        raise TaskDataError(f"{where}: field 'solution' must be a string when present, got "
                            f"{type(solution).__name__}; drop it or write the worked solution as text")
    verifier = row.get("verifier")
    if verifier is None:
        verifier = "math"
    elif not isinstance(verifier, str) or not verifier:
        raise TaskDataError(f"{where}: field 'verifier' must be a non-empty string such as 'math', "
                            f"got {type(verifier).__name__} {verifier!r:.60}")
    uid = row.get("uid", row.get("id"))
    if uid is None:
        uid = f"{path.stem}-{row_no}" if part is None else f"{path.stem}-{part}-{row_no}"
    elif not isinstance(uid, (str, int)) or isinstance(uid, bool):
        raise TaskDataError(f"{where}: field 'uid'/'id' must be a string or int, got {type(uid).__name__}")
    meta = {k: v for k, v in row.items() if k not in ("prompt", "answer", "solution", "verifier", "uid", "id")}
    if part is not None:
        meta.setdefault("split", part)
    meta.setdefault("source", str(path))
    meta.setdefault("row", row_no)
    return Task(uid=str(uid), prompt=prompt, answer=answer, solution=solution, verifier=verifier, meta=meta)


def _is_code_row(row: dict) -> bool:
    return row.get("verifier") == "code" or ("answer" not in row and any(
        k in row for k in ("tests", "test_list", "input_output", "entry_point")))


def _code_row_to_task(row: dict, path: Path, row_no: int, part: str | None, where: str) -> Task:
    """A code task row (formats in reasonrl.tasks.code.FORMATS_HINT); tests are validated and the
    expected values encoded now, so a bad row fails the load instead of a reward call."""
    from reasonrl.tasks.code import CodeRowError, code_spec_from_row

    prompt = row.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise TaskDataError(f"{where}: code task needs a non-empty string 'prompt'")
    try:
        spec = code_spec_from_row(row)
    except CodeRowError as e:
        raise TaskDataError(f"{where}: {e}") from None
    solution = row.get("solution")
    if solution is not None and not isinstance(solution, str):
        raise TaskDataError(f"{where}: field 'solution' must be a string when present")
    uid = row.get("uid", row.get("id"))
    uid = f"{path.stem}-{row_no}" if uid is None else str(uid)
    drop = ("prompt", "answer", "solution", "verifier", "uid", "id", "tests", "test_list", "input_output")
    meta = {k: v for k, v in row.items() if k not in drop}
    meta["code"] = spec
    if part is not None:
        meta.setdefault("split", part)
    meta.setdefault("source", str(path))
    meta.setdefault("row", row_no)
    answer = row.get("answer") if isinstance(row.get("answer"), str) else (solution or "")
    return Task(uid=uid, prompt=prompt, answer=answer, solution=solution, verifier="code", meta=meta)


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    with path.open("rb") as fh:
        for line_no, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise TaskDataError(f"{_where(path, line_no, None)}: not valid UTF-8 (byte {raw[e.start]:#04x} at "
                                    f"column {e.start + 1}); save the file as UTF-8 (e.g. "
                                    f"`iconv -f latin1 -t utf-8`) or fix or remove that row") from None
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as e:
                raise TaskDataError(f"{_where(path, line_no, None)}: invalid JSON ({e.msg} at column {e.colno}); "
                                    f"each line must be one JSON object like "
                                    f'{{"prompt": "...", "answer": "..."}}') from None


def _parquet_rows(path: Path) -> Iterator[tuple[int, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ImportError(f"reading {path} needs pyarrow: pip install reasonrl[data]") from e
    return enumerate(pq.read_table(path).to_pylist(), 1)


def _hf_parts(path: Path) -> Iterator[tuple[str | None, Iterable[tuple[int, Any]]]]:
    try:
        import datasets
    except ImportError as e:
        raise ImportError(f"reading the datasets folder {path} needs the datasets package: "
                          f"pip install reasonrl[data]") from e
    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        for name, part in ds.items():
            yield name, enumerate(part.to_list(), 1)
    else:
        yield None, enumerate(ds.to_list(), 1)


def load_file(path: str | Path) -> list[Task]:
    """All rows of a user data file as Tasks, in file order.

    A ``DatasetDict`` folder yields every split, each row tagged ``meta["split"]`` with its split
    name (a ``split`` column, when present, wins). Raises ``TaskDataError`` for bad rows or an empty
    file, ``FileNotFoundError`` for a missing path.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"task file {path} does not exist")
    if path.is_dir():
        if not any((path / m).exists() for m in ("dataset_info.json", "dataset_dict.json", "state.json")):
            raise TaskDataError(f"{path} is a directory but not a datasets save_to_disk folder "
                                f"(no dataset_info.json or dataset_dict.json); supported: {', '.join(FORMATS)}")
        parts = list(_hf_parts(path))
    elif path.suffix == ".jsonl":
        parts = [(None, _jsonl_rows(path))]
    elif path.suffix == ".parquet":
        parts = [(None, _parquet_rows(path))]
    else:
        raise TaskDataError(f"{path}: unsupported format {path.suffix or '(no suffix)'!r}; "
                            f"supported: {', '.join(FORMATS)}")
    tasks = [row_to_task(row, path, row_no, part) for part, rows in parts for row_no, row in rows]
    if not tasks:
        raise TaskDataError(f"{path}: no rows found; {_FIELDS_HINT}, one row per task")
    check_math_golds(tasks, path)
    return tasks


def check_math_golds(tasks: list[Task], path: Path) -> None:
    """Parse every distinct gold answer of a ``math`` row once, now (reliability.md §4): a gold
    that Math-Verify cannot read would otherwise grade every sample of that prompt as wrong (or
    as an infrastructure error) for the whole run. Plain numbers skip the worker."""
    from reasonrl.rewards.math_verify_worker import get_default_verifier

    seen: dict[str, str | None] = {}
    for t in tasks:
        if t.verifier != "math":
            continue
        if t.answer not in seen:
            seen[t.answer] = get_default_verifier().check_gold(t.answer)
        why = seen[t.answer]
        if why:
            where = _where(path, t.meta.get("row", "?"), t.meta.get("split"))
            raise TaskDataError(f"{where}: gold answer {t.answer!r:.80} cannot be used for math verification "
                                f"({why}); fix the answer, or set this row's 'verifier' to 'exact' or 'qa'")


def check_prompt_lengths(tasks: Iterable[Task], render, tokenizer, context: int | None, max_new_tokens: int) -> None:
    """Every prompt, rendered, plus ``max_new_tokens`` must fit the model's context (``context``
    positions; ``None``: unknown, no check). Caught here, at load, a 10 MB prompt is one clear error
    instead of a many-GB attention allocation at the first evaluation. Only prompts whose UTF-8
    length could exceed the budget are tokenized (a token covers at least one byte)."""
    if not context:
        return
    budget = context - max_new_tokens
    for t in tasks:
        text = render(t)
        n_bytes = len(text.encode("utf-8", errors="replace"))
        if n_bytes + 8 <= budget:  # margin for special tokens the tokenizer adds
            continue
        # a prefix of 32 characters per allowed token settles a huge prompt without tokenizing it all
        cap = (max(budget, 0) + 1) * 32
        n_tok = len(tokenizer(text[:cap], add_special_tokens=True)["input_ids"])
        if n_tok <= budget and len(text) > cap:
            n_tok = len(tokenizer(text, add_special_tokens=True)["input_ids"])
        if n_tok <= budget:
            continue
        size = f"{n_tok} tokens" if len(text) <= cap else f"over {budget} tokens"
        src = t.meta.get("source")
        where = _where(Path(src), t.meta.get("row", "?"), t.meta.get("split")) if src else f"task {t.uid!r}"
        raise TaskDataError(
            f"{where}: the prompt is {size} ({len(text)} characters), but the model's context is {context} "
            f"positions and {max_new_tokens} are reserved for the response (rollout/eval max_new_tokens), leaving "
            f"{max(budget, 0)}; shorten or remove that row, or lower rollout.max_new_tokens / eval.max_new_tokens")


def check_run_prompts(cfg: Any, model: Any, tokenizer: Any, test_tasks: list[Task]) -> None:
    """:func:`check_prompt_lengths` for a run: the held-out problems and, when ``data.train`` is a
    file, all of its training rows (built-in streams are generated short)."""
    from reasonrl.tasks.templates import render_prompt

    context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if not isinstance(context, int) or context <= 0:
        return
    new_tokens = max(cfg.rollout.max_new_tokens, cfg.eval.max_new_tokens)

    def render(t: Task) -> str:
        return render_prompt(t, cfg.model.template, tokenizer)

    check_prompt_lengths(test_tasks, render, tokenizer, context, new_tokens)
    kind = cfg.data.train.partition(":")[0]
    if kind not in ("builtin", "reasoning_gym") and Path(cfg.data.train).expanduser().exists():
        from reasonrl.tasks import load_tasks

        check_prompt_lengths(load_tasks(cfg.data.train, None, split="train"), render, tokenizer, context, new_tokens)
