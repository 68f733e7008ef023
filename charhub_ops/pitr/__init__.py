"""Point-in-time recovery with pgBackRest (continuous WAL archiving + physical backups)."""
