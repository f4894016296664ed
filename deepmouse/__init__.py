"""deepmouse: benchmark deep vision models against mouse visual cortex.

``deepmouse.score_regression``, ``deepmouse.score_rsa`` and ``deepmouse.score_cka`` score a user's own feature
and response arrays with the pipeline's code (see :mod:`deepmouse.scoring.api`).
"""


def __getattr__(name: str):
    # The scoring API pulls in torch; import it only when it is asked for.
    if name in ("score_regression", "score_rsa", "score_cka"):
        from deepmouse.scoring import api

        return getattr(api, name)
    raise AttributeError(f"module 'deepmouse' has no attribute {name!r}")
