"""Local S3 servers and test proxies for s3torch development (not published)."""

from ._service import Service, stop_running
from .faults import Fault, FaultKind, RequestKind
from .latency import LatencyProxy
from .moto_server import ACCESS_KEY, REGION, SECRET_KEY, MotoServer
from .proxy import FaultProxy, SeenRequest
from .ranks import end_rank
from .seaweedfs import SeaweedFSServer
from .signals import ENDING_SIGNALS, end_process, stop_on_signals

__all__ = [
    "ACCESS_KEY",
    "ENDING_SIGNALS",
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
    "Service",
    "end_process",
    "end_rank",
    "stop_on_signals",
    "stop_running",
]
