"""Local S3 servers and test proxies for s3torch development (not published)."""

from .faults import Fault, FaultKind, RequestKind
from .latency import LatencyProxy
from .moto_server import ACCESS_KEY, REGION, SECRET_KEY, MotoServer
from .proxy import FaultProxy, SeenRequest
from .seaweedfs import SeaweedFSServer

__all__ = [
    "ACCESS_KEY",
    "REGION",
    "SECRET_KEY",
    "Fault",
    "FaultKind",
    "FaultProxy",
    "LatencyProxy",
    "MotoServer",
    "RequestKind",
    "SeaweedFSServer",
    "SeenRequest",
]
