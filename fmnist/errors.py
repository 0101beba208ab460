"""Errors that carry one sentence for the user, not a stack trace."""


class UserError(Exception):
    """Bad input: the message says what was wrong and what would be right."""


class ConfigError(UserError):
    pass


class DataError(UserError):
    pass


class NoSpace(UserError):
    """A disk ran full (the store's, the checkpoints'): nothing about the job is wrong, so its checkpoint is kept."""


def no_space(err: BaseException) -> bool:
    """Whether a failure is a disk (or quota) that ran full, whatever library reports it."""
    text = str(err).lower()
    return getattr(err, "errno", None) in (28, 122) or "no space left" in text or "disk is full" in text or "quota exceeded" in text


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def require_choice(kind: str, name: str, registry) -> None:
    if name not in registry:
        raise ConfigError(registry.unknown_message(name))
