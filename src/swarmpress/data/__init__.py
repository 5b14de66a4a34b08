"""The data layer: collect, store, query and pack the text that feeds training."""
