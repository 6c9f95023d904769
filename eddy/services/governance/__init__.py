"""Governance reports: everything an auditor asks about one model version."""
