"""Where requests go: the endpoint URL, the Host header and the request path.

The endpoint is the one given, else the one the AWS SDKs' environment
variables name (``AWS_ENDPOINT_URL_S3``, then ``AWS_ENDPOINT_URL``), else the
AWS endpoint of the region. The CRT connects to whatever the ``Host`` header
names, so addressing is ours: virtual-hosted style puts the bucket in the host
name, path style in the path. Directory buckets (``...--x-s3``) are addressed
as S3 Express wants: see :mod:`.express`.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import quote, urlencode, urlsplit

from .express import is_directory_bucket, zonal_host

log = logging.getLogger(__name__)

ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
"""The AWS SDKs' endpoint variables for S3, the service-specific one first."""
IGNORE_ENDPOINT_VARIABLE = "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"
"""Set to ``true``, the SDKs (and s3torch) ignore :data:`ENDPOINT_VARIABLES`."""

_REGION = re.compile(r"[a-z0-9]+(-[a-z0-9]+)+")
# Buckets that can be a DNS label under TLS: no dots (they break the wildcard
# certificate), no upper case or underscores.
_DNS_BUCKET = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")


@dataclass(frozen=True)
class Endpoint:
    """A parsed endpoint plus the addressing style chosen for it.

    ``aws_region`` is set when this is AWS's own endpoint of that region (no
    endpoint was given): directory buckets then go to their zonal endpoint.
    ``s3express`` off addresses directory bucket names as any other bucket.
    """

    scheme: str
    host: str
    port: int | None
    force_path_style: bool
    aws_region: str | None = None
    s3express: bool = True
    always_path_style: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        always = self.force_path_style or _is_ip_or_localhost(self.host)
        object.__setattr__(self, "always_path_style", always)

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" if self.port is not None else host

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.authority}"

    def path_style_for(self, bucket: str) -> bool:
        return self.always_path_style or not _DNS_BUCKET.fullmatch(bucket)

    @lru_cache(maxsize=256)  # noqa: B019 - endpoints live as long as their clients
    def addressing(self, bucket: str | None) -> tuple[str, str]:
        """``(Host header, path prefix)`` of requests to ``bucket`` (None: the service)."""
        if bucket is None:
            return self.authority, ""
        if self.s3express and is_directory_bucket(bucket):
            # As AWS's endpoint rules: virtual-hosted whatever force_path_style
            # says (zonal endpoints take no path-style requests), path style
            # only where there is no host name to put the bucket in.
            if self.aws_region is not None:
                return zonal_host(bucket, self.aws_region), ""
            if _is_ip_or_localhost(self.host):
                return self.authority, f"/{bucket}"
            return f"{bucket}.{self.authority}", ""
        if self.path_style_for(bucket):
            return self.authority, f"/{bucket}"
        return f"{bucket}.{self.authority}", ""

    def host_header(self, bucket: str | None) -> str:
        """The ``Host`` header (and connection target) for a request to ``bucket``."""
        return self.addressing(bucket)[0]

    def host_name(self, bucket: str | None) -> str:
        """The host name a request to ``bucket`` resolves (the ``Host`` header without its port)."""
        if bucket is not None and not self.path_style_for(bucket):
            return f"{bucket}.{self.host}"
        return self.host

    def path(self, bucket: str | None, key: str = "", query: dict[str, str] | None = None) -> str:
        """The request path: percent-encoded key, then the query string."""
        prefix = self.addressing(bucket)[1]
        path = f"{prefix}/{quote(key, safe='/~')}" if key or not prefix else prefix
        if query:
            path = f"{path}?{encode_query(query)}"
        return path


def encode_query(query: dict[str, str]) -> str:
    """Encode query parameters the way SigV4 expects them (RFC 3986, ``~`` unescaped)."""
    flags = [name for name, value in query.items() if value == ""]
    pairs = {name: value for name, value in query.items() if value != ""}
    encoded = urlencode(pairs, quote_via=quote, safe="~")
    bare = "&".join(quote(name, safe="~") for name in flags)
    return "&".join(part for part in (bare, encoded) if part)


