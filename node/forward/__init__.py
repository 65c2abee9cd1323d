"""Forward: C-STORE the clean instances to the research PACS; delete only on success."""
