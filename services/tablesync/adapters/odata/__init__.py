"""Business Central API v2.0 and Dataverse Web API v9.2 connectors (``SideApi``).

``open_api(side, settings)`` gives a ready connector; ``stats`` on it counts its traffic.
"""

from tablesync.adapters.odata.auth import ClientCredentials, StaticToken, TokenSource
from tablesync.adapters.odata.bc import BcApi
from tablesync.adapters.odata.dataverse import DataverseApi
from tablesync.adapters.odata.entities import EntitySpec, SpecSource, default_spec
from tablesync.adapters.odata.factory import CountingSideApi, open_api
from tablesync.adapters.odata.http import ODataHttp
from tablesync.adapters.odata.retry import RetryPolicy
from tablesync.adapters.odata.stats import ApiStats

__all__ = [
    "ApiStats",
    "BcApi",
    "ClientCredentials",
    "CountingSideApi",
    "DataverseApi",
    "EntitySpec",
    "ODataHttp",
    "RetryPolicy",
    "SpecSource",
    "StaticToken",
    "TokenSource",
    "default_spec",
    "open_api",
]
