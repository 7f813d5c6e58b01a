"""tablesync: Business Central ↔ Dataverse table synchronisation on Kafka and PostgreSQL."""

__version__ = "0.1.0"
__all__ = ["__version__"]
