"""Provenance: what each step records (records), the code state (code_state), the graph from
a score back to its data (graph), the audit and inspect commands."""
