"""A local OpenLDAP + Dovecot + sshd on loopback, unprivileged: `mailstate lab` and the test fixtures."""

from mailstate.lab.lab import SERVICES, Lab

__all__ = ["SERVICES", "Lab"]
