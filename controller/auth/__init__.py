"""API tokens: their format, how their secrets are hashed and checked, and the roles.
The API applies them (`controller/api/auth.py`); tokens are kept by
`controller/services/tokens.py`."""
