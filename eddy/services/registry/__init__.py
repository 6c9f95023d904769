"""The model registry: versions, aliases, lineage, and its announcements to the running system."""
