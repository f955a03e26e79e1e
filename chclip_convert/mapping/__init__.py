"""The mapping and what derives from it: the name table, its reversible ops, the architecture read off the
weights, and the key-by-key report. Pure data and torch; imports no other part of the package."""
