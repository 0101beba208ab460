"""Errors that carry one sentence for the user, not a stack trace."""


class UserError(Exception):
    """Bad input: the message says what was wrong and what would be right."""


class ConfigError(UserError):
    pass


class DataError(UserError):
    pass


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def require_choice(kind: str, name: str, registry) -> None:
    if name not in registry:
        raise ConfigError(registry.unknown_message(name))
