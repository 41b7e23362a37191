"""The controller-agent protocol: the envelope every command travels in, and each
command's declaration with its payload and result models, one module per concern.

`POST /v1/commands/<name>` takes a `CommandEnvelope`; the agent answers `200` with a
finished `TaskInfo` or `202` with a running one; `GET /v1/tasks/<id>?wait=N` long-polls,
`DELETE /v1/tasks/<id>` cancels. The task id is the idempotency key.
"""

# Importing every concern module declares every command, whichever module a caller
# imports first.
from shared.protocol import (  # noqa: F401
    files,
    host,
    iscsi,
    libvirt,
    nfs,
    objects,
    s3,
    sftp,
    volumes,
)
