"""Storage settings: checked once in the clear, stored with credentials sealed, parsed
from the row whenever a plugin needs them, shown without credentials."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from controller.plugins.s3.provider import S3Config
from controller.plugins.sftp.provider import SftpConfig
from tests.unit.controller.fakes import S3_CONFIG, SECRETS, SFTP_CONFIG


def test_credentials_are_sealed_and_hidden() -> None:
    assert SftpConfig.secret_fields() == {"private_key"}
    assert S3Config.secret_fields() == {"secret_key"}
    stored = S3Config.model_validate(S3_CONFIG).sealed(SECRETS)
    assert SECRETS.open(stored["secret_key"]) == S3_CONFIG["secret_key"]
    assert S3Config.public(stored) == {k: v for k, v in stored.items() if k != "secret_key"}
    assert SftpConfig.public(SftpConfig.model_validate(SFTP_CONFIG).sealed(SECRETS)).keys() == {
        "host", "port", "username", "path", "host_key"}


def test_sealed_text_is_parsed_beyond_the_clear_limits() -> None:
    stored = S3Config.model_validate(S3_CONFIG).sealed(SECRETS)
    assert len(stored["secret_key"]) > 256
    config = S3Config.from_row(stored)
    assert SECRETS.open(config.secret_key) == S3_CONFIG["secret_key"]
    with pytest.raises(ValidationError, match="at most 256 characters"):
        S3Config.model_validate({**S3_CONFIG, "secret_key": stored["secret_key"]})
    with pytest.raises(ValidationError, match="at least 1 character"):
        SftpConfig.model_validate({**SFTP_CONFIG, "private_key": ""})
    with pytest.raises(ValidationError):
        S3Config.from_row({**stored, "bucket": "Not A Bucket"})
