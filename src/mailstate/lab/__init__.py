"""A local OpenLDAP + Dovecot + sshd on loopback, unprivileged: `mailstate lab` and the test fixtures."""
