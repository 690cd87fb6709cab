"""The lab's iRedMail layout (`mailstate lab up --layout iredmail`, docs/iredmail.md): iRedMail's schema
(our restatement, iredmail.schema), tree, accounts and LDAP filters, built from
`mailstate.serverconfig.iredmail` the way the default lab is built from server-config's output."""
