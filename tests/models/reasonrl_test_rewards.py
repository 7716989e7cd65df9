"""A dense reward for SSM training tests: an untrained policy gets mixed rewards, so GRPO has signal."""


def digit_count(prompt: str, response: str, answer: str, meta: dict) -> float:
    return float(sum(ch.isdigit() for ch in response))
