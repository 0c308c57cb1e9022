"""Refuse to open a cloud store that has no credentials, and say which ones are missing.

obstore reads credentials from the environment itself. When it finds none it falls back
to the cloud's instance-metadata address, which outside that cloud hangs for seconds and
then fails with an error that names nothing useful. So before a store is built, this
module checks that at least one credential source is configured, in keyword options or
in the usual environment variables, and otherwise raises a
:class:`~osqueue_io.storage.errors.StorageConfigError` that lists them.

On a cloud machine whose credentials really do come from the metadata service (an EC2
instance role, a GCE service account, an Azure managed identity), opt in with
``instance_credentials=True`` or ``OSQUEUE_INSTANCE_CREDENTIALS=true``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from osqueue_io.storage.errors import StorageConfigError

#: Environment variable that allows falling back to the cloud's metadata service.
INSTANCE_CREDENTIALS_ENV = "OSQUEUE_INSTANCE_CREDENTIALS"

_TRUE = {"1", "true", "yes", "on"}

# (option name, environment variables obstore reads for it), for each source that is
# enough on its own to authenticate.
_S3_SOURCES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("skip_signature", ("AWS_SKIP_SIGNATURE",)),
    ("web_identity_token_file", ("AWS_WEB_IDENTITY_TOKEN_FILE",)),
    ("container_credentials_relative_uri", ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",)),
    ("container_credentials_full_uri", ("AWS_CONTAINER_CREDENTIALS_FULL_URI",)),
    ("metadata_endpoint", ("AWS_METADATA_ENDPOINT",)),
)
_GCS_SOURCES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("service_account", ("GOOGLE_SERVICE_ACCOUNT", "GOOGLE_SERVICE_ACCOUNT_PATH")),
    ("service_account_key", ("GOOGLE_SERVICE_ACCOUNT_KEY",)),
    ("application_credentials", ("GOOGLE_APPLICATION_CREDENTIALS",)),
    ("bearer_token", ("GOOGLE_BEARER_TOKEN",)),
    ("skip_signature", ("GOOGLE_SKIP_SIGNATURE",)),
)
_AZURE_SOURCES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "account_key",
        ("AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_ACCESS_KEY", "AZURE_STORAGE_MASTER_KEY"),
    ),
    ("sas_key", ("AZURE_STORAGE_SAS_KEY", "AZURE_STORAGE_SAS_TOKEN")),
    ("token", ("AZURE_STORAGE_TOKEN",)),
    ("client_secret", ("AZURE_STORAGE_CLIENT_SECRET", "AZURE_CLIENT_SECRET")),
    ("federated_token_file", ("AZURE_FEDERATED_TOKEN_FILE",)),
    ("use_azure_cli", ("AZURE_USE_AZURE_CLI",)),
    ("use_emulator", ("AZURE_STORAGE_USE_EMULATOR",)),
    ("skip_signature", ("AZURE_SKIP_SIGNATURE",)),
    ("msi_endpoint", ("AZURE_MSI_ENDPOINT", "AZURE_IDENTITY_ENDPOINT")),
)
# gcloud's application-default credentials, which obstore also reads.
_GCLOUD_ADC = Path("~/.config/gcloud/application_default_credentials.json")


def setting(
    options: Mapping[str, object],
    name: str,
    env_names: tuple[str, ...],
    environ: Mapping[str, str],
) -> object | None:
    """The value of a setting: the keyword option wins over the first environment variable
    set (obstore's own order). Empty strings count as unset."""
    value = options.get(name)
    if value is not None and value != "":
        return value
    for env_name in env_names:
        if environ.get(env_name):
            return environ[env_name]
    return None


def _enabled(value: object | None) -> bool:
    """A configured value counts unless it is an explicit false."""
    if value is None or value is False:
        return False
    return not (isinstance(value, str) and value.strip().lower() in {"0", "false", "no", "off"})


def _any_source(
    options: Mapping[str, object],
    sources: tuple[tuple[str, tuple[str, ...]], ...],
    environ: Mapping[str, str],
) -> bool:
    return any(_enabled(setting(options, name, env, environ)) for name, env in sources)


def instance_credentials_allowed(
    options: Mapping[str, object], environ: Mapping[str, str] | None = None
) -> bool:
    """True if the user opted in to the cloud's metadata service as a credential source."""
    environ = os.environ if environ is None else environ
    value = options.get("instance_credentials")
    if value is not None:
        return bool(value)
    return environ.get(INSTANCE_CREDENTIALS_ENV, "").strip().lower() in _TRUE


def _opt_in_hint() -> str:
    return (
        f"on a cloud machine with an instance role, pass instance_credentials=True or set "
        f"{INSTANCE_CREDENTIALS_ENV}=true"
    )


def check_s3(url: str, options: Mapping[str, object], environ: Mapping[str, str]) -> None:
    """Raise :class:`StorageConfigError` unless some S3 credential source is configured."""
    access_key = setting(options, "access_key_id", ("AWS_ACCESS_KEY_ID",), environ)
    if access_key is not None:
        secret = setting(options, "secret_access_key", ("AWS_SECRET_ACCESS_KEY",), environ)
        if secret is None:
            raise StorageConfigError(
                f"{url}: an access key id is set but no secret: set AWS_SECRET_ACCESS_KEY "
                "(or pass secret_access_key=...)"
            )
        return
    if "credential_provider" in options or _any_source(options, _S3_SOURCES, environ):
        return
    if instance_credentials_allowed(options, environ):
        return
    raise StorageConfigError(
        f"no credentials for {url}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or pass "
        "access_key_id=... and secret_access_key=...), or AWS_WEB_IDENTITY_TOKEN_FILE, or "
        "AWS_SKIP_SIGNATURE=true for a public bucket; " + _opt_in_hint()
    )


def check_gcs(url: str, options: Mapping[str, object], environ: Mapping[str, str]) -> None:
    """Raise :class:`StorageConfigError` unless some GCS credential source is configured."""
    if "credential_provider" in options or _any_source(options, _GCS_SOURCES, environ):
        return
    if _GCLOUD_ADC.expanduser().is_file() or instance_credentials_allowed(options, environ):
        return
    raise StorageConfigError(
        f"no credentials for {url}: set GOOGLE_SERVICE_ACCOUNT (a service-account JSON file) "
        "or GOOGLE_APPLICATION_CREDENTIALS, or GOOGLE_SERVICE_ACCOUNT_KEY (the JSON itself), "
        "or pass service_account=... or bearer_token=..., or run `gcloud auth "
        "application-default login`; " + _opt_in_hint()
    )


def check_azure(url: str, options: Mapping[str, object], environ: Mapping[str, str]) -> None:
    """Raise :class:`StorageConfigError` unless an Azure account and credential are set."""
    emulator = _enabled(setting(options, "use_emulator", ("AZURE_STORAGE_USE_EMULATOR",), environ))
    account = setting(options, "account_name", ("AZURE_STORAGE_ACCOUNT_NAME",), environ)
    if account is None and not emulator:
        raise StorageConfigError(
            f"no storage account for {url}: set AZURE_STORAGE_ACCOUNT_NAME (or pass "
            "account_name=...), or AZURE_STORAGE_USE_EMULATOR=true for azurite"
        )
    if "credential_provider" in options or _any_source(options, _AZURE_SOURCES, environ):
        return
    if instance_credentials_allowed(options, environ):
        return
    raise StorageConfigError(
        f"no credentials for {url}: set AZURE_STORAGE_ACCOUNT_KEY, or AZURE_STORAGE_SAS_KEY, "
        "or AZURE_STORAGE_TOKEN, or AZURE_CLIENT_ID/AZURE_CLIENT_SECRET/AZURE_TENANT_ID, or "
        "AZURE_USE_AZURE_CLI=true (or pass the matching option: account_key=..., "
        "sas_key=..., ...); " + _opt_in_hint()
    )
