"""A reward function the kill-and-resume tests name by import path (``kill_resume_rewards:char_reward``), as a user
names their own in a recipe."""


def char_reward(prompts, completions, **kwargs):
    """Deterministic and content-dependent, so that random completions get different rewards."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [float(sum(map(ord, t)) % 7) for t in texts]


NOT_A_FUNCTION = 42  # for the bad-path test: a name that is not callable
