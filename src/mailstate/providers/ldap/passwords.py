"""The initial passwords (generation, the operator's 0600 file) moved to ``mailstate.model.passwords``, shared
by every provider that creates people (ldap, iredmail); kept importable here."""

from mailstate.model.passwords import *  # noqa: F403
from mailstate.model.passwords import append_password, generate_password

__all__ = ["append_password", "generate_password"]
