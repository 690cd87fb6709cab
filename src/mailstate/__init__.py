"""mailstate: an agency's official e-mail as desired state in TOML, reconciled onto OpenLDAP + Dovecot."""

__version__ = "0.1.0"
