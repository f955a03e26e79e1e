"""Figures for the notebooks: matplotlib helpers that take ``ax`` first and return their artists."""
