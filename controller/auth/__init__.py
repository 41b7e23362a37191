"""API tokens: their format, how their secrets are hashed and checked, and the roles.
The API applies them (`controller/api/auth.py`); tokens are kept by
`controller/services/tokens.py`. And the CA of the agent channel (`agentca.py`), which
issues the controller's client certificate and each agent's server certificate; the
channel itself is `controller/agentchannel.py`, enrolment `services/enrolment.py`."""
