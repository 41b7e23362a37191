"""One thin module per external program: argv in, a typed result or a named error out.

No policy and no state here: what to do when a call fails, what to count or save, lives
in the modules that use these (`iscsi/`, `nfs/`, `sftp/`, `images/`, the commands).
Every call goes through the injected executor, with a timeout.
"""
