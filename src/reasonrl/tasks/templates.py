"""Turn a Task into the exact prompt text a model sees.

``plain`` suits the tiny from-scratch model (it was trained on prompt + newline + worked solution);
``boxed`` and ``chat`` ask a pretrained model for the ``\\boxed{}`` answer the verifiers extract, and add
the task's ``meta["instruction"]`` when it has one: a convention the problem text does not state (the
built-in arith family is evaluated left to right) which the tiny model learned from its demonstrations
but a pretrained model cannot guess.
"""

from __future__ import annotations

from reasonrl.tasks.base import Task

BOXED_SUFFIX = " Please reason step by step, and put your final answer within \\boxed{}."
TEMPLATES = ("plain", "boxed", "chat")


def render_prompt(task: Task, template: str, tokenizer=None) -> str:
    """The prompt string for ``task`` under ``template`` (one of ``TEMPLATES``).

    ``chat`` needs a tokenizer with a chat template; it renders the boxed instruction as one user
    turn with the generation prompt appended, or a dataset's own chat messages (``meta["messages"]``,
    from veRL/TRL rows) unchanged, since those prompts carry their own answer instruction.
    """
    if template == "plain":
        return task.prompt + "\n"
    rule = task.meta.get("instruction")
    question = f"{task.prompt} {rule}" if rule else task.prompt
    if template == "boxed":
        return question + BOXED_SUFFIX
    if template == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            what = "no tokenizer was given" if tokenizer is None else "the tokenizer has no chat_template"
            raise ValueError(f"template 'chat' needs a tokenizer with a chat template, but {what}; "
                             f"use template 'boxed' for base models or 'plain' for the tiny model")
        msgs = task.meta.get("messages")  # a veRL/TRL chat prompt: rendered exactly as the dataset wrote it
        if not msgs:
            msgs = [{"role": "user", "content": question + BOXED_SUFFIX}]
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    raise ValueError(f"unknown template {template!r}; valid: {', '.join(TEMPLATES)}")