def default_endpoint(region: str) -> str:
    """The public AWS endpoint of ``region``."""
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"https://s3.{region}.{suffix}"


def validate_region(region: str) -> None:
    if not isinstance(region, str) or not _REGION.fullmatch(region):
        raise ValueError(
            f"Invalid region {region!r}: expected an AWS region name such as 'us-east-1'"
        )


def configured_endpoint(environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """``(variable, URL)`` of the endpoint the environment names for S3, or None.

    As the AWS SDKs do: ``AWS_ENDPOINT_URL_S3`` first, then ``AWS_ENDPOINT_URL``;
    an empty value counts as unset, and ``AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true``
    turns both off. ``environ`` defaults to ``os.environ``.
    """
    env = os.environ if environ is None else environ
    if env.get(IGNORE_ENDPOINT_VARIABLE, "").strip().lower() == "true":
        return None
    for name in ENDPOINT_VARIABLES:
        value = env.get(name, "").strip()
        if value:
            return name, value
    return None


def resolve_endpoint(
    endpoint: str | None, region: str, force_path_style: bool, *, s3express: bool = True
) -> tuple[str | None, Endpoint]:
    """The endpoint a client uses: ``endpoint``, else the environment's, else AWS's.

    Returns the URL chosen (None: the AWS endpoint of ``region``), which is
    what a pickled client carries, and its parsed :class:`Endpoint`.

    Raises:
        ValueError: a malformed endpoint; the message quotes it and, when it
            came from the environment, names the variable.
    """
    if endpoint is not None:
        return endpoint, parse_endpoint(endpoint, region, force_path_style, s3express=s3express)
    configured = configured_endpoint()
    if configured is None:
        return None, parse_endpoint(None, region, force_path_style, s3express=s3express)
    variable, url = configured
    parsed = parse_endpoint(
        url, region, force_path_style, source=f"${variable}", s3express=s3express
    )
    log.debug("endpoint %s from $%s", parsed.url, variable)
    return url, parsed


def parse_endpoint(
    endpoint: str | None,
    region: str,
    force_path_style: bool,
    *,
    source: str | None = None,
    s3express: bool = True,
) -> Endpoint:
    """Parse ``endpoint`` (default: the AWS endpoint of ``region``).

    ``source`` (such as ``"$AWS_ENDPOINT_URL"``) says where the URL came from,
    for the error message; ``s3express`` is :attr:`S3ClientConfig.enable_s3express`.

    Raises:
        ValueError: the endpoint is not an ``http://`` or ``https://`` URL with a
            host, an optional port and nothing else. The message quotes it.
    """
    url = default_endpoint(region) if endpoint is None else endpoint
    where = f" (from {source})" if source else ""
    if not isinstance(url, str) or not url.strip():
        raise ValueError(
            f"Invalid endpoint {endpoint!r}{where}: expected a URL such as 'http://127.0.0.1:9000'"
        )
    invalid = f"Invalid endpoint {url!r}{where}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise ValueError(f"{invalid}: {error}") from error
    if parts.scheme not in ("http", "https"):
        raise ValueError(
            f"{invalid}: the scheme must be 'http' or 'https' (for example 'http://127.0.0.1:9000')"
        )
    if not parts.hostname:
        raise ValueError(f"{invalid}: no host name")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{invalid}: credentials do not belong in the URL")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(
            f"{invalid}: only scheme, host and port are allowed, no path, query or fragment"
        )
    if port == 0:
        raise ValueError(f"{invalid}: port 0 is not a usable port")
    return Endpoint(
        scheme=parts.scheme,
        host=parts.hostname,
        port=port,
        force_path_style=force_path_style,
        aws_region=region if endpoint is None else None,
        s3express=s3express,
    )


def _is_ip_or_localhost(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
